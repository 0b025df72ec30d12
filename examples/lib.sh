# Sourced by every GPU launch script (train_single_node.sh, train_multinode.sh,
# slurm/train.sbatch, recipes/recipe.sh).

# PyTorch's CUDA allocator with expandable segments: activations of changing sizes
# (micro-batches, pipeline stages, evaluation) fragment fixed segments, and a 12B job
# near the memory limit then fails with free-but-fragmented memory. A value already set
# is kept (and torch >= 2.9 reads PYTORCH_ALLOC_CONF first when that is set).
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

# `--dry-run` anywhere in the arguments prints the resolved config, the layout for the
# job's world size and the memory estimate per GPU, without launching ranks.
# Usage: dry_run_or_continue WORLD_SIZE "$@"  (exits after a dry run)
dry_run_or_continue() {
  local world=$1; shift
  for arg in "$@"; do
    if [ "$arg" = "--dry-run" ]; then
      exec "${PYTHON:-python}" -m megatron_lang.train --world-size "$world" "$@"
    fi
  done
}

# Usage: srun_ranks PROGRAM ARGS...  one task per GPU under srun, with the job's CPUs:
#   --cpus-per-task: Slurm 22.05-23.02 do not pass the job's --cpus-per-task on to srun,
#     which then pins every rank (and its data and checkpoint threads) to one CPU;
#   --kill-on-bad-exit: one failed rank ends the job instead of leaving the others in a
#     collective until the time limit.
srun_ranks() {
  srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" "$@"
}

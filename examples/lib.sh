# Shared by the launch scripts: `--dry-run` anywhere in the arguments prints the
# resolved config and the layout for the job's world size, without launching ranks.
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

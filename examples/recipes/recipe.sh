# Shared by the recipe SLURM scripts in this folder (sourced, not run).
# run_recipe CONFIG DEFAULT_NODES "$@":
#   --dry-run anywhere in the arguments: print the resolved job for SLURM_NNODES (default
#   DEFAULT_NODES) x GPUS_PER_NODE ranks, checked as on CUDA nodes with TransformerEngine
#   (--assume-cuda-te), and exit without starting ranks (examples/lib.sh);
#   otherwise: one srun task per GPU, from the repository root (relative paths in the
#   recipes resolve there). model.checkpoint=<converted base model> is required.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

run_recipe() {
  local config=$1 nodes=${SLURM_NNODES:-$2}
  shift 2
  : "${GPUS_PER_NODE:=8}"
  export CUDA_DEVICE_MAX_CONNECTIONS=1
  export MASTER_PORT=${MASTER_PORT:-29500}
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  dry_run_or_continue "$((nodes * GPUS_PER_NODE))" --config "$config" --assume-cuda-te "$@"
  case " $* " in
    *" model.checkpoint="*) ;;
    *)
      echo "error: pass model.checkpoint=<converted base model> (see the header of $config)" >&2
      exit 2
      ;;
  esac
  srun_ranks "${PYTHON:-python}" -m megatron_lang.train --config "$config" "$@"
}

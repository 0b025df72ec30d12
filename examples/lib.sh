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

#!/usr/bin/env bash
# One node, one process per GPU (torchrun --standalone).
#   CONFIG=examples/configs/llama3_8b_danish.yaml GPUS_PER_NODE=8 \
#     examples/train_single_node.sh model.checkpoint=/ckpt/llama3-8b-mcore [overrides...]
# Add --dry-run to print the resolved config and layout without starting anything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
: "${CONFIG:=$here/configs/llama3_8b_danish.yaml}"
: "${GPUS_PER_NODE:=8}"
export CUDA_DEVICE_MAX_CONNECTIONS=1  # ordering of TP communication and compute
dry_run_or_continue "$GPUS_PER_NODE" --config "$CONFIG" "$@"
exec torchrun --standalone --nproc-per-node "$GPUS_PER_NODE" \
  -m megatron_lang.train --config "$CONFIG" "$@"

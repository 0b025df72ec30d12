#!/usr/bin/env bash
# Several nodes with torchrun: run this script once on every node.
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node001 MASTER_PORT=29500 GPUS_PER_NODE=8 \
#   CONFIG=examples/configs/llama3_8b_danish.yaml \
#     examples/train_multinode.sh model.checkpoint=/ckpt/llama3-8b-mcore
# Add --dry-run to check the layout against NNODES x GPUS_PER_NODE ranks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
: "${CONFIG:=$here/configs/llama3_8b_danish.yaml}"
: "${NNODES:?set NNODES}" "${NODE_RANK:=0}" "${MASTER_ADDR:?set MASTER_ADDR}"
: "${MASTER_PORT:=29500}" "${GPUS_PER_NODE:=8}"
export CUDA_DEVICE_MAX_CONNECTIONS=1
dry_run_or_continue "$((NNODES * GPUS_PER_NODE))" --config "$CONFIG" "$@"
exec torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$GPUS_PER_NODE" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  -m megatron_lang.train --config "$CONFIG" "$@"

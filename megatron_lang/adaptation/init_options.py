"""Command-line options for new-token init (``--embed-init``, ``--focus-*``), shared by the CLIs.

``tools/convert_hf/hf_to_megatron.py`` and ``tools/convert_hf/remap_vocab.py`` add
them with :func:`add_embed_init_args` and turn them into an init with
:func:`build_embed_init`.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

INIT_CHOICES = ("mean", "random", "focus")


def add_embed_init_args(p: argparse.ArgumentParser) -> None:
    """Add ``--embed-init``, ``--init-seed`` and the ``--focus-*`` options to ``p``."""
    p.add_argument(
        "--embed-init",
        default="mean",
        choices=INIT_CHOICES,
        help="rows of new tokens: mean of their old sub-token rows | random (normal with the "
        "old rows' per-dimension mean/std) | focus (FOCUS weighted mean of overlapping "
        "tokens; needs --focus-corpus). Default mean",
    )
    p.add_argument("--init-seed", type=int, default=0, help="seed of --embed-init random")
    p.add_argument(
        "--output-shrink",
        type=float,
        default=0.75,
        help="pull new rows of the LM head (and of tied embeddings) toward the mean row by "
        "this factor, so new tokens take little probability from old ones on text they do "
        "not occur in (1 = rows as --embed-init gives them; default 0.75)",
    )
    g = p.add_argument_group("FOCUS (--embed-init focus)")
    g.add_argument("--focus-corpus", nargs="+", help="target-language JSONL file(s) or folder(s)")
    g.add_argument("--focus-text-key", default="text", help="JSON key of the text (default text)")
    g.add_argument("--focus-max-docs", type=int, help="read at most this many documents")
    g.add_argument("--focus-dim", type=int, default=50, help="fastText dimension (default 50)")
    g.add_argument("--focus-epochs", type=int, default=5, help="fastText epochs (default 5)")
    g.add_argument(
        "--focus-min-count", type=int, default=3, help="min occurrences for a vector (default 3)"
    )
    g.add_argument(
        "--focus-fallback",
        default="mean",
        choices=("mean", "random"),
        help="init of new tokens without a vector (default mean)",
    )


def build_embed_init(args: argparse.Namespace) -> Any:
    """The init callable / name the parsed arguments ask for.

    Raises:
        ValueError: ``focus`` without ``--focus-corpus``, or FOCUS options without ``focus``.
    """
    if args.embed_init == "focus":
        from megatron_lang.adaptation.focus import FocusInit, FocusOptions

        if not args.focus_corpus:
            raise ValueError("--embed-init focus needs --focus-corpus FILE.jsonl")
        return FocusInit(
            FocusOptions(
                corpus=list(args.focus_corpus),
                text_key=args.focus_text_key,
                max_documents=args.focus_max_docs,
                dim=args.focus_dim,
                epochs=args.focus_epochs,
                min_count=args.focus_min_count,
                fallback=args.focus_fallback,
                seed=args.init_seed,
            )
        )
    if args.focus_corpus:
        raise ValueError("--focus-corpus is only used with --embed-init focus")
    if args.embed_init == "random" and args.init_seed:
        from megatron_lang.conversion.vocab import random_init

        fn = functools.partial(random_init, seed=args.init_seed)
        fn.__name__ = "random_init"  # type: ignore[attr-defined]
        return fn
    return args.embed_init

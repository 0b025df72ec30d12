"""Continued pretraining on megatron-core: the training entry point.

Run one process per GPU (torchrun or srun); see examples/ for launch scripts.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  # CPU, 2 ranks on gloo, tiny model (what examples/cpu_quickstart.sh does)
  torchrun --nproc-per-node 2 -m megatron_lang.train --config examples/configs/cpu_tiny.yaml

  # print the resolved config and the layout for 2 nodes x 8 GPUs, then exit
  python -m megatron_lang.train --config examples/configs/llama3_8b_cpt.yaml --dry-run \\
      --world-size 16 parallel.tensor_parallel=2 data.global_batch_size=512

  # a full-scale recipe, also checked as on CUDA nodes with TransformerEngine (FP8, LoRA)
  python -m megatron_lang.train --config examples/recipes/normistral_11b.yaml --dry-run \\
      --world-size 64 --assume-cuda-te

  # override any field with a.b.c=value
  torchrun ... -m megatron_lang.train --config job.yaml optimizer.lr=1e-4 train.steps=2000
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m megatron_lang.train",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="job YAML (fields: docs/training.md)")
    p.add_argument("--dry-run", action="store_true", help="print config and layout, then exit")
    p.add_argument(
        "--world-size",
        type=int,
        help="ranks to validate the layout against in --dry-run "
        "(default: WORLD_SIZE / SLURM_NTASKS, else 1)",
    )
    p.add_argument(
        "--assume-cuda-te",
        action="store_true",
        help="with --dry-run: also run the start-up checks as on a CUDA node with "
        "TransformerEngine (e.g. FP8 with model.transformer_engine=false, LoRA with the TE "
        "spec) and print the layer spec the job gets there",
    )
    p.add_argument("overrides", nargs="*", help="a.b.c=value overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; dry-run or train. Returns the exit code."""
    from megatron_lang.config import ConfigError, load_job_config
    from megatron_lang.platform.parallel import ParallelConfigError
    from megatron_lang.training.build import StartupError
    from megatron_lang.training.job import describe, run, world_size_from_env

    args = build_parser().parse_args(argv)
    try:
        cfg = load_job_config(args.config, args.overrides)
        if args.dry_run:
            world = args.world_size or world_size_from_env()
            print(describe(cfg, world, assume_cuda_te=args.assume_cuda_te))
            return 0
    except (ConfigError, StartupError, ParallelConfigError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())

"""Token budgets and H100-hour estimates of the full-scale recipes in examples/recipes/.

Reads each recipe's job YAML with the project's config loader (stages resolved as
the trainer resolves them) and its SLURM script's ``#SBATCH --nodes`` /
``--gpus-per-node``, then prints, per stage:

* tokens = steps x global batch x sequence length;
* FLOPs per token from Megatron's formula (:mod:`megatron_lang.training.flops`):
  ``3 x`` the forward pass when everything trains (``4 x`` the layers with full
  recomputation; selective recomputation is not counted, as in Megatron's MFU).
  Stages that freeze the transformer layers do no weight-gradient GEMMs there:
  ``2 x`` the layers (forward + data gradients), ``3 x`` the logits when the LM head
  trains (else ``2 x``), plus ``3 x`` the LoRA adapters' own forward FLOPs;
* per-GPU throughput = assumed MFU x dense peak / FLOPs per token, with the peak the
  trainer's MFU metric uses (FP8 peak for ``model.fp8`` jobs, else BF16);
* H100-hours = tokens x FLOPs per token / (MFU x peak) / 3600, and the wall-clock
  time on the script's GPU count.

The MFU figures are assumptions (below, with reasons), not measurements: nothing
here ran on an H100. Override them with ``--mfu NAME=VALUE``.

    python bench/recipe_budget.py [--markdown] [--mfu normistral=0.25]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEVICE = "NVIDIA H100 80GB HBM3"


@dataclass(frozen=True)
class Recipe:
    """A recipe: its files and the MFU assumed for it."""

    name: str
    """Short name (``--mfu`` key)."""
    config: str
    """Job YAML, relative to the repository."""
    sbatch: str
    """SLURM script, relative to the repository (nodes, GPUs per node)."""
    mfu: float
    """Assumed model FLOPs utilisation against the peak of the job's precision."""
    why: str
    """Why that MFU."""
    alt_nodes: tuple[int, ...] = ()
    """Other node counts to print the wall-clock time for."""


RECIPES = (
    Recipe(
        "snakmodel",
        "examples/recipes/snakmodel_7b.yaml",
        "examples/recipes/snakmodel_7b.sbatch",
        0.40,
        "BF16, TransformerEngine spec with flash attention, TP=1: 40% of the BF16 peak, "
        "a typical figure for dense 7-8B Megatron training on H100",
    ),
    Recipe(
        "normistral",
        "examples/recipes/normistral_11b.yaml",
        "examples/recipes/normistral_11b.sbatch",
        0.26,
        "FP8 (hybrid, delayed scaling) TE linears: 26% of the FP8 peak = 52% of the BF16 "
        "peak, i.e. FP8 taken as ~1.3x the 40% BF16 baseline; causal and MNTP samples both "
        "go through TE's flash attention on packed sequences (THD), so no non-flash penalty",
        alt_nodes=(16,),
    ),
    Recipe(
        "curie",
        "examples/recipes/curie_7b.yaml",
        "examples/recipes/curie_7b.sbatch",
        0.30,
        "BF16 on the local layer spec (LoRA refuses the TE spec): unfused norms, non-flash "
        "attention and small adapter GEMMs; 30% of the BF16 peak",
    ),
    Recipe(
        "snakmodel-sft",
        "examples/recipes/snakmodel_7b_sft.yaml",
        "examples/recipes/snakmodel_7b_sft.sbatch",
        0.30,
        "BF16 on the local layer spec (LoRA) with PyTorch's varlen flash attention on the "
        "packed conversations: as Curie, 30% of the BF16 peak; steps are the recipe's "
        "estimate until the chat data exists (train.epochs: 1 counts them then)",
    ),
)


@dataclass(frozen=True)
class StageBudget:
    """One stage's arithmetic."""

    recipe: str
    stage: str
    steps: int
    global_batch: int
    seq_length: int
    flops_per_token: float
    formula: str
    peak_tflops: float
    mfu: float
    gpus: int

    @property
    def tokens(self) -> int:
        return self.steps * self.global_batch * self.seq_length

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.mfu * self.peak_tflops * 1e12 / self.flops_per_token

    @property
    def gpu_hours(self) -> float:
        return self.tokens / self.tokens_per_s_per_gpu / 3600

    def wall_hours(self, gpus: int | None = None) -> float:
        return self.gpu_hours / (gpus or self.gpus)


def sbatch_gpus(path: Path) -> tuple[int, int]:
    """(nodes, GPUs per node) from a script's ``#SBATCH`` lines."""
    text = path.read_text()
    nodes = re.search(r"^#SBATCH --nodes=(\d+)", text, re.M)
    per_node = re.search(r"^#SBATCH --gpus-per-node=(\d+)", text, re.M)
    if not nodes or not per_node:
        raise ValueError(f"{path}: no '#SBATCH --nodes=' / '--gpus-per-node=' line")
    return int(nodes.group(1)), int(per_node.group(1))


def adapter_forward_flops(arch, lora) -> float:
    """Forward FLOPs per token of the LoRA adapters: ``2 r (in + out)`` per adapted linear."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    q = arch.num_attention_heads * arch.head_dim
    kv = arch.num_query_groups * arch.head_dim
    shapes = {
        "linear_qkv": (h, q + 2 * kv),
        "linear_proj": (q, h),
        "linear_fc1": (h, 2 * f),
        "linear_fc2": (f, h),
    }
    per_layer = sum(2.0 * lora.rank * sum(shapes[t]) for t in lora.target_modules if t in shapes)
    total = arch.num_layers * per_layer
    if "output_layer" in lora.target_modules:
        total += 2.0 * lora.rank * (h + arch.vocab_size)
    return total


def stage_flops_per_token(cfg, stage, arch, padded_vocab: int) -> tuple[float, str]:
    """Executed FLOPs per token of a stage and the formula, from the project's counts."""
    from megatron_lang.training.flops import forward_flops_per_token, training_flops_per_token

    seq = cfg.data.seq_length
    full_recompute = cfg.model.recompute == "full"
    fwd = forward_flops_per_token(arch, seq, padded_vocab=padded_vocab)
    trainable = set(stage.trainable)
    layer_rules = [t for t in trainable if t not in ("embeddings", "lm_head", "lora")]
    if layer_rules:  # "all" or patterns over layer weights: count the full training pass
        total = training_flops_per_token(
            arch, seq, recompute=full_recompute, padded_vocab=padded_vocab
        )
        k = 4 if full_recompute else 3
        return total, (
            f"{k} x layers {fwd.layers / 1e9:.2f} + 3 x logits {fwd.logits / 1e9:.3f} GFLOP"
        )
    k_layers = 3 if full_recompute else 2
    k_logits = 3 if "lm_head" in trainable else 2
    total = k_layers * fwd.layers + k_logits * fwd.logits
    formula = (
        f"{k_layers} x layers {fwd.layers / 1e9:.2f} + {k_logits} x logits {fwd.logits / 1e9:.3f}"
    )
    if "lora" in trainable and cfg.lora.enabled:
        ad = adapter_forward_flops(arch, cfg.lora)
        total += 3 * ad
        formula += f" + 3 x adapters {ad / 1e9:.3f}"
    return total, formula + " GFLOP (frozen layers: no weight gradients)"


def budgets(recipe: Recipe, mfu: float | None = None) -> list[StageBudget]:
    """The stages of one recipe with their arithmetic."""
    from megatron_lang.config import load_job_config
    from megatron_lang.training.build import resolve_model
    from megatron_lang.training.flops import peak_tflops
    from megatron_lang.training.stages import resolve_stages

    cfg = load_job_config(str(REPO / recipe.config), [])
    src = resolve_model(cfg)
    nodes, per_node = sbatch_gpus(REPO / recipe.sbatch)
    peak = peak_tflops(DEVICE, "fp8" if cfg.model.fp8 else "bf16")
    out = []
    for st in resolve_stages(cfg):
        fpt, formula = stage_flops_per_token(cfg, st, src.arch, src.padded_vocab)
        out.append(
            StageBudget(
                recipe.name,
                st.name,
                st.steps,
                cfg.data.global_batch_size,
                cfg.data.seq_length,
                fpt,
                formula,
                peak,
                recipe.mfu if mfu is None else mfu,
                nodes * per_node,
            )
        )
    return out


def _fmt_tokens(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mfu", action="append", default=[], help="NAME=VALUE, e.g. curie=0.35")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.mfu:
        name, _, value = item.partition("=")
        overrides[name] = float(value)

    rows = []
    for r in RECIPES:
        stages = budgets(r, overrides.get(r.name))
        print(f"== {r.name}: {r.config} ({stages[0].gpus} GPUs per {r.sbatch})")
        print(f"   assumed MFU {stages[0].mfu:.0%} of {stages[0].peak_tflops:g} TFLOP/s: {r.why}")
        for s in stages:
            print(
                f"   stage {s.stage!r}: tokens = {s.steps:,} steps x {s.global_batch} x "
                f"{s.seq_length} = {_fmt_tokens(s.tokens)}"
            )
            print(f"     FLOPs/token = {s.formula} = {s.flops_per_token / 1e9:.2f} GFLOP")
            print(
                f"     throughput = {s.mfu:.2f} x {s.peak_tflops:g}e12 / "
                f"{s.flops_per_token:.4g} = {s.tokens_per_s_per_gpu:,.0f} tokens/s per GPU"
            )
            print(
                f"     H100-hours = {s.tokens:.4g} / {s.tokens_per_s_per_gpu:,.0f} / 3600 = "
                f"{s.gpu_hours:,.0f}; wall-clock on {s.gpus} GPUs {s.wall_hours():,.1f} h"
            )
        total_tokens = sum(s.tokens for s in stages)
        total_hours = sum(s.gpu_hours for s in stages)
        wall = [f"{total_hours / stages[0].gpus:,.1f} h on {stages[0].gpus} GPUs"]
        wall += [f"{total_hours / (n * 8):,.1f} h on {n * 8} GPUs" for n in r.alt_nodes]
        print(
            f"   total: {_fmt_tokens(total_tokens)} tokens, {total_hours:,.0f} H100-hours "
            f"({'; '.join(wall)})"
        )
        rows.append((r, stages, total_tokens, total_hours))
    if args.markdown:
        print()
        print("| recipe | stage | tokens | GFLOP/token | tokens/s/GPU | H100-hours | GPUs | days |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r, stages, total_tokens, total_hours in rows:
            for s in stages:
                print(
                    f"| {r.name} | {s.stage} | {_fmt_tokens(s.tokens)} | "
                    f"{s.flops_per_token / 1e9:.1f} | {s.tokens_per_s_per_gpu:,.0f} | "
                    f"{s.gpu_hours:,.0f} | {s.gpus} | {s.wall_hours() / 24:.2f} |"
                )
            if len(stages) > 1:
                print(
                    f"| {r.name} | **total** | {_fmt_tokens(total_tokens)} | | | "
                    f"{total_hours:,.0f} | {stages[0].gpus} | "
                    f"{total_hours / stages[0].gpus / 24:.2f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

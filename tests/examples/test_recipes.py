"""The full-scale H100 recipes (examples/recipes/) resolve through their SLURM scripts.

Each recipe's ``--dry-run`` runs for its intended GPU count (``SLURM_NNODES``) with the
start-up checks of a CUDA node with TransformerEngine, prints the layout, stages,
objective/LoRA and token budget; no ranks start. The budget script prints the figures
that examples/recipes/README.md shows.
"""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.examples._scripts import run_script

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples" / "recipes"


def _run(script: str, nodes: int | None, *args: str) -> subprocess.CompletedProcess:
    env = {} if nodes is None else {"SLURM_NNODES": str(nodes)}
    return run_script(RECIPES.relative_to(REPO) / script, env, *args)


def _tokens(config: str) -> tuple[int, int]:
    """(steps, tokens) of a recipe from its YAML, through the project's loader."""
    from megatron_lang.config import load_job_config

    cfg = load_job_config(str(RECIPES / config), [])
    d = cfg.data
    return cfg.train.steps, cfg.train.steps * d.global_batch_size * d.seq_length


CASES = [
    (
        "snakmodel_7b.sbatch",
        4,
        "TP=1 x PP=1 x CP=1 x DP=32 (32 ranks)",
        "micro 1 x DP 32 x gradient accumulation 16",
        [
            "stage 0 'full': steps 1-12500 (12500 steps, 2.621e+10 tokens), trainable all, "
            "lr 1.5e-05 cosine"
        ],
        [
            "objective: causal LM",
            "lr: 1.5e-05",
            "seq_length: 4096",
            "global_batch_size: 512",
            "layer spec on CUDA+TE: TransformerEngine linears with fused norms (FP8-capable) + "
            "TEDotProductAttention (flash/fused, causal)",
        ],
        26_214_400_000,
    ),
    (
        "normistral_11b.sbatch",
        8,
        "TP=2 x PP=1 x CP=1 x DP=32 (64 ranks)",
        "micro 1 x DP 32 x gradient accumulation 32",
        [
            "stage 0 'embeddings': steps 1-1000 (1000 steps, 4.194e+09 tokens), trainable "
            "embeddings, lm_head, lr 0.0001 constant",
            "stage 1 'full': steps 1001-61000 (60000 steps, 2.517e+11 tokens), trainable all, "
            "lr 0.0001 wsd",
        ],
        [
            "objective: causal + MNTP (hybrid, mntp_fraction 0.1",
            "mntp_fraction: 0.1",
            "fp8: hybrid",
            "vocab 51200",
            "sequence_parallel: true",
            "recompute: null",
            "layer spec on CUDA+TE: TransformerEngine linears with fused norms (FP8-capable) + "
            "TEDotProductAttention on packed sequences (THD, cu_seqlens; flash/fused: "
            "padding_causal for causal samples, padding for MNTP/bidirectional ones)",
        ],
        255_852_544_000,
    ),
    (
        "normistral_11b.sbatch",
        16,
        "TP=2 x PP=1 x CP=1 x DP=64 (128 ranks)",
        "micro 1 x DP 64 x gradient accumulation 16",
        ["stage 1 'full': steps 1001-61000"],
        ["mntp_fraction: 0.1"],
        255_852_544_000,
    ),
    (
        "curie_7b.sbatch",
        1,
        "TP=1 x PP=1 x CP=1 x DP=8 (8 ranks)",
        "micro 2 x DP 8 x gradient accumulation 8",
        [
            "stage 0 'full': steps 1-1100 (1100 steps, 2.884e+08 tokens), trainable lora, "
            "lr 2.5e-05 cosine"
        ],
        [
            "lora: rank 32, alpha 16, dropout 0.05, targets linear_qkv, linear_proj, linear_fc1, "
            "linear_fc2",
            "transformer_engine: false",
            "layer spec on CUDA+TE: local megatron-core linears and norms + megatron-core's "
            "local DotProductAttention",
        ],
        288_358_400,
    ),
    (
        "snakmodel_7b_sft.sbatch",
        1,
        "TP=1 x PP=1 x CP=1 x DP=8 (8 ranks)",
        "micro 1 x DP 8 x gradient accumulation 8",
        [
            "stage 0 'full': steps 1-3572 (3572 steps, 9.364e+08 tokens), trainable lora, "
            "lr 0.0002 constant"
        ],
        [
            "objective: instruction tuning (answer tokens of data/snak_sft: not built yet",
            "lora: rank 128, alpha 16, dropout 0.05, targets linear_qkv, linear_proj, linear_fc1, "
            "linear_fc2, output_layer",
            "clip_grad: 0.3",
            "weight_decay: 0.001",
            "layer spec on CUDA+TE: local megatron-core linears and norms + "
            "PackedDotProductAttention (PyTorch varlen flash attention on CUDA bf16/fp16",
        ],
        936_378_368,
    ),
]


@pytest.mark.parametrize("script,nodes,layout,batch,stages,fields,tokens", CASES)
def test_recipe_dry_run(script, nodes, layout, batch, stages, fields, tokens):
    out = _run(script, nodes, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"layout: {layout}" in out.stdout
    assert batch in out.stdout
    for line in stages + fields:
        assert line in out.stdout, line
    steps, expected = _tokens(script.replace(".sbatch", ".yaml"))
    assert expected == tokens
    printed = re.search(r"([\d.e+]+) tokens in (\d+) steps", out.stdout)
    assert printed and int(printed.group(2)) == steps
    assert float(printed.group(1)) == pytest.approx(tokens, rel=5e-3)  # printed with 3 digits
    assert "memory per GPU (estimate" in out.stdout and "\n  total " in out.stdout
    assert "WARNING:" not in out.stdout  # every recipe fits an H100 by the estimate


def test_snakmodel_sft_full_loss_variant_resolves():

    env = {"SLURM_NNODES": "1", "CONFIG": str(RECIPES / "snakmodel_7b_sft_full.yaml")}
    out = run_script(RECIPES.relative_to(REPO) / "snakmodel_7b_sft.sbatch", env, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "chat: data/snak_sft_full" in out.stdout
    assert "dir: checkpoints/snakmodel-7b-sft-full" in out.stdout
    assert "lr 0.0002 constant" in out.stdout


def test_default_node_count_is_the_scripts():
    out = _run("curie_7b.sbatch", None, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "layout: TP=1 x PP=1 x CP=1 x DP=8 (8 ranks)" in out.stdout


@pytest.mark.parametrize(
    "script,nodes,override,message",
    [
        # FP8 needs the TE spec; the dry run checks as on CUDA+TE nodes
        (
            "normistral_11b.sbatch",
            8,
            "model.transformer_engine=false",
            "needs the TransformerEngine layer spec",
        ),
        # MNTP masks use the local core attention: no context parallelism
        ("normistral_11b.sbatch", 8, "parallel.context_parallel=2", "no context parallelism"),
        # LoRA refuses the TE spec, which CUDA+TE nodes would pick by default
        ("curie_7b.sbatch", 1, "model.transformer_engine=null", "lora needs the local layer spec"),
        (
            "snakmodel_7b.sbatch",
            3,
            "data.micro_batch_size=1",
            "data.global_batch_size=512 is not divisible by micro_batch_size x DP = 1 x 24",
        ),
    ],
)
def test_recipe_conflicts_fail_in_the_dry_run(script, nodes, override, message):
    out = _run(script, nodes, "--dry-run", override)
    assert out.returncode == 2
    assert message in out.stderr


def test_a_real_launch_needs_the_base_checkpoint():
    out = _run("snakmodel_7b.sbatch", 4)
    assert out.returncode == 2
    assert "pass model.checkpoint=" in out.stderr


@pytest.mark.parametrize(
    "blend,languages",
    [
        ("normistral_blend.yaml", {"nb", "nn", "se", "da", "sv", "en", "code"}),
        ("snakmodel_blend.yaml", {"da"}),
        ("curie_blend.yaml", {"pl"}),
    ],
)
def test_blend_specs_are_valid(blend, languages):
    from megatron_lang.data.blend import BlendSpec

    spec = BlendSpec.from_yaml(RECIPES / blend, check_files=False)
    assert {s.language for s in spec.sources} == languages
    if blend == "normistral_blend.yaml":
        caps = {s.name: s.max_epochs for s in spec.sources}
        assert caps["nb"] == caps["nn"] == 4  # open Norwegian text at most four times
        assert any(c is None for c in caps.values())  # an uncapped source absorbs the rest


def _budget_module():
    spec = importlib.util.spec_from_file_location("recipe_budget", REPO / "bench/recipe_budget.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipe_budget"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_budget_script_prints_the_readme_table():
    budget = _budget_module()
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert budget.main(["--markdown"]) == 0
    out = buf.getvalue()
    assert "tokens = 12,500 steps x 512 x 4096 = 26.21B" in out
    assert "tokens = 1,000 steps x 1024 x 4096 = 4.19B" in out
    assert "tokens = 60,000 steps x 1024 x 4096 = 251.66B" in out
    assert "tokens = 1,100 steps x 128 x 2048 = 288.4M" in out
    # the README's table rows are this script's output (the figures stay in sync)
    readme = (RECIPES / "README.md").read_text()
    rows = [
        line
        for line in readme.splitlines()
        if re.match(r"\| (snakmodel|snakmodel-sft|normistral|curie) \|", line)
    ]
    assert len(rows) == 6
    for row in rows:
        assert row in out, row


def test_budget_arithmetic_is_the_flops_formula():
    budget = _budget_module()
    from megatron_lang.config import get_preset
    from megatron_lang.training.flops import peak_tflops, training_flops_per_token

    (snak,) = budget.budgets(budget.RECIPES[0])
    per_token = training_flops_per_token(get_preset("llama2-7b"), 4096)
    assert snak.flops_per_token == per_token
    assert snak.peak_tflops == peak_tflops("H100", "bf16")
    hours = 26_214_400_000 * per_token / (snak.mfu * snak.peak_tflops * 1e12) / 3600
    assert snak.gpu_hours == pytest.approx(hours)
    emb, full = budget.budgets(budget.RECIPES[1])
    assert emb.flops_per_token < full.flops_per_token  # frozen layers: no weight gradients
    assert full.peak_tflops == peak_tflops("H100", "fp8")


@pytest.mark.parametrize(
    "config,gpus,label",
    [
        ("snakmodel_7b.yaml", 32, "SnakModel"),
        ("normistral_11b.yaml", 64, "NorMistral"),
        ("normistral_11b.yaml", 128, "NorMistral"),
        ("curie_7b.yaml", 8, "Curie"),
    ],
)
def test_readme_memory_rows_are_the_dry_runs_estimate(config, gpus, label):
    from megatron_lang.config import load_job_config
    from megatron_lang.training.build import resolve_model
    from megatron_lang.training.memory import estimate_memory

    cfg = load_job_config(str(RECIPES / config), [])
    src = resolve_model(cfg)
    e = estimate_memory(cfg, src.arch, src.padded_vocab, gpus)
    parts = [
        e.weights_gb,
        e.main_grads_gb,
        e.optimizer_gb,
        e.fp8_weights_gb,
        e.activations_gb,
        e.logits_gb,
        e.attention_gb,
        e.workspace_gb,
    ]
    cells = " | ".join(f"{v:.2f}" if v else "–" for v in parts)
    share = f"{100 * e.total_gb / e.capacity_gb:.0f} %"
    row = f"| {label} ({gpus}) | {cells} | {e.total_gb:.2f} ({share}) |"
    assert row in (RECIPES / "README.md").read_text(), row
    assert not e.over_limit  # every recipe stays below 90 % of an H100's 80 GB

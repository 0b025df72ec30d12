"""The per-GPU memory estimate of the dry run, checked against hand-computed values."""

from __future__ import annotations

import pytest

from megatron_lang.config import load_job_config
from megatron_lang.config.presets import get_preset
from megatron_lang.train import main
from megatron_lang.training.job import describe
from megatron_lang.training.memory import (
    GB,
    WORKSPACE_GB,
    estimate_memory,
    in_flight_microbatches,
    stage_parameters,
)

pytestmark = pytest.mark.unit

# tiny-llama with 4 layers: h=64, a=4 heads of d=16, g=2 KV groups, f=128, V=512
V = 512
# per layer at TP=1: QKV (64 + 2*32)*64 = 8192, proj 64*64 = 4096, fc1 2*128*64 = 16384,
# fc2 64*128 = 8192, two norms 2*64 = 128
LAYER_TP1 = 8192 + 4096 + 16384 + 8192 + 128  # 36992
LAYER_TP2 = (8192 + 4096 + 16384 + 8192) // 2 + 128  # 18560: norms are not split
EMB_TP1 = V * 64  # 32768 (the output layer is the same size)


def _cfg(*overrides: str):
    base = [
        "model.preset=tiny-llama",
        "model.arch.num_layers=4",
        "data.seq_length=32",
        "data.micro_batch_size=2",
        "data.global_batch_size=16",
    ]
    return load_job_config(None, [*base, *overrides])


def _arch(cfg):
    return get_preset(cfg.model.preset, **cfg.model.arch)


def _est(*overrides: str, world: int = 1, te: bool | None = None):
    cfg = _cfg(*overrides)
    return estimate_memory(cfg, _arch(cfg), V, world, transformer_engine=te)


def _bytes(gb: float) -> float:
    return gb * GB


def test_parameter_count_by_hand_and_tp_halves_all_but_the_norms():
    tp1 = _est("parallel.tensor_parallel=1", world=2)
    tp2 = _est("parallel.tensor_parallel=2", world=2)
    assert tp1.params == 4 * LAYER_TP1 + 2 * EMB_TP1 + 64  # + final norm: 213568
    assert tp2.params == 4 * LAYER_TP2 + 2 * EMB_TP1 // 2 + 64  # 107072
    norms = 4 * 128 + 64
    assert tp1.params - norms == 2 * (tp2.params - norms)
    assert _bytes(tp1.weights_gb) == pytest.approx(2 * tp1.params)  # bf16
    assert _bytes(_est("model.dtype=fp32").weights_gb) == pytest.approx(4 * tp1.params)


def test_published_llama2_7b_count_and_pipeline_stages_partition_the_model():
    cfg = load_job_config(None, ["model.preset=llama2-7b"])
    arch = get_preset("llama2-7b")
    full = stage_parameters(cfg, arch, 32000, 0, te=True)
    assert sum(p.numel for p in full) == 6_738_415_616  # published parameter count
    for pp, vpp in ((2, None), (4, 2)):
        extra = [f"parallel.pipeline_parallel={pp}"]
        if vpp:
            extra.append(f"parallel.virtual_pipeline_parallel={vpp}")
        cfg = load_job_config(None, ["model.preset=llama2-7b", *extra])
        shards = [p for r in range(pp) for p in stage_parameters(cfg, arch, 32000, r, te=True)]
        assert sorted(p.name for p in shards) == sorted(p.name for p in full)
        assert sum(p.numel for p in shards) == 6_738_415_616
    # the first stage holds layers 0-3 and 16-19 with PP=4 x VPP=2 (global names)
    first = stage_parameters(cfg, arch, 32000, 0, te=True)
    layers = {p.name.split(".")[2] for p in first if p.name.startswith("decoder.layers.")}
    assert layers == {"0", "1", "2", "3", "16", "17", "18", "19"}
    assert first[0].name == "embedding.word_embeddings.weight"


def test_grads_and_optimizer_bytes_and_dp_sharding():
    dp2 = _est("parallel.tensor_parallel=2", world=4)
    dp4 = _est("parallel.tensor_parallel=2", world=8)
    n = 4 * LAYER_TP2 + EMB_TP1 + 64
    assert dp2.params == dp4.params == dp2.trainable_params == n
    assert _bytes(dp2.main_grads_gb) == pytest.approx(4 * n)  # fp32 grad buffer
    assert _bytes(dp2.optimizer_gb) == pytest.approx(12 * n / 2)  # master + m + v over DP=2
    assert dp4.optimizer_gb == pytest.approx(dp2.optimizer_gb / 2)
    flat = ["parallel.tensor_parallel=2", "optimizer.use_distributed_optimizer=false"]
    flat += ["optimizer.overlap_param_gather=false"]
    assert _bytes(_est(*flat, world=4).optimizer_gb) == pytest.approx(12 * n)
    assert _bytes(_est(*flat, world=8).optimizer_gb) == pytest.approx(12 * n)  # not sharded
    # fp32 weights: no master copy, Adam moments only
    assert _bytes(_est("model.dtype=fp32", world=2).optimizer_gb) == pytest.approx(
        8 * (4 * LAYER_TP1 + 2 * EMB_TP1 + 64) / 2
    )


def test_trainable_is_the_largest_stage_and_lora_counts_adapters_only():
    stages = [
        "train.steps=10",
        "stages=[{name: emb, steps: 5, trainable: [embeddings, lm_head]}, {name: rest}]",
    ]
    emb_only = [
        "train.steps=10",
        "stages=[{name: emb, steps: 5, trainable: [embeddings]}, {name: b, trainable: [lm_head]}]",
    ]
    assert _est(*stages).trainable_params == 4 * LAYER_TP1 + 2 * EMB_TP1 + 64
    e = _est(*emb_only)
    assert e.trainable_params == EMB_TP1
    assert _bytes(e.main_grads_gb) == pytest.approx(4 * EMB_TP1)
    lora = _est("lora.enabled=true", "lora.rank=4", "model.transformer_engine=false")
    # A [r, in] + B [out, r]: QKV 4*64 + 128*4, proj 4*64 + 64*4, fc1 4*64 + 256*4,
    # fc2 4*128 + 64*4
    assert lora.trainable_params == 4 * (768 + 512 + 1280 + 768)
    assert lora.params == 4 * LAYER_TP1 + 2 * EMB_TP1 + 64 + lora.trainable_params


def test_activations_by_recompute_setting():
    tp2 = ["parallel.tensor_parallel=2", "parallel.sequence_parallel=true"]
    local = [*tp2, "model.transformer_engine=false"]  # stores the [b, a, s, s] scores
    sbh = 32 * 2 * 64
    none = _est(*local, world=2)
    sel = _est(*local, "model.recompute=selective", world=2)
    full = _est(*local, "model.recompute=full", world=2)
    # Korthikanti et al. Table 2 with SP, x 4 layers, one micro-batch in flight (PP=1)
    assert _bytes(none.activations_gb) == pytest.approx(4 * sbh * (34 + 5 * 4 * 32 / 64) / 2)
    assert _bytes(sel.activations_gb) == pytest.approx(4 * 34 * sbh / 2)
    # full: each layer's input, plus one recomputed layer during its backward
    assert _bytes(full.activations_gb) == pytest.approx(4 * 2 * sbh / 2 + sbh * 44 / 2)
    assert full.activations_gb < sel.activations_gb < none.activations_gb
    # TE flash attention keeps no [b, a, s, s] scores: selective changes nothing there
    te_none, te_sel = (
        _est(*tp2, world=2, te=True),
        _est(*tp2, "model.recompute=selective", world=2, te=True),
    )
    assert te_none.activations_gb == te_sel.activations_gb == sel.activations_gb
    # ... and the dry run says so, with the FLOPs it costs; not where selective saves memory
    assert te_sel.total_gb == te_none.total_gb
    (note,) = te_sel.notes
    assert "model.recompute=selective saves no memory here" in note
    assert "hardware FLOPs" in note and f"NOTE: {note}" in te_sel.table()
    assert not te_none.notes and not sel.notes and not full.notes
    # without SP: sbh (10 + 24/t) with selective recompute
    no_sp = _est("parallel.tensor_parallel=2", "model.recompute=selective", world=2)
    assert _bytes(no_sp.activations_gb) == pytest.approx(4 * sbh * (10 + 24 / 2))


def test_logits_attention_transients_fp8_and_workspace():
    tp2 = ["parallel.tensor_parallel=2", "model.recompute=selective"]
    e = _est(*tp2, world=2, te=True)
    assert _bytes(e.logits_gb) == pytest.approx(32 * 2 * V / 2 * 4)  # s b V/t fp32
    assert e.attention_gb == 0 and e.fp8_weights_gb == 0  # flash attention, no FP8
    assert e.workspace_gb == WORKSPACE_GB
    # hybrid MNTP / document attention, packed (the default): TE THD flash, no scores
    packed = _est(*tp2, "objective.mntp_fraction=0.1", world=2, te=True)
    assert packed.attention_gb == 0 and packed.activations_gb == e.activations_gb
    # dense masks (the reference): megatron-core's local attention, [b, a/t, s, s] = [2, 2, 32, 32]
    dense = "model.attention=dense"
    masked = _est(*tp2, "objective.mntp_fraction=0.1", dense, world=2, te=True)
    assert _bytes(masked.attention_gb) == pytest.approx(2 * 2 * 32 * 32 * 16)
    doc = _est(
        "parallel.tensor_parallel=2", "data.document_attention=true", dense, world=2, te=True
    )
    assert _bytes(doc.attention_gb) == pytest.approx(2 * 2 * 32 * 32 * 10)
    fp8 = _est(*tp2, "model.fp8=hybrid", world=2, te=True)
    linears = 4 * (LAYER_TP2 - 128)
    assert _bytes(fp8.fp8_weights_gb) == pytest.approx(2 * linears)
    assert fp8.total_gb - e.total_gb == pytest.approx(fp8.fp8_weights_gb)


def test_pipeline_in_flight_microbatches_and_the_larger_stage():
    assert in_flight_microbatches(1, None, 0, 8) == 1
    assert in_flight_microbatches(4, None, 0, 8) == 4  # 1F1B: PP on the first stage
    assert in_flight_microbatches(4, None, 3, 8) == 1
    assert in_flight_microbatches(4, None, 0, 2) == 2  # fewer micro-batches than stages
    assert in_flight_microbatches(2, 5, 0, 256) == 11  # 2 (PP-1) + (VPP-1) PP + 1
    assert in_flight_microbatches(2, 5, 0, 1) == 5
    # PP=2, 4 micro-batches: the first stage holds 2 in flight of its 2 layers = 4 layers
    pp1 = _est("model.recompute=selective", world=1)
    pp2 = _est("model.recompute=selective", "parallel.pipeline_parallel=2", world=2)
    assert pp2.pipeline_stage == "first of 2 pipeline stages"
    assert pp2.activations_gb == pytest.approx(pp1.activations_gb)
    assert pp2.logits_gb == 0  # the loss is on the last stage
    assert pp2.params == 2 * LAYER_TP1 + EMB_TP1


def test_dry_run_prints_the_table_and_warns_over_90_percent(capsys):
    cfg = _cfg("parallel.tensor_parallel=2")
    text = describe(cfg, 4)
    assert "memory per GPU (estimate, GB = 2^30 bytes; PP=1; 107,072 parameters" in text
    for row in ("weights", "main grads", "optimizer", "activations", "logits", "workspace"):
        assert f"\n  {row} " in text
    assert "total" in text and "of 80 GB (H100 80GB)" in text
    assert "WARNING:" not in text
    big = [
        "model.preset=mistral-nemo-12b",
        "data.seq_length=4096",
        "data.global_batch_size=8",
        "optimizer.use_distributed_optimizer=false",
        "optimizer.overlap_param_gather=false",
    ]
    assert main(["--dry-run", "--world-size", "8", *big]) == 0
    out = capsys.readouterr().out
    assert "memory per GPU (estimate" in out
    warning = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 1 and "above 90 % of 80 GB" in warning[0]

"""bench/gpu_mfu.py: the scaled-down model keeps the full model's FLOPs mix; the CPU path runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_mfu", REPO / "bench/gpu_mfu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_mfu"] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_mfu", None)


def test_vocabulary_scales_with_the_layers(bench):
    assert bench.scaled_vocab(32) == 128256  # the full model: Llama-3-8B's vocabulary
    assert bench.scaled_vocab(8) == 32000  # 128256 / 4 = 32064, to a multiple of 128
    assert all(bench.scaled_vocab(n) % 128 == 0 for n in range(1, 33))
    assert bench.bench_arch(8, 8192, cpu_smoke=False).vocab_size == 32000
    assert bench.bench_arch(8, 8192, cpu_smoke=False, full_vocab=True).vocab_size == 128256
    with pytest.raises(ValueError, match="layers=33"):
        bench.scaled_vocab(33)


def test_the_slice_has_the_full_models_logits_share(bench):
    seq = 8192
    full = bench.logits_share(bench.bench_arch(32, seq, cpu_smoke=False), seq)
    assert full == pytest.approx(0.0612, abs=5e-4)  # Llama-3-8B at 8192: ~6 %
    # with the whole vocabulary, 8 of 32 layers give the logits ~21 % of the FLOPs
    unscaled = bench.bench_arch(8, seq, cpu_smoke=False, full_vocab=True)
    assert bench.logits_share(unscaled, seq) == pytest.approx(0.207, abs=2e-3)
    for layers in (2, 4, 6, 8, 16):
        arch = bench.bench_arch(layers, seq, cpu_smoke=False)
        assert bench.logits_share(arch, seq) == pytest.approx(full, abs=2e-3), layers


def test_layers_beyond_the_full_model_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--layers", "40"])
    assert "--layers 40: between 1 and 32" in capsys.readouterr().err
    assert bench.parse_args(["--layers", "40", "--full-vocab"]).layers == 40


def test_cpu_smoke_runs_and_reports_the_shares():
    out = subprocess.run(
        [sys.executable, "bench/gpu_mfu.py", "--cpu-smoke", "--recompute", "full"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("[CPU smoke]"))
    assert "layers=2 vocab=512" in line and "% of FLOPs (32 layers: " in line

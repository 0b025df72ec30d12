"""TensorBoard scalars read back from disk, the console line, memory figures."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_lang.training.metrics import MetricsWriter, format_console_line, memory_stats

pytestmark = pytest.mark.unit


def _read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_round_trip(tmp_path):
    with MetricsWriter(tmp_path / "tb", enabled=True) as w:
        assert w.enabled
        w.scalars(1, {"loss": 2.5, "lr": 1e-4, "mfu": None}, prefix="train")
        w.scalars(2, {"loss": 2.25, "lr": torch.tensor(2e-4)}, prefix="train")
        w.scalars(2, {"tokens_per_s": 12345.0}, prefix="throughput/")
        w.scalars(3, {"val/da/loss": 3.0})
        w.flush()
    got = _read_scalars(tmp_path / "tb")
    assert set(got) == {"train/loss", "train/lr", "throughput/tokens_per_s", "val/da/loss"}
    assert got["train/loss"] == [(1, 2.5), (2, 2.25)]
    assert [s for s, _ in got["train/lr"]] == [1, 2]
    assert [v for _, v in got["train/lr"]] == pytest.approx([1e-4, 2e-4])
    assert got["throughput/tokens_per_s"] == [(2, 12345.0)]
    assert got["val/da/loss"] == [(3, 3.0)]


def test_train_step_routes_keys_to_groups(tmp_path):
    with MetricsWriter(tmp_path, enabled=True) as w:
        w.train_step(
            7,
            {
                "loss": 2.0,
                "loss/da": 2.5,
                "lr": 1e-3,
                "grad_norm": 0.5,
                "skipped_steps": 1,
                "tokens_per_s": 1000.0,
                "tflops_per_gpu": 400.0,
                "mfu": 0.4,
                "hfu": 0.5,
                "mfu_unknown": None,
                "step_time_s": 0.25,
                "cpu_rss_gb": 1.5,
            },
        )
    got = _read_scalars(tmp_path)
    assert set(got) == {
        "train/loss",
        "train/loss/da",
        "train/lr",
        "train/grad_norm",
        "train/skipped_steps",
        "throughput/tokens_per_s",
        "throughput/tflops_per_gpu",
        "throughput/mfu",
        "throughput/hfu",
        "throughput/step_time_s",
        "memory/cpu_rss_gb",
    }
    assert got["throughput/mfu"][0][0] == 7
    assert got["throughput/mfu"][0][1] == pytest.approx(0.4)
    assert got["train/loss/da"] == [(7, 2.5)]
    assert got["memory/cpu_rss_gb"] == [(7, 1.5)]


def test_disabled_writer_writes_nothing(tmp_path):
    w = MetricsWriter(tmp_path / "tb", enabled=False)
    assert not w.enabled
    w.scalars(1, {"loss": 1.0}, prefix="train")
    w.train_step(1, {"loss": 1.0, "mfu": 0.5})
    w.flush()
    w.close()
    assert not (tmp_path / "tb").exists()
    assert list(tmp_path.iterdir()) == []
    assert not MetricsWriter(None).enabled


def test_close_is_idempotent(tmp_path):
    w = MetricsWriter(tmp_path, enabled=True)
    w.scalars(0, {"x": 1.0})
    w.close()
    w.close()
    w.scalars(1, {"x": 2.0})  # after close: no-op
    assert _read_scalars(tmp_path) == {"x": [(0, 1.0)]}


def test_console_line_formats_every_known_value():
    line = format_console_line(
        42,
        1000,
        {
            "loss": 2.345678,
            "lr": 3e-4,
            "grad_norm": 1.23456,
            "tokens_per_s": 123456.7,
            "tflops_per_gpu": 456.78,
            "mfu": 0.4618,
            "hfu": 0.6123,
            "skipped_steps": 2,
            "memory_gb": 61.234,
            "step_time_s": 1.5,
            "loss/da": 2.5,
        },
    )
    assert line.startswith("step   42/1000 | ")
    assert "\n" not in line
    for piece in [
        "loss 2.3457",
        "lr 3.000e-04",
        "grad 1.235",
        "tok/s 123,457",
        "TFLOP/s/GPU 456.8",
        "MFU 46.2%",
        "HFU 61.2%",
        "skipped 2",
        "mem 61.23 GB",
        "step 1.500 s",
        "loss/da 2.5",
    ]:
        assert piece in line, (piece, line)
    # known figures in a fixed order, extras last
    assert line.index("loss 2.3457") < line.index("lr ") < line.index("MFU") < line.index("HFU")
    assert line.index("HFU") < line.index("loss/da")


def test_console_line_leaves_out_unknowns_and_uses_memory_stats():
    line = format_console_line(5, 0, {"loss": 1.0, "mfu": None, "cpu_rss_gb": 0.5})
    assert line == "step 5 | loss 1.0000 | mem 0.50 GB"
    assert "nan" in format_console_line(1, 2, {"loss": math.nan})
    # small CPU figures keep significant digits
    assert "TFLOP/s/GPU 0.00513" in format_console_line(1, 2, {"tflops_per_gpu": 0.005128})


def test_memory_stats():
    stats = memory_stats()
    if torch.cuda.is_available():
        assert {"allocated_gb", "reserved_gb", "max_allocated_gb", "max_reserved_gb"} <= set(stats)
    else:
        assert set(stats) == {"cpu_rss_gb"}
        # this Python process with torch loaded holds tens of MB at least, far below 1 TB
        assert 0.01 < stats["cpu_rss_gb"] < 1024

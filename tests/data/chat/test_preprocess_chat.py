"""The chat data tool end to end: formats, bad records, packing, the files megatron-core reads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_lang.data.chat.packing import pack_best_fit
from tools.preprocess import preprocess_chat

pytestmark = pytest.mark.unit

GOOD = [
    {"messages": [{"role": "user", "content": "Hej"}, {"role": "assistant", "content": "Dav."}]},
    {
        "system": "Vær kort.",
        "conversations": [
            {"from": "human", "value": "Hvad er apt?"},
            {"from": "gpt", "value": "Pakkehåndtering."},
            {"from": "human", "value": "Og dpkg?"},
            {"from": "gpt", "value": "Det lave lag."},
        ],
    },
    {"instruction": "Oversæt til dansk", "input": "hello", "output": "hej"},
    {"prompt": "Hvad hedder Danmarks hovedstad?", "completion": "København."},
]

# Each malformed case the tool must name (reason as counted in report.json).
BAD = {
    "unknown role": {
        "messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]
    },
    "empty answer": {
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]
    },
    "missing keys": {"text": "just text"},
    "turn order": {
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    },
    "invalid JSON": None,
    "empty answer (invisible)": {"prompt": "x", "completion": "\u200b\u200b"},
}


def _write(path: Path, records: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for at, text in (raw_lines or {}).items():
        lines.insert(at, text)
    data = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _run(args: list[str]) -> int:
    return preprocess_chat.main(args + ["--no-progress"])


def _read(out: Path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset(str(out / "chat")), IndexedDataset(str(out / "chat_lossmask"))


def test_formats_packed_and_read_by_megatron_core(tmp_path, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    src = _write(tmp_path / "in.jsonl.gz", GOOD * 25)
    out = tmp_path / "out"
    assert (
        _run(
            [
                "--input",
                str(src),
                "--output",
                str(out),
                "--tokenizer",
                str(smollm2_tokenizer_dir),
                "--seq-length",
                "256",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["conversations"]["kept"] == 100
    tokens, masks = _read(out)
    assert len(tokens.document_indices) - 1 == report["packing"]["samples"]
    # Every packed sample fits, and the samples hold each conversation exactly once.
    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    seen = []
    for d in range(len(tokens.document_indices) - 1):
        first, last = tokens.document_indices[d], tokens.document_indices[d + 1]
        assert tokens.sequence_lengths[first:last].sum() <= 256
        for s in range(first, last):
            ids, mask = tokens[s], masks[s]
            assert len(ids) == len(mask)
            seen.append(tok.decode(ids))
            trained = tok.decode(ids[mask.astype(bool)])
            assert trained.endswith("<|im_end|>") and "<|im_start|>" not in trained
    expected = []
    for r in GOOD:
        from megatron_lang.data.chat.formats import normalise

        msgs = [{"role": m.role, "content": m.content} for m in normalise(r)]
        expected.append(tok.apply_chat_template(msgs, tokenize=False))
    assert sorted(seen) == sorted(expected * 25)
    assert report["tokens"]["trained"] == int(sum(masks[s].sum() for s in range(len(masks))))
    assert report["packing"]["efficiency"] > 0.9
    # A validation set padded to a global batch: every sample once, in order, then empty
    # items; its loss mask counts each trained token exactly once.
    from megatron_lang.data.chat.dataset import ChatSFTDataset

    plain = ChatSFTDataset(out, 256, pad_id=0, shuffle=False)
    padded = ChatSFTDataset(out, 256, pad_id=0, shuffle=False, pad_to=7)
    n = plain.samples
    assert len(padded) % 7 == 0 and n < len(padded) < n + 7
    for i in range(n):
        assert all(torch.equal(padded[i][k], plain[i][k]) for k in plain[i])
    assert all(padded[i]["loss_mask"].sum() == 0 for i in range(n, len(padded)))
    assert (
        sum(float(padded[i]["loss_mask"].sum()) for i in range(len(padded)))
        == (report["tokens"]["trained"])
    )


@pytest.mark.parametrize("reason", list(BAD))
def test_each_bad_record_is_named_and_stops(tmp_path, smollm2_tokenizer_dir, reason):
    raw = {3: "{not json"} if BAD[reason] is None else None
    records = GOOD + ([] if BAD[reason] is None else [BAD[reason]])
    src = _write(tmp_path / "in.jsonl", records, raw)
    out = tmp_path / "out"
    args = ["--input", str(src), "--output", str(out), "--tokenizer", str(smollm2_tokenizer_dir)]
    err = []
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        assert _run(args) == 1
    err = buf.getvalue()
    line = 4 if BAD[reason] is None else 5
    reason = reason.split(" (")[0]
    assert f"{src}:{line}: {reason}" in err, err
    assert (
        not out.exists() and not list(tmp_path.glob(".out*")) and not list(tmp_path.glob(".chat*"))
    )
    # --on-error skip counts it and keeps the rest.
    assert _run(args + ["--on-error", "skip"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_by_reason"] == {reason: 1}
    assert report["conversations"]["kept"] == len(GOOD)
    assert report["skipped_examples"][0].startswith(f"{src}:{line}: {reason}")


def test_overlong_dropped_or_truncated_and_counted(tmp_path, smollm2_tokenizer_dir):
    long = {"prompt": "Gentag.", "completion": "ord " * 300}
    long_prompt = {"prompt": "ord " * 300, "completion": "Nej."}  # no answer token fits
    src = _write(tmp_path / "in.jsonl", GOOD + [long, long_prompt])
    base = ["--input", str(src), "--tokenizer", str(smollm2_tokenizer_dir), "--seq-length", "128"]
    assert _run(base + ["--output", str(tmp_path / "drop")]) == 0
    drop = json.loads((tmp_path / "drop" / "report.json").read_text())
    assert drop["conversations"]["dropped_overlong"] == 2 and drop["conversations"]["kept"] == 4
    assert _run(base + ["--output", str(tmp_path / "cut"), "--overlong", "truncate"]) == 0
    cut = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert cut["conversations"]["truncated"] == 1 and cut["conversations"]["kept"] == 5
    assert cut["conversations"]["dropped_overlong"] == 1  # truncated, it had no trained token
    tokens, masks = _read(tmp_path / "cut")
    assert max(tokens.sequence_lengths) == 128


def test_workers_give_identical_files(tmp_path, smollm2_tokenizer_dir):
    src = _write(tmp_path / "in.jsonl", GOOD * 200)
    outs = []
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        args = [
            "--input",
            str(src),
            "--output",
            str(out),
            "--tokenizer",
            str(smollm2_tokenizer_dir),
            "--workers",
            str(w),
            "--seq-length",
            "512",
        ]
        assert _run(args) == 0
        outs.append(out)
    for name in ("chat.bin", "chat.idx", "chat_lossmask.bin", "chat_lossmask.idx"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_best_fit_decreasing_packs_whole_items():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 600, size=5000)
    bins = pack_best_fit(lengths, 2048)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(lengths[b].sum() <= 2048 for b in bins)
    lower_bound = int(np.ceil(lengths.sum() / 2048))
    assert len(bins) <= lower_bound + 2  # short items: within two samples of optimal
    with pytest.raises(ValueError, match="1..2048"):
        pack_best_fit(np.array([3000]), 2048)

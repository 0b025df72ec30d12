"""Bad input through the pipeline: --on-error fail / skip, a 100 MB document, interruptions,
damaged containers, workers that fail or die."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from megatron_lang.data import preprocess as pp
from megatron_lang.data.indexed import IndexedDatasetReader, validate_dataset
from megatron_lang.data.preprocess import PreprocessConfig, PreprocessError, preprocess
from megatron_lang.data.readers import ContainerError
from megatron_lang.data.tokenizer import TokenizerSpec
from tools.preprocess import preprocess_data

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

BAD = {
    "malformed_json": b'{"text": "unterminated',
    "missing_key": b'{"title": "no text here"}',
    "non_string_key": b'{"text": 12345}',
    "invalid_utf8": b'{"text": "bad byte \xff here"}',
    "empty_document": b'{"text": ""}',
}


def _corpus(tmp_path: Path, gimp_texts: list[str], bad: bytes) -> Path:
    """10 good documents, the bad line as line 6, 10 more good documents."""
    lines = [json.dumps({"text": t}).encode() for t in gimp_texts[:20]]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join(lines[:5] + [bad] + lines[5:]) + b"\n")
    return path


def _config(tmp_path, inputs, tokenizer, **kw) -> PreprocessConfig:
    return PreprocessConfig(
        inputs=[str(p) for p in inputs],
        output_prefix=str(tmp_path / "out" / "ds"),
        tokenizer=str(tokenizer),
        progress=False,
        **kw,
    )


def _complete_looking(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".idx"))


@pytest.mark.parametrize("reason", list(BAD))
def test_fail_mode_names_file_line_reason_and_leaves_nothing(
    tmp_path, gimp_texts, bpe_tokenizer, reason
):
    path = _corpus(tmp_path, gimp_texts, BAD[reason])
    config = _config(tmp_path, [path], bpe_tokenizer, chunk_bytes=4000)
    with pytest.raises(PreprocessError, match=f"^{path}:6: {reason}: "):
        preprocess(config)
    out = tmp_path / "out"
    assert _complete_looking(out) == []
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # temporaries removed
    summary = json.loads(config.summary_path.read_text())
    assert summary["status"] == "failed" and f"{reason}" in summary["error"]


@pytest.mark.parametrize("reason", list(BAD))
def test_skip_mode_counts_by_reason(tmp_path, gimp_texts, bpe_tokenizer, reason):
    path = _corpus(tmp_path, gimp_texts, BAD[reason])
    config = _config(tmp_path, [path], bpe_tokenizer, on_error="skip", append_eod=True)
    summary = preprocess(config)
    assert summary["documents"] == 20 and summary["skipped_total"] == 1
    assert summary["skipped"][reason] == 1
    assert summary["skipped_examples"] == [summary["skipped_examples"][0]]
    assert summary["skipped_examples"][0].startswith(f"{path}:6: {reason}")
    prefix = config.dataset_prefix("text")
    assert validate_dataset(prefix) == [] and IndexedDatasetReader(prefix).num_documents == 20


def test_all_reasons_together_in_skip_mode(tmp_path, gimp_texts, bpe_tokenizer):
    lines = [json.dumps({"text": t}).encode() for t in gimp_texts[:3]] + list(BAD.values())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines * 2))
    summary = preprocess(_config(tmp_path, [path], bpe_tokenizer, on_error="skip"))
    assert summary["documents"] == 6
    assert {k: v for k, v in summary["skipped"].items() if v} == {k: 2 for k in BAD}


def test_100mb_document(tmp_path, gimp_texts, bpe_tokenizer):
    """A single 100 MB JSON line is refused by default (document_too_large) without reading it
    into memory: fail mode stops naming file and line; skip mode counts it and goes on."""
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps({"text": gimp_texts[0]}).encode() + b"\n")
        f.write(b'{"text": "')
        block = b"lorem ipsum " * 100_000
        for _ in range(88):  # 88 x 1.2 MB > 100 MB
            f.write(block)
        f.write(b'"}\n')
        f.write(json.dumps({"text": gimp_texts[1]}).encode() + b"\n")
    assert path.stat().st_size > 100 * 2**20
    start = time.time()
    with pytest.raises(PreprocessError, match=f"{path}:2: document_too_large: 105600012 bytes"):
        preprocess(_config(tmp_path, [path], bpe_tokenizer))
    assert _complete_looking(tmp_path / "out") == []
    summary = preprocess(_config(tmp_path, [path], bpe_tokenizer, on_error="skip"))
    assert summary["documents"] == 2 and summary["skipped"]["document_too_large"] == 1
    assert time.time() - start < 60


def test_interrupted_in_process_leaves_no_pair(tmp_path, gimp_jsonl, bpe_tokenizer, monkeypatch):
    calls = {"n": 0}
    real = pp.process_chunk

    def interrupt_on_third(chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(chunk)

    monkeypatch.setattr(pp, "process_chunk", interrupt_on_third)
    config = _config(tmp_path, [gimp_jsonl], bpe_tokenizer, chunk_bytes=10_000)
    with pytest.raises(KeyboardInterrupt):
        preprocess(config)
    out = tmp_path / "out"
    assert _complete_looking(out) == []
    assert [p.name for p in out.iterdir()] == ["ds_summary.json"]


def test_killed_process_leaves_no_pair(tmp_path, gimp_jsonl, smollm2_tokenizer_dir):
    """SIGKILL mid-run (no cleanup possible): only temporary names remain."""
    big = tmp_path / "big.jsonl"
    big.write_bytes(gimp_jsonl.read_bytes() * 60)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(REPO / "tools/preprocess/preprocess_data.py"),
        "--input", str(big), "--output-prefix", str(out / "ds"),
        "--tokenizer", str(smollm2_tokenizer_dir), "--backend", "hf",
        "--chunk-bytes", "20000", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.is_dir() and any(".bin.tmp-" in p.name for p in out.iterdir()):
                time.sleep(0.2)  # some chunks written
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _complete_looking(out) == []
    assert any(".bin.tmp-" in p.name for p in out.iterdir())


def test_corrupt_container_fails_in_skip_mode(tmp_path, gimp_jsonl, bpe_tokenizer):
    """A truncated .jsonl.gz is not a bad document: skip mode stops too, naming the file."""
    import gzip

    compressed = gzip.compress(gimp_jsonl.read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) * 3 // 4])
    config = _config(tmp_path, [path], bpe_tokenizer, on_error="skip", chunk_bytes=20_000)
    with pytest.raises(ContainerError, match=f"^{path}: corrupt or truncated gzip data"):
        preprocess(config)
    assert _complete_looking(tmp_path / "out") == []


@pytest.mark.parametrize("reason", ["malformed_json", "invalid_utf8"])
def test_fail_mode_with_workers(tmp_path, gimp_texts, bpe_tokenizer, capsys, reason):
    """--workers 2: the bad document is named, the CLI exits 1, no .bin/.idx pair is left."""
    path = _corpus(tmp_path, gimp_texts, BAD[reason])
    config = _config(tmp_path, [path], bpe_tokenizer, workers=2, chunk_bytes=4000)
    with pytest.raises(PreprocessError, match=f"^{path}:6: {reason}: "):
        preprocess(config)
    out = tmp_path / "out"
    assert _complete_looking(out) == [] and [p.name for p in out.iterdir()] == ["ds_summary.json"]
    argv = ["--input", str(path), "--output-prefix", str(out / "cli"), "--tokenizer"]
    argv += [str(bpe_tokenizer), "--workers", "2", "--chunk-bytes", "4000", "--no-progress"]
    assert preprocess_data.main(argv) == 1
    assert f"\nerror: {path}:6: {reason}: " in "\n" + capsys.readouterr().err  # after the log
    assert _complete_looking(out) == []


DIE = "THIS DOCUMENT KILLS ITS WORKER"


class _DyingTokenizer:
    """The real tokenizer, except that the process exits at once (os._exit: no cleanup, like a
    crash or the OOM killer) when it meets a document containing ``DIE``."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name == "encode_arrow":  # keep process_chunk on encode_batch
            raise AttributeError(name)
        return getattr(self._inner, name)

    def encode_batch(self, texts):
        if any(DIE in t for t in texts):
            os._exit(7)
        return self._inner.encode_batch(texts)


@dataclass(frozen=True)
class _DyingSpec(TokenizerSpec):
    """Pickled to the spawned workers by reference (``tests.data.test_preprocess_errors``)."""

    def build(self):
        return _DyingTokenizer(super().build())


def _inject_dying_tokenizer(monkeypatch):
    real = pp.load_tokenizer

    def load(*args, **kw):
        tok, spec, reason = real(*args, **kw)
        return tok, _DyingSpec(**asdict(spec)), reason

    monkeypatch.setattr(pp, "load_tokenizer", load)


def test_dead_worker_is_named_and_leaves_no_pair(
    tmp_path, gimp_texts, bpe_tokenizer, monkeypatch, capsys
):
    """A worker that dies (BrokenProcessPool) stops the run with its exit code and the chunk;
    no .bin/.idx pair, temporaries removed, summary "failed"; the CLI exits 1 saying so."""
    _inject_dying_tokenizer(monkeypatch)
    texts = list(gimp_texts[:60])
    texts[40] = texts[40] + " " + DIE
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = _config(tmp_path, [path], bpe_tokenizer, workers=2, chunk_bytes=10_000)
    with pytest.raises(PreprocessError, match="worker process died \\(exit code 7\\)") as info:
        preprocess(config)
    line = int(str(info.value).split(f"starting at {path}:")[1].split(" ")[0])
    assert line <= 41  # the chunk named is the one with the fatal document or an earlier one
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir()] == ["ds_summary.json"]
    summary = json.loads(config.summary_path.read_text())
    assert summary["status"] == "failed" and "exit code 7" in summary["error"]

    argv = ["--input", str(path), "--output-prefix", str(out / "cli"), "--tokenizer"]
    argv += [str(bpe_tokenizer), "--workers", "2", "--chunk-bytes", "10000", "--no-progress"]
    assert preprocess_data.main(argv) == 1
    err = capsys.readouterr().err
    assert "\nerror: a worker process died (exit code 7) while the chunk starting at" in err
    assert _complete_looking(out) == []
    # the same corpus without the fatal document goes through the same workers
    texts[40] = gimp_texts[40]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert preprocess(config)["documents"] == 60

"""The preprocessing pipeline: round trips, determinism, backends, sentences, summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_lang.data.indexed import IndexedDatasetReader, validate_dataset
from megatron_lang.data.preprocess import PreprocessConfig, preprocess
from megatron_lang.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.unit


def run(tmp_path, inputs, tokenizer, name="out", **kw) -> tuple[dict, PreprocessConfig]:
    config = PreprocessConfig(
        inputs=[str(p) for p in inputs],
        output_prefix=str(tmp_path / name),
        tokenizer=str(tokenizer),
        progress=False,
        **kw,
    )
    return preprocess(config), config


def files_of(prefix) -> tuple[bytes, bytes]:
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def test_round_trip_smollm2_with_eod_and_bos(
    tmp_path, gimp_jsonl, gimp_texts, smollm2_tokenizer_dir
):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    summary, config = run(
        tmp_path, [gimp_jsonl], smollm2_tokenizer_dir, append_eod=True, add_bos=True
    )
    prefix = config.dataset_prefix("text")
    assert prefix.endswith("out_text_document")
    assert summary["backend"] == "hf" and "gigatoken cannot load it" in summary["backend_reason"]
    assert summary["documents"] == len(gimp_texts) and summary["skipped_total"] == 0
    assert summary["dtype"] == "uint16" and summary["status"] == "ok"
    assert validate_dataset(prefix, vocab_size=49152) == []
    tok, _, _ = load_tokenizer(smollm2_tokenizer_dir, backend="hf")
    reader = IndexedDatasetReader(prefix)
    assert reader.num_documents == len(gimp_texts)
    for d, text in enumerate(gimp_texts):
        ids = reader.document(d)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eod_id
        assert tok.decode(ids[1:-1]) == text
    ds = IndexedDataset(prefix)
    assert len(ds) == len(gimp_texts)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i], reader.sequence(i))
    assert summary["tokens"] == sum(len(ds[i]) for i in range(len(ds)))


def test_round_trip_sentencepiece_both_backends(tmp_path, gimp_jsonl, gimp_texts, sp_model):
    outputs = {}
    for backend in ("sentencepiece", "auto"):
        summary, config = run(
            tmp_path, [gimp_jsonl], sp_model, name=backend, backend=backend, append_eod=True
        )
        outputs[summary["backend"]] = files_of(config.dataset_prefix("text"))
        reader = IndexedDatasetReader(config.dataset_prefix("text"))
    assert set(outputs) == {"sentencepiece", "gigatoken"}
    assert outputs["sentencepiece"] == outputs["gigatoken"]
    tok, _, _ = load_tokenizer(sp_model, backend="sentencepiece")
    for d, text in enumerate(gimp_texts):
        ids = reader.document(d)
        assert ids[-1] == tok.eod_id
        assert tok.decode(ids[:-1]) == text


def test_gigatoken_and_tokenizers_backends_identical(tmp_path, gimp_jsonl, bpe_tokenizer):
    results = {}
    for backend in ("hf", "gigatoken"):
        summary, config = run(tmp_path, [gimp_jsonl], bpe_tokenizer, name=backend, backend=backend)
        assert summary["backend"] == backend
        results[backend] = files_of(config.dataset_prefix("text"))
    assert results["hf"] == results["gigatoken"]


def test_one_and_two_workers_byte_identical(tmp_path, gimp_jsonl, bpe_tokenizer):
    outputs = []
    for workers in (1, 2):
        summary, config = run(
            tmp_path,
            [gimp_jsonl],
            bpe_tokenizer,
            name=f"w{workers}",
            workers=workers,
            json_keys=["text", "title"],
            append_eod=True,
            chunk_bytes=20_000,  # many chunks, so the two workers interleave
        )
        assert summary["status"] == "ok"
        outputs.append([files_of(config.dataset_prefix(k)) for k in ("text", "title")])
        summary_text = (tmp_path / f"w{workers}_summary.json").read_text()
        assert json.loads(summary_text)["outputs"]["title"]["documents"] == 75
    assert outputs[0] == outputs[1]


def test_split_sentences_keeps_documents(tmp_path, gimp_jsonl, gimp_texts, bpe_tokenizer):
    from megatron_lang.data.sentences import SentenceSplitter, load_params

    params = tmp_path / "punkt.json"
    summary, config = run(
        tmp_path,
        [gimp_jsonl],
        bpe_tokenizer,
        split_sentences=True,
        punkt_params=str(params),
        append_eod=True,
        punkt_train_chars=300_000,
    )
    prefix = config.dataset_prefix("text")
    assert prefix.endswith("_text_sentence") and params.is_file()
    assert summary["punkt_params"] == str(params)
    tok, _, _ = load_tokenizer(bpe_tokenizer, backend="hf")
    splitter = SentenceSplitter(load_params(params))
    reader = IndexedDatasetReader(prefix)
    assert reader.num_documents == len(gimp_texts)
    assert len(reader) > 3 * len(gimp_texts)  # really split
    for d, text in enumerate(gimp_texts):
        sentences = reader.document_sequences(d)
        expected = splitter.split(text)
        assert len(sentences) == len(expected)
        assert sentences[-1][-1] == tok.eod_id
        decoded = [tok.decode(s) for s in sentences[:-1]] + [tok.decode(sentences[-1][:-1])]
        assert decoded == expected and "".join(decoded) == text
    before = files_of(prefix)
    _, config = run(  # the saved parameters are loaded, not retrained: same output
        tmp_path, [gimp_jsonl], bpe_tokenizer, split_sentences=True, punkt_params=str(params),
        append_eod=True, punkt_train_chars=10,
    )  # fmt: skip
    assert files_of(prefix) == before


def test_summary_fields(tmp_path, gimp_jsonl, bpe_tokenizer):
    summary, config = run(tmp_path, [gimp_jsonl], bpe_tokenizer)
    on_disk = json.loads(config.summary_path.read_text())
    assert on_disk["documents"] == summary["documents"] == 75
    for key in ("tokens", "skipped", "tokenizer", "backend", "seconds", "tokens_per_second"):
        assert key in on_disk
    assert on_disk["tokenizer"] == str(bpe_tokenizer)
    assert on_disk["input_bytes"] == gimp_jsonl.stat().st_size
    assert on_disk["outputs"]["text"]["tokens"] == on_disk["tokens"]
    assert set(on_disk["skipped"]) >= {"malformed_json", "invalid_utf8", "document_too_large"}


def test_no_eod_token_is_an_error(tmp_path, gimp_jsonl, bpe_tokenizer):
    from megatron_lang.data.preprocess import PreprocessError

    data = json.loads(bpe_tokenizer.read_text())
    data["added_tokens"] = []
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if "|" not in k}
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    with pytest.raises(PreprocessError, match="no EOD token"):
        run(tmp_path, [gimp_jsonl], bare, append_eod=True, backend="hf")


def test_mixed_formats_in_one_run(tmp_path, gimp_jsonl, gimp_texts, bpe_tokenizer):
    """gz + zst + parquet + a folder of .txt (+ an empty file) in one run, in input order."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    lines = gimp_jsonl.read_bytes().splitlines(keepends=True)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[:10])))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.compress(b"".join(lines[10:20])))
    pq.write_table(pa.table({"text": gimp_texts[20:30]}), tmp_path / "c.parquet")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, text in enumerate(gimp_texts[30:40]):
        (txt / f"{i:02d}.txt").write_text(text)
    inputs = ["a.jsonl.gz", "b.jsonl.zst", "c.parquet", "empty.jsonl", "txt"]
    summary, config = run(tmp_path, [tmp_path / p for p in inputs], bpe_tokenizer, name="mixed")
    assert summary["documents"] == 40 and summary["skipped_total"] == 0
    tok, _, _ = load_tokenizer(bpe_tokenizer, backend="hf")
    reader = IndexedDatasetReader(config.dataset_prefix("text"))
    assert [tok.decode(reader.document(d)) for d in range(40)] == gimp_texts[:40]

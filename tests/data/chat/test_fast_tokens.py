"""The fast encoder (gigatoken ids, byte offsets) gives exactly HF's ids and masks, or is not used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_lang.data.chat.formats import Message
from megatron_lang.data.chat.preprocess import ChatDataConfig, PreprocessError, choose_backend
from megatron_lang.data.chat.render import ChatRenderer, resolve_template
from megatron_lang.data.chat.tokens import ByteLevelEncoder, same_encoding

pytestmark = pytest.mark.unit

SYSTEM = "Svar kort og på dansk 🇩🇰."
# (user, answer) turns: Danish letters, emoji (split across tokens), CJK, whitespace runs,
# answers starting mid-word after non-ASCII text, and a control byte SmolLM2 lacks.
TURNS = [
    ("Hvad betyder «rødgrød med fløde»?", "En dansk ret: rødgrød med fløde. Æ, Ø og Å! 👍🏽"),
    ("Oversæt: 日本語 og Ωμέγα", "japansk og omega — “citat” … ½ ≠ ∑"),
    ("  mellemrum \t og\n\nlinjer  ", "\n  indrykket:\n    def f(x):\r\n        return x  \n"),
    ("æøå" * 40, "ÆØÅ" * 40 + "🎉" * 5),
]
CONTROL = ("control \x04 byte", "svar med \x06 og \x1d")  # HF drops these bytes


def _conversations() -> list[list[Message]]:
    out = []
    for k, (user, answer) in enumerate(TURNS):
        out.append([Message("user", user), Message("assistant", answer)])
        out.append([Message("system", SYSTEM), Message("user", user), Message("assistant", answer)])
        nxt = TURNS[(k + 1) % len(TURNS)]
        out.append(
            [Message("user", user), Message("assistant", answer)]
            + [Message("user", nxt[0]), Message("assistant", nxt[1])]
        )
    out.append([Message("user", CONTROL[0]), Message("assistant", CONTROL[1])])
    out.append([Message("user", "plain"), Message("assistant", "answer with \x04 inside")])
    return out


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _cases(smollm2_tokenizer_dir, llama3_tokens_dir):
    """(tokenizer folder, template) pairs of the conftest that the fast encoder accepts."""
    return [
        (smollm2_tokenizer_dir, "auto"),
        (smollm2_tokenizer_dir, "chatml"),
        (llama3_tokens_dir, "llama3"),
    ]


@pytest.mark.parametrize("loss_mode", ["assistant", "last_turn", "full"])
def test_fast_path_is_byte_identical_to_hf(loss_mode, smollm2_tokenizer_dir, llama3_tokens_dir):
    conversations = _conversations()
    n_control = 2
    for path, name in _cases(smollm2_tokenizer_dir, llama3_tokens_dir):
        tok = _tokenizer(path)
        template = resolve_template(tok, name)
        reference = ChatRenderer(tok, template, loss_mode)
        fast = ChatRenderer(tok, template, loss_mode, fast=ByteLevelEncoder(tok.backend_tokenizer))
        rendered = [reference.render(m) for m in conversations]
        # Byte and character offsets differ in (almost) every conversation here: the test
        # exercises the conversion of the spans, not just ASCII.
        assert sum(len(r.text.encode()) != len(r.text) for r in rendered) >= len(rendered) - 3
        hf = reference.encode_flat(rendered)
        got = fast.encode_flat(rendered)
        assert same_encoding(got, hf) is None, (name, loss_mode, same_encoding(got, hf))
        assert np.array_equal(got.ids, hf.ids) and np.array_equal(got.mask, hf.mask)
        assert got.mask.dtype == hf.mask.dtype == np.uint8
        # The control-byte conversations went to HF; every other one came from gigatoken.
        assert fast.fallbacks == n_control
        alone = fast.fast.encode([r.text for r in rendered], [r.spans for r in rendered])[1]
        assert alone.tolist() == [len(rendered) - 2, len(rendered) - 1]
        # Per-conversation view (what the tests of render.py read) agrees too.
        for a, b in zip(fast.encode(rendered), reference.encode(rendered)):
            assert np.array_equal(a.ids, b.ids) and np.array_equal(a.mask, b.mask)
            assert (a.straddling, a.turn_ends) == (b.straddling, b.turn_ends)


def test_a_wrong_byte_offset_is_caught(smollm2_tokenizer_dir, monkeypatch):
    """Spans converted to bytes off by one byte must give a different mask (the test above
    would fail): the comparison is sensitive to the char → byte conversion."""
    tok = _tokenizer(smollm2_tokenizer_dir)
    template = resolve_template(tok, "auto")
    reference = ChatRenderer(tok, template)
    encoder = ByteLevelEncoder(tok.backend_tokenizer)
    fast = ChatRenderer(tok, template, fast=encoder)
    rendered = [reference.render(m) for m in _conversations()]
    assert same_encoding(fast.encode_flat(rendered), reference.encode_flat(rendered)) is None
    shifted = [type(r)(r.text, [(s + 1, e) for s, e in r.spans]) for r in rendered]
    assert same_encoding(fast.encode_flat(shifted), reference.encode_flat(rendered)) is not None


def test_auto_picks_gigatoken_for_byte_level_and_hf_otherwise(
    tmp_path, smollm2_tokenizer_dir, mistral_hf_dir
):
    src = tmp_path / "in.jsonl"
    records = [{"messages": [{"role": r, "content": c} for r, c in zip(("user", "assistant"), t)]}
               for t in TURNS]  # fmt: skip
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")

    def choose(path, template, backend):
        tok = _tokenizer(path)
        config = ChatDataConfig([str(src)], str(tmp_path / "out"), str(path), backend=backend)
        return choose_backend(tok, resolve_template(tok, template), config, [src])

    fast, reason = choose(smollm2_tokenizer_dir, "auto", "auto")
    assert fast is not None and "matched HF" in reason
    assert choose(smollm2_tokenizer_dir, "auto", "hf") == (None, "hf requested")
    for name in ("llama2", "mistral"):  # SentencePiece-style BPE: no fixed bytes per id
        fast, reason = choose(mistral_hf_dir, name, "auto")
        assert fast is None and "using hf" in reason
        with pytest.raises(PreprocessError, match="--backend gigatoken"):
            choose(mistral_hf_dir, name, "gigatoken")


def test_cli_backends_write_identical_files(tmp_path, smollm2_tokenizer_dir):
    from tools.preprocess import preprocess_chat

    src = tmp_path / "in.jsonl"
    lines = []
    for conv in _conversations() * 3:
        lines.append(
            json.dumps({"messages": [{"role": m.role, "content": m.content} for m in conv]})
        )
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reports = {}
    for backend in ("hf", "auto"):
        out = tmp_path / backend
        args = [
            "--input",
            str(src),
            "--output",
            str(out),
            "--tokenizer",
            str(smollm2_tokenizer_dir),
        ]
        assert preprocess_chat.main(args + ["--backend", backend, "--no-progress"]) == 0
        reports[backend] = json.loads((out / "report.json").read_text())
    assert reports["hf"]["backend"]["name"] == "hf"
    assert reports["auto"]["backend"]["name"] == "gigatoken"
    assert reports["auto"]["backend"]["conversations_on_hf"] == 6
    for name in ("chat.bin", "chat.idx", "chat_lossmask.bin", "chat_lossmask.idx"):
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "auto" / name).read_bytes()
    for key in ("tokens", "packing", "straddling_tokens", "last_trained_token_counts"):
        assert reports["hf"][key] == reports["auto"][key]

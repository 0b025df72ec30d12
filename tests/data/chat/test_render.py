"""Answer-only loss masks, token by token, for every supported template."""

from __future__ import annotations

import pytest

from megatron_lang.data.chat.formats import Message
from megatron_lang.data.chat.render import ChatRenderer, TemplateError, resolve_template

pytestmark = pytest.mark.unit

SYSTEM = "Svar kort og på dansk."
TURNS = [("Hvad er en pakke?", "En samling filer."), ("Og en sektion?", "En gruppe af pakker.")]

# What each template makes of the conversation: the trained text of each answer (answer +
# end of turn, with the template's own spacing), written out by hand; and the generation
# prompt, which must never be trained.
EXPECTED = {
    "chatml": (
        ["En samling filer.<|im_end|>", "En gruppe af pakker.<|im_end|>"],
        "<|im_start|>assistant\n",
    ),
    "llama2": ([" En samling filer. </s>", " En gruppe af pakker. </s>"], " [/INST]"),
    "mistral": ([" En samling filer.</s>", " En gruppe af pakker.</s>"], " [/INST]"),
    "llama3": (
        ["En samling filer.<|eot_id|>", "En gruppe af pakker.<|eot_id|>"],
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
}


def _conversation(system: bool = True, pad: str = "") -> list[Message]:
    out = [Message("system", SYSTEM)] if system else []
    for user, answer in TURNS:
        out += [Message("user", user), Message("assistant", pad + answer + pad)]
    return out


def _tokenizer(name, smollm2_tokenizer_dir, mistral_hf_dir, llama3_tokens_dir):
    from transformers import AutoTokenizer

    path = {"chatml": smollm2_tokenizer_dir, "llama3": llama3_tokens_dir}.get(name, mistral_hf_dir)
    return AutoTokenizer.from_pretrained(path)


def _token_texts(renderer, rendered):
    enc = renderer.backend.encode(rendered.text, add_special_tokens=False)
    return enc, [rendered.text[s:e] for s, e in enc.offsets]


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("system", [True, False])
def test_answer_mask_token_by_token(
    name, system, smollm2_tokenizer_dir, mistral_hf_dir, llama3_tokens_dir
):
    tok = _tokenizer(name, smollm2_tokenizer_dir, mistral_hf_dir, llama3_tokens_dir)
    renderer = ChatRenderer(tok, resolve_template(tok, name), "assistant", verify_every=1)
    messages = _conversation(system, pad=" " if name == "llama3" else "")
    rendered = renderer.render(messages)
    # The text is exactly what transformers renders with this template.
    dicts = [{"role": m.role, "content": m.content} for m in messages]
    assert rendered.text == tok.apply_chat_template(
        dicts, chat_template=renderer.template.jinja, tokenize=False
    )
    (enc,) = renderer.encode([rendered])
    assert enc.ids.tolist() == tok(rendered.text, add_special_tokens=False).input_ids
    _, texts = _token_texts(renderer, rendered)
    mask = enc.mask.astype(bool)
    assert mask.any() and not mask.all()
    answers, generation_prompt = EXPECTED[name]
    # Trained tokens, grouped into runs, spell exactly each answer and its end of turn.
    runs, current = [], ""
    for text, trained in zip(texts, mask):
        if trained:
            current += text
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    assert [r.strip(" ") for r in runs] == [a.strip(" ") for a in answers]
    # The end-of-turn token is the last trained token of every answer.
    eot = renderer.end_of_turn_id
    ends = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
    assert [int(enc.ids[i]) for i in ends] == [eot, eot]
    assert tok.convert_ids_to_tokens(eot) == {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}.get(
        name, "</s>"
    )
    # System text, user text and the generation prompt are never trained.
    untrained = "".join(t for t, m in zip(texts, mask) if not m)
    for user, _ in TURNS:
        assert user in untrained
    if system:
        assert SYSTEM in untrained
    assert untrained.count(generation_prompt.strip()) >= 2
    assert enc.straddling == 0


@pytest.mark.parametrize("name", list(EXPECTED))
def test_last_turn_and_full_modes(name, smollm2_tokenizer_dir, mistral_hf_dir, llama3_tokens_dir):
    tok = _tokenizer(name, smollm2_tokenizer_dir, mistral_hf_dir, llama3_tokens_dir)
    template = resolve_template(tok, name)
    messages = _conversation()
    answer = ChatRenderer(tok, template, "assistant").encode(
        [ChatRenderer(tok, template, "assistant").render(messages)]
    )[0]
    r_last = ChatRenderer(tok, template, "last_turn")
    last = r_last.encode([r_last.render(messages)])[0]
    r_full = ChatRenderer(tok, template, "full")
    full = r_full.encode([r_full.render(messages)])[0]
    assert (last.ids == answer.ids).all() and (full.ids == answer.ids).all()
    assert full.mask.all()
    # last_turn trains the second answer's tokens only: a suffix of the assistant mask.
    first_end = int(answer.mask.nonzero()[0][0])
    assert not last.mask[: first_end + 1].any()
    assert (last.mask <= answer.mask).all() and 0 < last.mask.sum() < answer.mask.sum()
    assert last.mask.nonzero()[0][-1] == answer.mask.nonzero()[0][-1]


def test_tokenizers_own_template_matches_jinja(smollm2_tokenizer_dir):
    """SmolLM2's own template (ChatML with a default system prompt when there is none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    renderer = ChatRenderer(tok, resolve_template(tok, "auto"), verify_every=1)
    for system in (True, False):
        messages = _conversation(system)
        rendered = renderer.render(messages)
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        assert rendered.text == tok.apply_chat_template(dicts, tokenize=False)
        assert [rendered.text[s:e] for s, e in rendered.spans] == EXPECTED["chatml"][0]
        assert ("You are a helpful AI assistant" in rendered.text) is not system
    assert tok.convert_ids_to_tokens(renderer.end_of_turn_id) == "<|im_end|>"


def test_refusals(smollm2_tokenizer_dir, mistral_hf_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mistral_hf_dir)
    with pytest.raises(TemplateError, match="has no chat template"):
        resolve_template(tok, "auto")
    with pytest.raises(TemplateError, match="needs the special tokens <\\|im_start\\|>"):
        resolve_template(tok, "chatml")
    with pytest.raises(TemplateError, match="unknown chat template 'vicuna'"):
        resolve_template(tok, "vicuna")
    # Not prefix-preserving: the system prompt moves into the last user turn.
    moving = (
        "{%- for m in messages %}{%- if m['role'] == 'user' %}[INST] "
        "{%- if loop.last or loop.revindex == 2 %}{{ messages[0]['content'] if "
        "messages[0]['role'] == 'system' else '' }} {% endif %}{{ m['content'] }} [/INST]"
        "{%- elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{%- endif %}"
        "{%- endfor %}"
    )
    from megatron_lang.data.chat.render import ResolvedTemplate

    renderer = ChatRenderer(tok, ResolvedTemplate("moving-system", moving, None))
    with pytest.raises(TemplateError, match="'moving-system' is not prefix-preserving"):
        renderer.render(_conversation())
    # A template with nothing after an answer has no end-of-turn token to stop on.
    bare = "{%- for m in messages %}{{ m['role'] }}: {{ m['content'] }}{%- endfor %}"
    renderer = ChatRenderer(tok, ResolvedTemplate("bare", bare, None))
    with pytest.raises(TemplateError, match="writes nothing after an answer"):
        renderer.render(_conversation(False))


def test_content_dependent_template_is_caught(smollm2_tokenizer_dir):
    """A template that treats some contents specially differs from its shape: refused."""
    from transformers import AutoTokenizer

    from megatron_lang.data.chat.render import ResolvedTemplate

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    tricky = (
        "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{%- if 'pakke' in m['content'] %}[pakke] {% endif %}{{ m['content'] }}<|im_end|>\n"
        "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    renderer = ChatRenderer(tok, ResolvedTemplate("tricky", tricky, None), verify_every=1)
    plain = [Message("user", "Hej"), Message("assistant", "Dav")]
    renderer.render(plain)
    with pytest.raises(TemplateError, match="--exact-render"):
        renderer.render([Message("user", "Hvad er en pakke?"), Message("assistant", "Filer")])
    exact = ChatRenderer(tok, ResolvedTemplate("tricky", tricky, None), exact=True)
    rendered = exact.render([Message("user", "Hvad er en pakke?"), Message("assistant", "Filer")])
    assert [rendered.text[s:e] for s, e in rendered.spans] == ["Filer<|im_end|>"]

"""Named chat templates, for base models whose tokenizer has none.

Each is written out here as Jinja, in the form that ``tokenizer.apply_chat_template``
renders, so that the exported tokenizer carries exactly the template the model was
trained on.  They follow the published prompt formats:

* ``llama2``: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>``,
  a ``<s>`` before every user turn (Llama-2-chat).
* ``mistral``: ``<s>[INST] {system}\\n\\n{user} [/INST] {answer}</s>``, one ``<s>`` at the
  start (Mistral-7B-Instruct v0.1/v0.2 style; the system prompt joins the first user turn).
* ``llama3``: ``<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``
  (contents trimmed, as Llama-3-Instruct's template does).
* ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` (SmolLM2, Qwen, …).

``end_of_turn`` is the text that closes an answer; it must be one token of the tokenizer
(checked when the template is resolved), since generation stops on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    jinja: str
    end_of_turn: str  # literal text, or "{eos}" for the tokenizer's EOS token
    needs: tuple[str, ...]  # literal special tokens the tokenizer must have as single tokens


_LLAMA2 = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = none %}{%- set turns = messages %}{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system is not none %}"
    "{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + ' ' + eos_token }}"
    "{%- else %}{{- raise_exception('unknown role ' + message['role']) }}{%- endif %}"
    "{%- endfor %}"
)

_MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = none %}{%- set turns = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system is not none %}"
    "{{- '[INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('unknown role ' + message['role']) }}{%- endif %}"
    "{%- endfor %}"
)

_LLAMA3 = (
    "{{- '<|begin_of_text|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim }}{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

NAMED_TEMPLATES: dict[str, NamedTemplate] = {
    "llama2": NamedTemplate("llama2", _LLAMA2, "{eos}", ()),
    "mistral": NamedTemplate("mistral", _MISTRAL, "{eos}", ()),
    "llama3": NamedTemplate(
        "llama3",
        _LLAMA3,
        "<|eot_id|>",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "chatml": NamedTemplate("chatml", _CHATML, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
}

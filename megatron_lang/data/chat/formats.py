"""Chat records in the formats users bring, normalised to one list of messages.

Accepted JSON objects (one per JSONL line):

* OpenAI / HF ``messages``: ``{"messages": [{"role": "user", "content": "..."}, ...]}``
* ShareGPT ``conversations``: ``{"conversations": [{"from": "human", "value": "..."}, ...],
  "system": "..."}`` (``system`` optional; ``from`` is human/user, gpt/assistant/model/bot,
  system)
* Alpaca: ``{"instruction": "...", "input": "...", "output": "...", "system": "..."}``
  (``input`` and ``system`` optional; a non-empty ``input`` follows the instruction after a
  blank line)
* ``prompt`` / ``completion``: ``{"prompt": "...", "completion": "..."}`` (strings), or
  lists of messages as TRL's conversational prompt-completion format has them

A conversation is valid when it is an optional leading system message, then user and
assistant messages alternating, starting with a user message and ending with an assistant
message, every content a non-empty string (a system message may be empty). Anything else
raises :class:`ChatRecordError` with the reason; the caller adds file and line.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion")


class ChatRecordError(ValueError):
    """A record that is not a valid conversation; ``reason`` is a short category for counts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def detect_format(record: dict) -> str:
    """The format of one record, by its keys."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    raise ChatRecordError(
        "missing keys",
        f"no 'messages', 'conversations', 'instruction'+'output' or 'prompt'+'completion' "
        f"key (keys: {', '.join(sorted(record)) or 'none'})",
    )


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ChatRecordError("not a string", f"{where} is {type(value).__name__}, not a string")
    return value


def _message_list(items: object, where: str, role_key: str, text_key: str, roles: dict) -> list:
    if not isinstance(items, list):
        raise ChatRecordError("not a list", f"'{where}' is {type(items).__name__}, not a list")
    out = []
    for i, item in enumerate(items):
        if type(item) is dict:  # the usual case, checked with the fewest steps
            role = item.get(role_key)
            text = item.get(text_key)
            known = roles.get(role) if type(role) is str else None
            if known is not None and type(text) is str:
                out.append(Message(known, text))
                continue
        if not isinstance(item, dict):
            raise ChatRecordError("not an object", f"{where}[{i}] is not an object")
        if role_key not in item:
            raise ChatRecordError("missing keys", f"{where}[{i}] has no '{role_key}'")
        if text_key not in item:
            raise ChatRecordError("missing keys", f"{where}[{i}] has no '{text_key}'")
        role = item[role_key]
        if not isinstance(role, str) or role.lower() not in roles:
            raise ChatRecordError(
                "unknown role",
                f"{where}[{i}].{role_key} = {role!r} (known: {', '.join(sorted(roles))})",
            )
        out.append(Message(roles[role.lower()], _text(item[text_key], f"{where}[{i}].{text_key}")))
    return out


def normalise(record: object, fmt: str = "auto") -> list[Message]:
    """The messages of one record, validated.

    Raises:
        ChatRecordError: the record is no valid conversation (``reason`` says why).
    """
    if not isinstance(record, dict):
        raise ChatRecordError("not an object", f"the line is a JSON {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record)
    identity = {r: r for r in ROLES}
    if fmt == "messages":
        if "messages" not in record:
            raise ChatRecordError("missing keys", "no 'messages' key")
        messages = _message_list(record["messages"], "messages", "role", "content", identity)
    elif fmt == "sharegpt":
        if "conversations" not in record:
            raise ChatRecordError("missing keys", "no 'conversations' key")
        messages = _message_list(
            record["conversations"], "conversations", "from", "value", _SHAREGPT_ROLES
        )
        if record.get("system") is not None:
            if messages and messages[0].role == "system":
                raise ChatRecordError(
                    "turn order", "a top-level 'system' and a system turn in 'conversations'"
                )
            messages.insert(0, Message("system", _text(record["system"], "system")))
    elif fmt == "alpaca":
        for key in ("instruction", "output"):
            if key not in record:
                raise ChatRecordError("missing keys", f"no '{key}' key")
        prompt = _text(record["instruction"], "instruction")
        extra = record.get("input")
        if extra is not None and _text(extra, "input").strip():
            prompt = f"{prompt}\n\n{extra}"
        messages = [
            Message("user", prompt),
            Message("assistant", _text(record["output"], "output")),
        ]
        if record.get("system") is not None:
            messages.insert(0, Message("system", _text(record["system"], "system")))
    elif fmt == "prompt_completion":
        for key in ("prompt", "completion"):
            if key not in record:
                raise ChatRecordError("missing keys", f"no '{key}' key")
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, list):
            messages = _message_list(prompt, "prompt", "role", "content", identity)
        else:
            messages = [Message("user", _text(prompt, "prompt"))]
        if isinstance(completion, list):
            messages += _message_list(completion, "completion", "role", "content", identity)
        else:
            messages.append(Message("assistant", _text(completion, "completion")))
    else:
        raise ValueError(f"unknown chat format {fmt!r} (known: {', '.join(FORMATS)})")
    check_turns(messages)
    return messages


def _visible(text: str) -> bool:
    """Whether ``text`` has a character that is neither whitespace nor a format character."""
    if text.lstrip()[:1].isalnum():  # the usual case; letters and digits are never Cf
        return True
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def check_turns(messages: list[Message]) -> None:
    """Optional system first, then user/assistant alternating, ending with the assistant."""
    if not messages:
        raise ChatRecordError("empty conversation", "no messages")
    body = messages[1:] if messages[0].role == "system" else messages
    if not body:
        raise ChatRecordError("empty conversation", "only a system message")
    for i, message in enumerate(body):
        index = i + (len(messages) - len(body))
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            raise ChatRecordError(
                "turn order",
                f"message {index} is {message.role!r} where {expected!r} was expected "
                f"(roles: {' '.join(m.role for m in messages)}; a system message may only come "
                f"first, then user and assistant alternate)",
            )
        if not _visible(message.content):
            what = "empty answer" if message.role == "assistant" else "empty prompt"
            raise ChatRecordError(what, f"message {index} ({message.role}) is empty")
    if body[-1].role != "assistant":
        raise ChatRecordError(
            "turn order", f"the conversation ends with a {body[-1].role!r} message, not an answer"
        )

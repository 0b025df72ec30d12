"""Conversations → text, trained character spans → tokens and a per-token loss mask.

Which tokens are the assistant's is derived from the template itself, without
``{% generation %}`` markers (which Llama's, Mistral's and most shipped templates lack):
for the assistant message at index ``i``

* ``A_i`` = the render of ``messages[:i]`` with the generation prompt,
* ``B_i`` = the render of ``messages[:i+1]``,

and the trained text of that turn is ``B_i[len(A_i):]`` — the answer and the template's
end-of-turn text — minus trailing whitespace after the end-of-turn (the separator before
the next turn).  This needs the template to be *prefix-preserving*: ``A_i`` is a prefix
of ``B_i`` and ``B_i`` a prefix of the whole conversation's render.  Templates that are
not (for example ones that move the system prompt into the last user turn) are refused,
naming the template and the turn, before anything is written.

Rendering Jinja for every prefix of every conversation is what makes other tools slow.
Here a template is rendered once per *shape* (the sequence of roles) with placeholder
contents; that gives the literal text between contents and where each trained span
starts and ends, and every conversation of that shape is then filled in with plain
string joins.  Templates that transform contents are handled when the transformation is
``trim`` (detected by rendering padded placeholders); anything else that depends on the
content is caught by re-rendering with Jinja a sample of conversations (the first few of
every shape and every ``verify_every``-th) and comparing text and spans: a mismatch is
refused with the advice to use ``exact=True`` (Jinja for every conversation).

Tokens come from the tokenizer's Rust backend on the whole rendered text (with
``add_special_tokens=False``: the template writes BOS itself), so the ids are exactly
those of ``tokenizer(apply_chat_template(...))``; a token is trained when its first
character lies in a trained span.  For byte-level BPE tokenizers the same ids and masks
come several times faster from gigatoken and byte offsets (:mod:`.tokens`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from megatron_lang.data.chat.formats import Message
from megatron_lang.data.chat.templates import NAMED_TEMPLATES
from megatron_lang.data.chat.tokens import ByteLevelEncoder, FlatEncoding, splice

LOSS_MODES = ("assistant", "last_turn", "full")
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters around placeholder numbers


class TemplateError(ValueError):
    """A chat template that cannot give a correct loss mask (or cannot be used at all)."""


@dataclass(frozen=True)
class ResolvedTemplate:
    """The template text, its name for messages, and the text that ends an answer."""

    name: str
    jinja: str
    end_of_turn: str | None  # None: learned from the template (the tokenizer's own)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jinja.encode()).hexdigest()[:16]


def resolve_template(tokenizer, template: str = "auto") -> ResolvedTemplate:
    """``auto``: the tokenizer's own template; a name of :data:`NAMED_TEMPLATES`; or a
    path to a ``.jinja`` file.

    Raises:
        TemplateError: ``auto`` with a tokenizer without template, an unknown name, or a
            named template whose special tokens the tokenizer lacks.
    """
    if template == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise TemplateError(
                f"tokenizer {tokenizer.name_or_path!r} has no chat template: pass one of "
                f"{', '.join(NAMED_TEMPLATES)} (--template NAME) or a .jinja file"
            )
        if not isinstance(own, str):
            raise TemplateError(
                f"tokenizer {tokenizer.name_or_path!r} has several named chat templates "
                f"({', '.join(own)}): pass the one to train on as a .jinja file"
            )
        return ResolvedTemplate("tokenizer's own", own, None)
    if template in NAMED_TEMPLATES:
        named = NAMED_TEMPLATES[template]
        vocab = tokenizer.get_vocab()
        missing = [t for t in named.needs if t not in vocab]
        if missing:
            raise TemplateError(
                f"template {template!r} needs the special tokens {', '.join(missing)}, which "
                f"tokenizer {tokenizer.name_or_path!r} does not have as single tokens: add "
                f"them (tools/preprocess/extend_vocab.py) or choose another template"
            )
        eot = tokenizer.eos_token if named.end_of_turn == "{eos}" else named.end_of_turn
        if not eot:
            raise TemplateError(
                f"template {template!r} ends answers with the EOS token, and tokenizer "
                f"{tokenizer.name_or_path!r} has none"
            )
        return ResolvedTemplate(template, named.jinja, eot)
    path = Path(template)
    if path.suffix == ".jinja" and path.is_file():
        return ResolvedTemplate(str(path), path.read_text(encoding="utf-8"), None)
    raise TemplateError(
        f"unknown chat template {template!r}: use auto, {', '.join(NAMED_TEMPLATES)}, "
        f"or the path of a .jinja file"
    )


@dataclass
class _Skeleton:
    """One conversation shape: literal parts around content slots, span boundaries."""

    parts: list  # str (literal) or int (message index)
    spans: list[tuple[tuple[int, int], tuple[int, int]]]  # ((part, offset), (part, offset))
    strip: bool


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # trained character ranges [start, end)


@dataclass
class Encoded:
    """One tokenised conversation."""

    ids: np.ndarray  # int64
    mask: np.ndarray  # uint8, 1 where the token is a trained target
    straddling: int  # tokens that begin before a trained span and end inside it
    turn_ends: list[int] = field(default_factory=list)  # id of the last trained token per span


def _dicts(messages: list[Message]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


class ChatRenderer:
    """Renders conversations with one template and loss mode; see the module docstring.

    Args:
        tokenizer: a transformers fast tokenizer (for the Jinja environment and the ids).
        template: what :func:`resolve_template` returned.
        loss_mode: ``assistant`` (every answer and its end-of-turn), ``last_turn`` (the last
            answer only), ``full`` (every token, prompt included: SnakModel's setting).
        exact: render every conversation with Jinja (slow; for templates the shape cache
            cannot follow).
        verify_every: re-render every n-th conversation of a shape with Jinja (besides the
            first ``verify_first``) and refuse on a difference.
        fast: a :class:`~.tokens.ByteLevelEncoder` for the tokenizer (gigatoken ids, byte
            offsets), or None for HF ``tokenizers`` with character offsets, the reference.
    """

    def __init__(
        self,
        tokenizer,
        template: ResolvedTemplate,
        loss_mode: str = "assistant",
        exact: bool = False,
        verify_first: int = 4,
        verify_every: int = 512,
        fast: ByteLevelEncoder | None = None,
    ) -> None:
        if loss_mode not in LOSS_MODES:
            raise ValueError(f"unknown loss mode {loss_mode!r} (known: {', '.join(LOSS_MODES)})")
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer")
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self.template = template
        self.loss_mode = loss_mode
        self.exact = exact
        self.verify_first = verify_first
        self.verify_every = verify_every
        self.fast = fast
        self.fallbacks = 0  # conversations the fast encoder handed to HF
        self._skeletons: dict[tuple[str, ...], _Skeleton] = {}
        self._seen: dict[tuple[str, ...], int] = {}
        self._eot_id: int | None = None
        if template.end_of_turn is not None:
            ids = self.backend.encode(template.end_of_turn, add_special_tokens=False).ids
            if len(ids) != 1:
                raise TemplateError(
                    f"template {template.name!r}: its end of turn {template.end_of_turn!r} is "
                    f"{len(ids)} tokens in tokenizer {tokenizer.name_or_path!r}, not one"
                )
            self._eot_id = ids[0]

    # -- Jinja ------------------------------------------------------------------------------

    def _jinja(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.template.jinja,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
        except Exception as err:  # the template's raise_exception and Jinja errors
            raise TemplateError(
                f"template {self.template.name!r} failed on roles "
                f"{' '.join(m['role'] for m in messages)}: {type(err).__name__}: {err}"
            ) from err

    def _spans_by_jinja(self, dicts: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The render and trained spans of a conversation, from its prefix renders."""
        full = self._jinja(dicts, False)
        if self.loss_mode == "full":
            return full, [(0, len(full))]
        answers = [i for i, m in enumerate(dicts) if m["role"] == "assistant"]
        if self.loss_mode == "last_turn":
            answers = answers[-1:]
        spans = []
        for i in answers:
            prompt = self._jinja(dicts[:i], True)
            turn = self._jinja(dicts[: i + 1], False)
            if not turn.startswith(prompt) or not full.startswith(turn):
                which = (
                    "the render up to the generation prompt is not a prefix of the render "
                    "with the answer"
                    if not turn.startswith(prompt)
                    else "the render up to this answer is not a prefix of the whole render"
                )
                raise TemplateError(
                    f"template {self.template.name!r} is not prefix-preserving at message {i} "
                    f"(roles {' '.join(m['role'] for m in dicts)}): {which}, so the answer's "
                    f"tokens cannot be told from the prompt's; use a named template "
                    f"({', '.join(NAMED_TEMPLATES)}) or loss mode 'full'"
                )
            end = len(turn.rstrip())
            if end <= len(prompt):
                raise TemplateError(
                    f"template {self.template.name!r} renders answer {i} as nothing"
                )
            spans.append((len(prompt), end))
        return full, spans

    # -- shape cache ------------------------------------------------------------------------

    def _skeleton(self, roles: tuple[str, ...]) -> _Skeleton:
        skeleton = self._skeletons.get(roles)
        if skeleton is not None:
            return skeleton
        marks = [f"{_OPEN}{i}{_CLOSE}" for i in range(len(roles))]
        dicts = [{"role": r, "content": m} for r, m in zip(roles, marks)]
        text, spans = self._spans_by_jinja(dicts)
        parts: list = []
        starts: list[int] = []  # character position of each part in ``text``
        pos = 0
        for i, mark in enumerate(marks):
            at = text.find(mark, pos)
            if at < 0 or text.count(mark) != 1:
                raise TemplateError(
                    f"template {self.template.name!r} does not render message {i} "
                    f"({roles[i]}) exactly once, in order: it cannot be used for training "
                    f"with a derived loss mask (try exact rendering or loss mode 'full')"
                )
            if at > pos:
                parts.append(text[pos:at])
                starts.append(pos)
            parts.append(i)
            starts.append(at)
            pos = at + len(mark)
        if pos < len(text):
            parts.append(text[pos:])
            starts.append(pos)
        padded = [{"role": r, "content": f" \n{m}\n "} for r, m in zip(roles, marks)]
        padded_text = self._jinja(padded, False)
        if padded_text == text:
            strip = True
        elif padded_text == "".join(
            p if isinstance(p, str) else f" \n{marks[p]}\n " for p in parts
        ):
            strip = False
        else:
            raise TemplateError(
                f"template {self.template.name!r} changes message contents in a way other "
                f"than trimming them: use exact rendering"
            )

        def locate(char: int, is_end: bool) -> tuple[int, int]:
            for k in range(len(parts) - 1, -1, -1):
                if starts[k] < char or (starts[k] == char and not is_end):
                    length = len(parts[k]) if isinstance(parts[k], str) else len(marks[parts[k]])
                    offset = char - starts[k]
                    if isinstance(parts[k], int) and 0 < offset < length:
                        raise TemplateError(
                            f"template {self.template.name!r}: a trained span starts or ends "
                            f"inside message {parts[k]}'s content"
                        )
                    if isinstance(parts[k], int):  # at a slot's edge: 0 or its full length
                        return (k, -1 if offset else 0)
                    return (k, offset)
            return (0, 0)

        located = [(locate(s, False), locate(e, True)) for s, e in spans]
        skeleton = _Skeleton(parts, located, strip)
        self._learn_end_of_turn(parts, roles)
        self._skeletons[roles] = skeleton
        return skeleton

    def _learn_end_of_turn(self, parts: list, roles: tuple[str, ...]) -> None:
        """The token that closes an answer: the last token of the literal after the last one."""
        last = max(i for i, r in enumerate(roles) if r == "assistant")
        k = parts.index(last)
        after = parts[k + 1] if k + 1 < len(parts) and isinstance(parts[k + 1], str) else ""
        after = after.rstrip()
        if not after:
            raise TemplateError(
                f"template {self.template.name!r} writes nothing after an answer: there is no "
                f"end-of-turn token to train and to stop generation on"
            )
        ids = self.backend.encode(after, add_special_tokens=False).ids
        eot = ids[-1]
        special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
        if eot not in special:
            raise TemplateError(
                f"template {self.template.name!r} ends answers with {after!r}, whose last token "
                f"{self.tokenizer.convert_ids_to_tokens(eot)!r} is not a special token of "
                f"tokenizer {self.tokenizer.name_or_path!r}: generation could not stop on it"
            )
        if self._eot_id is None:
            self._eot_id = eot
        elif self._eot_id != eot:
            raise TemplateError(
                f"template {self.template.name!r} ends answers with token {eot}, where "
                f"{self._eot_id} was expected ({self.template.end_of_turn!r})"
            )

    def _fill(self, skeleton: _Skeleton, contents: list[str]) -> Rendered:
        pieces = [part if part.__class__ is str else contents[part] for part in skeleton.parts]
        begin = [0]
        pos = 0
        for piece in pieces:
            pos += len(piece)
            begin.append(pos)
        spans = []
        for (ks, os_), (ke, oe) in skeleton.spans:
            s = begin[ks + 1] if os_ == -1 else begin[ks] + os_
            e = begin[ke + 1] if oe == -1 else begin[ke] + oe
            spans.append((s, e))
        return Rendered("".join(pieces), spans)

    # -- public -----------------------------------------------------------------------------

    def render(self, messages: list[Message]) -> Rendered:
        """The conversation's text and trained character spans."""
        if self.exact or any(_OPEN in m.content or _CLOSE in m.content for m in messages):
            return Rendered(*self._spans_by_jinja(_dicts(messages)))
        roles = tuple([m.role for m in messages])
        skeleton = self._skeletons.get(roles) or self._skeleton(roles)
        if skeleton.strip:
            contents = [m.content.strip() for m in messages]
        else:
            contents = [m.content for m in messages]
        rendered = self._fill(skeleton, contents)
        seen = self._seen.get(roles, 0)
        self._seen[roles] = seen + 1
        if seen < self.verify_first or seen % self.verify_every == 0:
            text, spans = self._spans_by_jinja(_dicts(messages))
            if text != rendered.text or spans != rendered.spans:
                raise TemplateError(
                    f"template {self.template.name!r} renders this conversation differently "
                    f"from its shape (roles {' '.join(roles)}): it depends on the contents; "
                    f"use exact rendering (--exact-render)"
                )
        return rendered

    def encode(self, rendered: list[Rendered]) -> list[Encoded]:
        """Token ids and loss masks of rendered conversations, one :class:`Encoded` each."""
        flat = self.encode_flat(rendered)
        offsets = np.concatenate([[0], np.cumsum(flat.lengths)])
        span_bounds = np.searchsorted(flat.span_conv, np.arange(len(rendered) + 1))
        out = []
        for i in range(len(rendered)):
            a, b = offsets[i], offsets[i + 1]
            ends = flat.turn_end_ids[span_bounds[i] : span_bounds[i + 1]]
            out.append(
                Encoded(
                    flat.ids[a:b],
                    flat.mask[a:b],
                    int(flat.straddling[i]),
                    [int(t) for t in ends if t >= 0],
                )
            )
        return out

    def encode_flat(self, rendered: list[Rendered]) -> FlatEncoding:
        """All conversations' ids and masks, flat: gigatoken when the renderer has the fast
        encoder (conversations it cannot do exactly go to HF), else HF."""
        if self.fast is None or not rendered:
            return self.encode_hf(rendered)
        fast, fallback = self.fast.encode([r.text for r in rendered], [r.spans for r in rendered])
        self.fallbacks += len(fallback)
        if not len(fallback):
            return fast
        return splice(fast, fallback, self.encode_hf([rendered[i] for i in fallback]))

    def encode_hf(self, rendered: list[Rendered]) -> FlatEncoding:
        """The reference: HF ``tokenizers`` ids with character offsets (one batch call)."""
        encodings = self.backend.encode_batch([r.text for r in rendered], add_special_tokens=False)
        ids_all, masks, lengths, straddling_all = [], [], [], []
        turn_ends, span_conv = [], []
        for i, (r, enc) in enumerate(zip(rendered, encodings)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            starts, ends = offsets[:, 0], offsets[:, 1]
            mask = np.zeros(len(ids), dtype=np.uint8)
            straddling = 0
            for s, e in r.spans:
                inside = (starts >= s) & (starts < e)
                mask |= inside
                straddling += int(((starts < s) & (ends > s)).sum())
                where = np.flatnonzero(inside)
                turn_ends.append(int(ids[where[-1]]) if len(where) else -1)
                span_conv.append(i)
            ids_all.append(ids)
            masks.append(mask)
            lengths.append(len(ids))
            straddling_all.append(straddling)
        return FlatEncoding(
            np.concatenate(ids_all) if ids_all else np.zeros(0, np.int64),
            np.concatenate(masks) if masks else np.zeros(0, np.uint8),
            np.asarray(lengths, dtype=np.int64),
            np.asarray(straddling_all, dtype=np.int64),
            np.asarray(turn_ends, dtype=np.int64),
            np.asarray(span_conv, dtype=np.int64),
        )

    @property
    def end_of_turn_id(self) -> int | None:
        """The id that closes an answer (named templates; else learned from the first shape)."""
        return self._eot_id

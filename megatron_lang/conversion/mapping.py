"""Declarative HF <-> Megatron key tables and the typed transforms between them.

A family's table is a tuple of :class:`Rule` s.  Each rule names one tensor of
a full (TP=1, PP=1) megatron-core GPTModel, the HF tensors it is made of, their
shapes in symbolic dimensions, and a :class:`Transform`.  ``{layer}`` in a name
stands for the layer index.  The HF -> Megatron direction applies
``Transform.to_megatron``; the reverse applies ``Transform.to_hf`` of the same
rule, so the key mapping is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from megatron_lang.models.arch import LlamaArch


class ConversionError(ValueError):
    """A checkpoint that cannot be converted (names the tensor and the shapes)."""


def dims(arch: LlamaArch) -> dict[str, int]:
    """Values of the symbolic dimensions used in the tables' shapes."""
    return {
        "vocab": arch.vocab_size,
        "hidden": arch.hidden_size,
        "ffn": arch.ffn_hidden_size,
        "q": arch.num_attention_heads * arch.head_dim,
        "kv": arch.num_query_groups * arch.head_dim,
    }


class Transform:
    """Turns the HF tensors of a rule into one megatron tensor, and back."""

    def to_megatron(self, hf: list[torch.Tensor], arch: LlamaArch) -> torch.Tensor:
        """Megatron tensor from the rule's HF tensors (in the rule's order)."""
        raise NotImplementedError

    def to_hf(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor]:
        """The rule's HF tensors from the megatron tensor."""
        raise NotImplementedError

    def hf_views(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor] | None:
        """Contiguous views of ``meg`` that the HF tensors can be read into directly (no copy),
        or None when the layout needs a real transform."""
        return None


class Identity(Transform):
    """Same tensor on both sides."""

    def to_megatron(self, hf: list[torch.Tensor], arch: LlamaArch) -> torch.Tensor:
        return hf[0]

    def to_hf(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor]:
        return [meg]

    def hf_views(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor] | None:
        return [meg]


class FuseQKV(Transform):
    """Q, K, V projections <-> megatron's fused ``linear_qkv`` (weights or biases).

    megatron-core groups the fused rows per KV group: for each of the
    ``num_query_groups`` groups, its ``heads/groups`` query heads, then its key
    head, then its value head, each ``head_dim`` rows.  Both HF Llama and
    megatron use the same (non-interleaved, rotate-half) RoPE convention, so
    rows are not permuted within a head.
    """

    def to_megatron(self, hf: list[torch.Tensor], arch: LlamaArch) -> torch.Tensor:
        q, k, v = hf
        g, d = arch.num_query_groups, arch.head_dim
        per = arch.num_attention_heads // g
        rest = q.shape[1:]
        q = q.reshape(g, per * d, *rest)
        k = k.reshape(g, d, *rest)
        v = v.reshape(g, d, *rest)
        return torch.cat([q, k, v], dim=1).reshape(g * (per + 2) * d, *rest)

    def to_hf(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor]:
        g, d = arch.num_query_groups, arch.head_dim
        per = arch.num_attention_heads // g
        rest = meg.shape[1:]
        grouped = meg.reshape(g, (per + 2) * d, *rest)
        q, k, v = torch.split(grouped, [per * d, d, d], dim=1)
        return [
            q.reshape(g * per * d, *rest).contiguous(),
            k.reshape(g * d, *rest).contiguous(),
            v.reshape(g * d, *rest).contiguous(),
        ]


class FuseGateUp(Transform):
    """SwiGLU gate and up projections <-> megatron's ``linear_fc1`` = ``[gate; up]``."""

    def to_megatron(self, hf: list[torch.Tensor], arch: LlamaArch) -> torch.Tensor:
        return torch.cat(hf, dim=0)

    def to_hf(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor]:
        return [t.contiguous() for t in torch.chunk(meg, 2, dim=0)]

    def hf_views(self, meg: torch.Tensor, arch: LlamaArch) -> list[torch.Tensor] | None:
        return list(torch.chunk(meg, 2, dim=0))  # row blocks of a contiguous tensor


IDENTITY = Identity()
QKV = FuseQKV()
GATE_UP = FuseGateUp()


@dataclass(frozen=True)
class Rule:
    """One megatron tensor and the HF tensors it is made of."""

    megatron: str
    """Full-model megatron name, ``{layer}`` for the layer index."""
    hf: tuple[str, ...]
    """HF names, ``{layer}`` for the layer index, in the transform's order."""
    shapes: tuple[tuple[str, ...], ...]
    """Each HF tensor's shape in symbolic dims (see :func:`dims`)."""
    transform: Transform = IDENTITY
    """How the HF tensors become the megatron tensor."""
    when: Callable[[LlamaArch], bool] | None = None
    """Rule applies only when this returns True (e.g. untied LM head)."""

    @property
    def per_layer(self) -> bool:
        """True for rules repeated in every decoder layer."""
        return "{layer}" in self.megatron

    @property
    def vocab_rows(self) -> bool:
        """True for tensors with one row per vocabulary entry (embedding, LM head)."""
        return self.shapes[0][0] == "vocab"


@dataclass(frozen=True)
class Conversion:
    """A rule made concrete for one layer (or a non-layer tensor)."""

    megatron: str
    hf: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]
    rule: Rule
    layer: int | None

    def check_shapes(self, shapes: list[tuple[int, ...]], arch: LlamaArch) -> None:
        """Raise ConversionError naming the first HF tensor whose shape is not the expected one."""
        for name, found, shape in zip(self.hf, shapes, self.hf_shapes):
            if tuple(found) != shape:
                raise ConversionError(
                    f"tensor {name!r}: expected shape {shape} for {arch.family} "
                    f"config, found {tuple(found)}"
                )

    def to_megatron(self, tensors: list[torch.Tensor], arch: LlamaArch) -> torch.Tensor:
        """Check the HF shapes, then apply the rule's transform."""
        self.check_shapes([tuple(t.shape) for t in tensors], arch)
        return self.rule.transform.to_megatron(tensors, arch)


def expand(rules: tuple[Rule, ...], arch: LlamaArch) -> list[Conversion]:
    """Concrete conversions for ``arch``: embedding first, then layer by layer, then head."""
    d = dims(arch)
    active = [r for r in rules if r.when is None or r.when(arch)]
    out: list[Conversion] = []

    def make(rule: Rule, layer: int | None) -> Conversion:
        fmt = {} if layer is None else {"layer": layer}
        return Conversion(
            megatron=rule.megatron.format(**fmt),
            hf=tuple(h.format(**fmt) for h in rule.hf),
            hf_shapes=tuple(tuple(d[s] for s in shape) for shape in rule.shapes),
            rule=rule,
            layer=layer,
        )

    head = [r for r in active if not r.per_layer]
    pre = [r for r in head if r.megatron.startswith("embedding.")]
    post = [r for r in head if not r.megatron.startswith("embedding.")]
    out += [make(r, None) for r in pre]
    for layer in range(arch.num_layers):
        out += [make(r, layer) for r in active if r.per_layer]
    out += [make(r, None) for r in post]
    return out


def group_by_stage(conversions: list[Conversion]) -> list[list[Conversion]]:
    """Conversions grouped as [pre-layer], [layer 0], ..., [post-layer] (streaming units)."""
    groups: list[list[Conversion]] = []
    last: object = object()
    for c in conversions:
        key = ("layer", c.layer) if c.layer is not None else ("head", c.megatron.split(".")[0])
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(c)
    return groups

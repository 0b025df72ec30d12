"""Staged training: which parameters train in which steps, with which optimizer settings.

A job's ``stages`` (see :class:`~megatron_lang.config.job.StageConfig`) split
``train.steps`` into consecutive spans. Each span has its own trainable set and
its own optimizer and LR schedule. megatron-core's DDP and distributed optimizer
read ``requires_grad`` only when they are built, so the trainer rebuilds model
chunks, DDP, optimizer and scheduler at each stage boundary (weights carried
over) — this module only decides *what* trains, consistently on every rank.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass

import torch

from megatron_lang.config import JobConfig, OptimizerConfig, StageConfig, from_dict
from megatron_lang.config.loader import ConfigError, to_dict

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
LORA = ("*_lora.lora_A", "*_lora.lora_B")
GROUPS = {"all": None, "embeddings": (EMBEDDING,), "lm_head": (OUTPUT,), "lora": LORA}


class StageError(ValueError):
    """Stages that do not fit the run (the message names the stage and the rule)."""


@dataclass(frozen=True)
class Stage:
    """A resolved stage: its span of global steps and its job view."""

    index: int
    """Position in ``cfg.stages`` (0 for an unstaged run)."""
    name: str
    """The stage's label."""
    start: int
    """First global step index of the stage (steps ``start+1 .. end`` are trained in it)."""
    end: int
    """Global step count at which the stage ends."""
    trainable: tuple[str, ...]
    """Groups / patterns of trainable parameters."""
    cfg: JobConfig
    """The job as this stage sees it: stage optimizer, ``train.steps`` = stage length."""

    @property
    def steps(self) -> int:
        """Optimizer steps in this stage."""
        return self.end - self.start


def resolve_stages(cfg: JobConfig) -> list[Stage]:
    """The job's stages with their step spans (one ``all`` stage when none are configured).

    Raises:
        StageError: a stage without steps that is not the last, step counts that do not
            add up to ``train.steps``, an unknown optimizer key, an empty trainable list.
    """
    total = cfg.train.steps
    default = ["lora"] if cfg.lora.enabled else ["all"]
    stages = cfg.stages or [StageConfig(name="full", steps=total, trainable=default)]
    out, start = [], 0
    for i, st in enumerate(stages):
        where = f"stages.{i} ({st.name!r})"
        if st.steps is None and i != len(stages) - 1:
            raise StageError(f"{where}: only the last stage may leave steps unset")
        steps = total - start if st.steps is None else st.steps
        if steps <= 0:
            raise StageError(f"{where}: needs at least one step (train.steps={total})")
        if not st.trainable:
            raise StageError(f"{where}: trainable is empty; nothing would train")
        try:
            opt = from_dict(
                OptimizerConfig, {**to_dict(cfg.optimizer), **st.optimizer}, f"stages.{i}.optimizer"
            )
        except ConfigError as e:
            raise StageError(str(e)) from None
        view = dataclasses.replace(
            cfg, optimizer=opt, train=dataclasses.replace(cfg.train, steps=steps)
        )
        out.append(Stage(i, st.name, start, start + steps, tuple(st.trainable), view))
        start += steps
    if start != total:
        raise StageError(
            f"stages add up to {start} steps but train.steps={total}; "
            "set train.steps to their sum or leave the last stage's steps unset"
        )
    return out


def stage_for_step(stages: list[Stage], step: int) -> Stage:
    """The stage that trains the step after ``step`` completed steps (the last one at the end)."""
    for st in stages:
        if step < st.end:
            return st
    return stages[-1]


def _matches(name: str, rules: tuple[str, ...], tied: bool) -> bool:
    names = {name}
    if tied and name in (EMBEDDING, OUTPUT):  # one tied parameter, two names
        names = {EMBEDDING, OUTPUT}
    for rule in rules:
        if rule == "all":
            return True
        patterns = GROUPS.get(rule) or (rule,)
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
            return True
    return False


def check_trainable_rules(rules: tuple[str, ...], names: list[str], tied: bool) -> None:
    """Every rule must match some parameter of the full model (global names).

    Raises:
        StageError: a rule matches nothing (a typo would otherwise freeze everything).
    """
    for rule in rules:
        if not any(_matches(n, (rule,), tied) for n in names):
            raise StageError(
                f"trainable rule {rule!r} matches no parameter; groups: {sorted(GROUPS)}, "
                f"or glob patterns over names such as {names[:3]}"
            )


def apply_trainable(chunks: list[torch.nn.Module], stage: Stage, tied: bool) -> dict[str, int]:
    """Set ``requires_grad`` on this rank's (unwrapped) model chunks for ``stage``.

    Names are global (pipeline layer offsets applied), so a rule means the same
    parameters on every rank. Returns counts of trainable / frozen elements on this rank.
    """
    from megatron_lang.models.sharding import global_param_names

    counts = {"trainable": 0, "frozen": 0}
    for chunk in chunks:
        names = global_param_names(chunk)
        for local, param in chunk.named_parameters():
            on = _matches(names.get(local, local), stage.trainable, tied)
            param.requires_grad_(on)
            counts["trainable" if on else "frozen"] += param.numel()
    return counts

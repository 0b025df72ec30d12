"""YAML files + ``a.b.c=value`` overrides -> :class:`~megatron_lang.config.job.JobConfig`.

Values in overrides are parsed as YAML scalars (``3``, ``1e-4``, ``true``, ``null``,
``[1, 2]``) and checked against the field's type; unknown keys are errors that
name the full key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from megatron_lang.config.job import JobConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration key or value (the message names the key path)."""


def _allowed(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(tp) for a in _allowed(arg))
    if origin is not None:
        return (origin,)
    if tp is type(None):
        return (type(None),)
    return (tp,)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    allowed = _allowed(tp)
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and float in allowed
        and int not in allowed
    ):
        return float(value)
    if isinstance(value, str) and float in allowed and str not in allowed:
        try:  # YAML reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, allowed):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return " | ".join(getattr(a, "__name__", str(a)) for a in _allowed(tp)).replace(
        "NoneType", "None"
    )


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        tp = hints[name]
        item_tp = _list_item_dataclass(tp)
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value or {}, path)
        elif item_tp is not None:
            if not isinstance(value, list):
                raise ConfigError(f"{path}: expected a list of {item_tp.__name__}, got {value!r}")
            kwargs[name] = [from_dict(item_tp, v or {}, f"{path}.{i}") for i, v in enumerate(value)]
        else:
            kwargs[name] = _coerce(value, tp, path)
    return cls(**kwargs)


def _list_item_dataclass(tp: Any) -> type | None:
    """``X`` for a ``list[X]`` field whose items are dataclasses, else None."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (None,)
        if item is not None and dataclasses.is_dataclass(item):
            return item
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    """Nested plain dict of a dataclass (YAML/JSON ready)."""
    return dataclasses.asdict(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (returns a new dict).

    A numeric component indexes a list that exists already (``stages.0.steps=100``).
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key component")
        node: Any = data
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[_list_index(node, p, item)]
            else:
                node = node.setdefault(p, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        value = yaml.safe_load(raw) if raw.strip() else None
        if isinstance(node, list):
            node[_list_index(node, parts[-1], item)] = value
        else:
            node[parts[-1]] = value
    return data


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)


def load_job_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> JobConfig:
    """Read a YAML job file (optional), apply overrides, validate, return the config."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
    data = apply_overrides(data, overrides or [])
    # start from the defaults so a partial file is complete
    merged = _merge(to_dict(JobConfig()), data)
    return from_dict(JobConfig, merged)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "arch":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def dump_yaml(cfg: JobConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

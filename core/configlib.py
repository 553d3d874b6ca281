"""Typed config loading: nested dataclasses from YAML with one clear error per mistake.

Every component keeps its own config dataclass next to its code (``envs/config.py``,
``policy/config.py``, ...) and validates impossible values in ``__post_init__`` by raising
``ValueError``. This module turns a YAML mapping into such a dataclass tree, checking unknown
keys (with a suggestion), types, and wrapping validation errors with the dotted key and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the file."""


def yaml_problem(e: Exception) -> str:
    """A YAML parse error in one line: "line L, column C: what" (PyYAML's message spans several
    lines with a snippet of the file)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _where(key: str, source: str | None) -> str:
    loc = f"'{key}'" if key else "the top level"
    return f"{loc} in {source}" if source else loc


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (dicts to dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{_where(key, source)}: expected {names}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{_where(key, source)}: expected {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"{_where(key, source)}: expected a mapping for {tp.__name__}, got {value!r}"
            )
        return from_dict(tp, value, source=source, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(key, source)}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"{_where(key, source)}: expected {len(args)} items, got {len(value)}"
                )
            items = [
                _convert(v, a, f"{key}[{i}]", source)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            elem = args[0] if args else Any
            items = [_convert(v, elem, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(key, source)}: expected a mapping, got {value!r}")
        args = get_args(tp)
        vt = args[1] if args else Any
        return {k: _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(key, source)}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{_where(key, source)}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(key, source)}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(key, source)}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(key, source)}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{_where(key, source)}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def from_dict(
    cls: type[T], data: dict[str, Any], *, source: str | None = None, prefix: str = ""
) -> T:
    """Build the dataclass ``cls`` from a mapping, validating keys, types and values.

    Args:
        cls: a dataclass type whose fields all have defaults or appear in ``data``.
        data: the mapping (typically from YAML).
        source: the file the mapping came from, named in errors.
        prefix: dotted key of this mapping inside the whole config, named in errors.
    Raises:
        ConfigError: naming the dotted key and the file.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(prefix, source)}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {_where(key, source)}{hint}; valid keys: {valid}")
        kwargs[k] = _convert(v, hints[k], key, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid value at {_where(prefix, source)}: {e}") from None


def to_dict(cfg: Any) -> Any:
    """Plain (YAML-safe) mapping of a dataclass tree; tuples become lists."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def apply_overrides(
    data: dict[str, Any], overrides: list[str], *, source: str = "--set"
) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested mapping in place."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} from {source}: expected KEY=VALUE, e.g. learner.lr_lora=5e-5"
            )
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} from {source}: '{p}' is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def require(cond: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``cond``: the one-liner for ``__post_init__`` checks."""
    if not cond:
        raise ValueError(message)


__all__ = ["ConfigError", "from_dict", "to_dict", "apply_overrides", "require"]
_ = typing  # keep typing imported for get_type_hints on forward references

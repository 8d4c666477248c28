"""Typed dataclasses from YAML/JSON mappings: the one builder behind the model, training and
experiment-plan configurations.

`build(cls, data, path)` rejects unknown keys and values that do not fit a field's type hint,
naming their dotted path; builds nested dataclasses (also `Optional` ones) from mappings; and
coerces what YAML reads loosely (an int or '1e-4' for a float field, a tuple for a list).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Any, Literal, Union

SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def build(cls: type, data: Any, path: str = "") -> Any:
    """`cls(**data)` for a dataclass `cls`, every key and value checked (see the module)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return data
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        full = ", ".join(f"{path}.{k}".lstrip(".") for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {unknown} ({full}); known: {sorted(hints)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    kwargs = {}
    for name, value in data.items():
        key_path = f"{path}.{name}".lstrip(".")
        hint = hints[name]
        nested = nested_dataclass(hint)
        if nested is not None and isinstance(value, dict):
            kwargs[name] = build(nested, value, key_path)
        elif not type_ok(value, hint):
            raise ConfigError(f"{key_path}: {value!r} does not fit the type {hint_name(hint)}")
        else:
            kwargs[name] = coerce(value, hint)
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def nested_dataclass(hint: Any) -> type | None:
    """The dataclass a field holds (`C` or `C | None`), else None."""
    candidates = typing.get_args(hint) if _is_union(hint) else (hint,)
    found = [c for c in candidates if dataclasses.is_dataclass(c)]
    return found[0] if len(found) == 1 else None


def type_ok(value: Any, hint: Any) -> bool:
    """Shallow check of a YAML value against a field's type hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if _is_union(hint):
        return any(type_ok(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and SCIENTIFIC.fullmatch(value) is not None)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list or hint is list:
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return isinstance(value, hint) if isinstance(hint, type) else True


def coerce(value: Any, hint: Any) -> Any:
    """An int given to a float-only field becomes a float, and so does '1e-4' (YAML 1.1 reads
    exponents without a dot as strings); a tuple given to a list field becomes a list."""
    args = typing.get_args(hint) if _is_union(hint) else (hint,)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and float in args and int not in args:
        return float(value)
    if isinstance(value, str) and float in args and SCIENTIFIC.fullmatch(value):
        return float(value)
    if isinstance(value, tuple) and any(a is list or typing.get_origin(a) is list for a in args):
        return list(value)
    return value


def hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)

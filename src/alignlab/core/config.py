"""Dataclass configs loaded from YAML or dicts, with loud failures on unknown keys.

>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     lr: float = 0.1
...     epochs: int = 2
>>> from_dict(C, {"lr": 0.5})
C(lr=0.5, epochs=2)
>>> from_dict(C, {"lrr": 0.5})
Traceback (most recent call last):
...
alignlab.core.errors.ConfigError: unknown key 'lrr' in C (did you mean 'lr'?); valid keys: epochs, lr
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.io import to_jsonable, write_text

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are a ConfigError.

    Nested dataclass fields are built recursively from nested mappings.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r} in {cls.__name__}{hint}",
                              where=where, fix=f"valid keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, f"{cls.__name__}.{key}", where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}", where=where) from None


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, name: str, where: str | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, name, where)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads "1e-3" as a string (it wants "1.0e-3"); a user writing lr: 1e-3 means the number.
        return float(value)
    if tp is int and isinstance(value, bool) or tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}", where=where)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, str) and not isinstance(value, tp):
        raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}", where=where)
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{name} must be a number, got {value!r}", where=where)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value) if origin is tuple else list(value)
    return value


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file (and line when known)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("config file not found", where=str(path), fix="check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a mapping of keys to values", where=str(path))
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.lr=0.1", "model.width=64"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE", fix="write e.g. --set train.lr=0.001")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a key inside {p!r}, which another override set to "
                                  f"a value", fix="give either the value or its keys, not both")
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values in ``override`` win."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return to_jsonable(dataclasses.asdict(cfg))


def dump_yaml(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` (dict or dataclass) as YAML atomically."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    write_text(path, yaml.safe_dump(to_jsonable(data), sort_keys=False, allow_unicode=True))

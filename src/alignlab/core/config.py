"""Dataclass configs loaded from YAML or dicts, with loud failures on unknown keys.

>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     lr: float = 0.1
...     epochs: int = 2
>>> from_dict(C, {"lr": 0.5})
C(lr=0.5, epochs=2)
>>> from_dict(C, {"lrr": 0.5})  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
alignlab.core.errors.ConfigError: unknown key 'lrr' in C (did you mean 'lr'?) (config key lrr);
valid keys: epochs, lr
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import shutil
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from alignlab.core.errors import AlignlabError, ConfigError, DataError
from alignlab.core.io import to_jsonable, write_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class Sources:
    """Where each config value came from, so that an error blames the right place.

    ``default`` is the YAML file (or None for the built-in defaults); ``keys`` maps a dotted key to its own
    source: ``"train.lr" -> "run.yaml:7"``, ``"--set train.lr=nan"`` or a command-line flag such as
    ``"--epochs"``. A key without an entry takes its nearest section's source, then ``default``.
    """

    def __init__(self, default: str | None = None, keys: Mapping[str, str] | None = None):
        self.default = default
        self.keys = dict(keys or {})

    def of(self, key: str) -> str | None:
        k = key
        while k:
            if k in self.keys:
                return self.keys[k]
            k = k.rpartition(".")[0]
        return self.default

    def __str__(self) -> str:
        return self.default or ""


def _sources(where: str | Sources | None) -> Sources:
    return where if isinstance(where, Sources) else Sources(where)


def config_sources(
    config: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Sources:
    """Sources of a command's config: its YAML file (each key at its line), then ``flags`` (dotted key ->
    option, e.g. ``{"seed": "--seed"}``, only for flags the user gave), then the ``--set`` items (which
    win)."""
    keys: dict[str, str] = {}
    if config is not None:
        keys.update(_yaml_key_lines(Path(config)))
    keys.update(flags or {})
    for item in overrides or []:
        key = item.partition("=")[0].strip()
        if key:
            keys[key] = f"--set {item}"
    return Sources(str(config) if config is not None else None, keys)


def _yaml_key_lines(path: Path) -> dict[str, str]:
    """Dotted key -> ``file:line`` of every mapping key in a YAML file (empty when it cannot be parsed)."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    key = f"{prefix}{k.value}"
                    out[key] = f"{path}:{k.start_mark.line + 1}"
                    walk(v, key + ".")

    walk(root, "")
    return out


def from_dict(
    cls: type[T], data: Mapping[str, Any] | None, where: str | Sources | None = None, _prefix: str = ""
) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrongly typed values are a ConfigError.

    Nested dataclass fields are built recursively from nested mappings. ``where`` (a file name or
    :class:`Sources`) says where the values came from; every error names the key and its source.
    """
    src = _sources(where)
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {cls.__name__}{hint}",
                where=_where(src, _prefix + key),
                fix=f"valid keys: {', '.join(sorted(fields))}",
            )
        default = _default_of(fields[key])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default) and not isinstance(default, type):
            # A nested section given in part keeps the parent's own defaults for the rest (DCD's train
            # section defaults to batch 24 / lr 2e-3, not the bare TrainConfig's 128 / 1e-3).
            from_dict(type(default), value, where, _prefix=f"{_prefix}{key}.")  # unknown keys named as given
            value = merge(dataclasses.asdict(default), value)
        kwargs[key] = _coerce(hints[key], value, f"{cls.__name__}.{key}", src, _prefix + key)
    try:
        return cls(**kwargs)
    except AlignlabError as e:  # a check in __post_init__: locate it by the key it names
        if e.key and _prefix and not e.where:  # name the key as the user writes it (train.lr, not lr)
            full = _prefix + e.key
            what = full + e.what[len(e.key) :] if e.what.startswith(e.key + " ") else e.what
            e = type(e)(what, fix=(e.fix or "").replace(f"{e.key}=", f"{full}=") or None, key=full)
            key = full
        else:
            key = _prefix + e.key if e.key else _mentioned_key(str(e.what), kwargs, _prefix)
        raise e.located(_where(src, key), f"change {key}" if key else None) from None
    except (TypeError, ValueError) as e:
        key = _mentioned_key(str(e), kwargs, _prefix)
        raise ConfigError(
            f"invalid {cls.__name__}: {e}",
            where=_where(src, key or _prefix.rstrip(".")),
            fix=f"change {key or 'the value'} (see the defaults in {cls.__name__})",
        ) from None


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _where(src: Sources, key: str) -> str:
    return src.of(key) or (f"config key {key}" if key else "the built-in config")


def _mentioned_key(message: str, kwargs: Mapping[str, Any], prefix: str) -> str:
    """The field a __post_init__ message is about: the longest given field named in it ("" if none)."""
    named = [k for k in kwargs if re.search(rf"\b{re.escape(k)}\b", message)]
    return prefix + max(named, key=len) if named else ""


def check_number(
    key: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    fix: str | None = None,
) -> None:
    """Raise a ConfigError naming ``key`` unless ``value`` is a finite number in the given range.

    For config dataclasses' ``__post_init__``: from_dict() then adds where the value came from.

    >>> check_number("lr", 0.1, lo=0, lo_open=True)
    >>> check_number("lr", float("nan"), lo=0, lo_open=True)  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    alignlab.core.errors.ConfigError: lr must be a finite number > 0, got nan;
    give e.g. lr=0.001 (a value in that range)
    """
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    wanted = "a finite number" + (" " + " and ".join(parts) if parts else "")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        example = lo if lo is not None and not lo_open else (hi if hi is not None and not hi_open else None)
        if example is None:
            example = (
                0.001 if (lo is not None and hi is None) else ((lo or 0) + (hi if hi is not None else 1)) / 2
            )
        raise ConfigError(
            f"{key} must be {wanted}, got {value!r}",
            key=key,
            fix=fix or f"give e.g. {key}={example:g} (a value in that range)",
        )


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, name: str, src: Sources, key: str) -> Any:
    """``value`` as type ``tp``; ``name`` (Class.field) is shown in messages, ``key`` (dotted) locates it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, name, src, key)
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, src, _prefix=key + ".")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and not isinstance(value, tp):
        raise ConfigError(
            f"{key} is a section of keys, got the value {value!r}",
            where=_where(src, key),
            fix=f"set its keys instead, e.g. {key}.<key>=<value>",
        )
    if (
        tp is float
        and isinstance(value, str)
        and value.strip().lower().lstrip("+-.") in ("nan", "inf", "infinity")
    ):
        value = float(
            value.strip().lower().replace(".", "")
        )  # "nan" or "-inf" from --set: say it is not finite
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads "1e-3" as a string (it wants "1.0e-3");
        # a user writing lr: 1e-3 means the number.
        value = float(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(
                f"{key} must be a finite number, got {value!r}",
                where=_where(src, key),
                fix=f"give a finite value for {key}",
            )
        return float(value)
    if tp is int and isinstance(value, bool) or tp is bool and not isinstance(value, bool):
        raise ConfigError(
            f"{name} must be {tp.__name__}, got {value!r}",
            where=_where(src, key),
            fix=f"give {key} as {'true or false' if tp is bool else 'a whole number'}",
        )
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, str) and not isinstance(value, tp):
        raise ConfigError(
            f"{name} must be {tp.__name__}, got {value!r}",
            where=_where(src, key),
            fix=f"give {key} as {'a whole number' if tp is int else 'text'}",
        )
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(
            f"{name} must be a number, got {value!r}",
            where=_where(src, key),
            fix=f"give {key} as a finite number, e.g. 0.001",
        )
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
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file is not UTF-8 text ({e.reason})", where=str(path), fix="give a YAML text file"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(
            f"invalid YAML: {getattr(e, 'problem', e)}",
            where=where,
            fix="correct the YAML syntax at that line (keys as `key: value`, one per line)",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a config file must hold a mapping of keys to values, not a {type(data).__name__}",
            where=str(path),
            fix="write one `key: value` per line (sections as nested keys)",
        )
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.lr=0.1", "model.width=64"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not KEY=VALUE",
                where=f"--set {item}",
                fix=f"write e.g. --set {item or 'train.lr'}=<value>",
            )
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(
                f"override {item!r} has an empty key",
                where=f"--set {item}",
                fix="write the dotted key before '=', e.g. --set train.lr=0.001",
            )
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r} sets a key inside {p!r}, which another override set to a value",
                    where=f"--set {item}",
                    fix="give either the value or its keys, not both",
                )
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(
                f"override {item!r} replaces the keys another --set gave inside {parts[-1]!r}",
                where=f"--set {item}",
                fix="give either the value or its keys, not both",
            )
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"cannot read the value of override {item!r}: {getattr(e, 'problem', e)}",
                where=f"--set {item}",
                fix="quote text values, e.g. --set name='a: b'",
            ) from None
    return out


def command_config(
    load: type[T] | Callable[[dict[str, Any], Sources], T],
    *,
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """A command's config, the one way every command builds it.

    Layers, each merged deeply onto the one before: the config class's own defaults (nested sections
    keep their section defaults, see :func:`from_dict`), ``base`` (the command's settings beyond them),
    the YAML file at ``path``, the ``flags`` the user gave (dotted key -> ``(value, option)``; a value of
    None means the flag was not given) and the ``--set`` items, which win. ``load`` is the config
    dataclass or a function ``(data, sources) -> config``. Errors name the file line, flag or ``--set``
    item a bad value came from.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Run:
    ...     seed: int = 0
    ...     epochs: int = 8
    ...     lr: float = 0.002
    >>> command_config(Run, overrides=["epochs=2"], flags={"seed": (3, "--seed"), "lr": (None, "--lr")})
    Run(seed=3, epochs=2, lr=0.002)
    """
    data = merge(dict(base or {}), load_yaml(path) if path is not None else {})
    given = {key: value for key, value in (flags or {}).items() if value[0] is not None}
    for key, (value, _) in given.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    data = merge(data, parse_overrides(overrides))
    sources = config_sources(path, overrides, {key: option for key, (_, option) in given.items()})
    if isinstance(load, type):
        return from_dict(load, data, where=sources)
    return load(data, sources)


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


# --- output locations: checked before any work, so a bad --out fails in a second, not after training -----

# Files that mark a folder as an alignlab output: a finished one has results.json (or, for data and probe
# exports, their manifest); the others belong to a run that can be resumed.
FINISHED_MARKERS = ("results.json", "dataset.json", "probe.json", "manifest.json", "report.md")
RUN_MARKERS = (
    "config.yaml",
    "train_state.json",
    "ckpt",
    "log.jsonl",
    "log.txt",
    "tensorboard",
    "train",
    "visual.pt",
)  # mmt train: killed after the image-tower pretraining, before train/ exists


def _check_creatable(path: Path, option: str) -> None:
    """``path`` does not exist: its nearest existing parent must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"{option} cannot be created: {parent} is a file, not a folder",
            where=str(path),
            fix=f"give a {option} path inside a folder",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} cannot be created: no permission to write in {parent}",
            where=str(path),
            fix=f"give a {option} path in a folder you can write to",
        )


def check_out_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check that the file ``path`` can be written (an existing file is replaced); returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{option} is a folder, not a file",
            where=str(path),
            fix=f"give a file name, e.g. {path / 'results.json'}",
        )
    if path.exists():
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{option} cannot be replaced: no permission to write it",
                where=str(path),
                fix=f"give a {option} path you can write to",
            )
    else:
        _check_creatable(path, option)
    return path


def finished_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in FINISHED_MARKERS)


def check_run_dir(
    path: str | os.PathLike,
    option: str = "--out",
    *,
    overwrite: bool = False,
    config: Any = None,
    resume: bool = True,
    finished: tuple[str, ...] = FINISHED_MARKERS,
) -> Path:
    """Check an output folder before any work; nothing is written.

    * a file, a folder inside a file or an unwritable place: refused;
    * a finished output (any of ``finished``): refused unless ``overwrite`` (then :func:`clear_run_dir`);
    * an unfinished run (``config.yaml``, a checkpoint ...): resumed, so with ``resume`` its ``config.yaml``
      must equal ``config`` (a dataclass or dict) when one is given;
    * a folder with other files in it: refused (it is not an alignlab output).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} is a file, not a folder", where=str(path), fix="give a folder path")
    if not path.exists():
        _check_creatable(path, option)
        return path
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} is not writable", where=str(path), fix=f"give a {option} folder you can write to"
        )
    names = {p.name for p in path.iterdir()}
    if not names:
        return path
    if names & (set(finished) | set(FINISHED_MARKERS)):
        if overwrite:
            return path
        raise ConfigError(
            f"{option} already holds a finished output, which is never changed",
            where=str(path),
            fix="choose a new folder, or pass --overwrite to replace it",
        )
    if names & set(RUN_MARKERS):
        if overwrite or not resume or config is None or not (path / "config.yaml").is_file():
            return path
        try:
            old = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            old = None
        new = yaml.safe_load(
            yaml.safe_dump(
                to_jsonable(to_dict(config) if dataclasses.is_dataclass(config) else config),
                sort_keys=False,
                allow_unicode=True,
            )
        )
        if old != new:
            changed = sorted(_diff_keys(old if isinstance(old, dict) else {}, new))
            raise ConfigError(
                "the folder holds an unfinished run with a different config"
                + (f" (differs in {', '.join(changed[:4])})" if changed else ""),
                where=str(path),
                fix="resume with the same config, choose a new folder, or pass --no-resume or "
                "--overwrite to start it again",
            )
        return path
    if overwrite:
        raise ConfigError(
            f"{option} holds files that are not an alignlab output, so --overwrite does not delete them",
            where=str(path),
            fix="choose a new or empty folder",
        )
    raise ConfigError(
        f"{option} is a folder with other files in it (not an alignlab output)",
        where=str(path),
        fix="choose a new or empty folder",
    )


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k in set(a) | set(b):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out |= _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.add(prefix + str(k))
    return out


def clear_run_dir(path: str | os.PathLike) -> None:
    """Empty an alignlab output folder (``--overwrite``, after every check has passed)."""
    path = Path(path)
    if not path.is_dir():
        return
    names = {p.name for p in path.iterdir()}
    if names and not names & set(FINISHED_MARKERS + RUN_MARKERS):
        raise ConfigError(
            "refusing to empty a folder that is not an alignlab output",
            where=str(path),
            fix="choose a new or empty folder",
        )
    for p in path.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def option_error(e: Exception, options: Mapping[str, str], default: str | None = None) -> AlignlabError:
    """The error of a config class built from command-line options, located at the option.

    ``options`` maps field names to the options that set them (``{"image_size": "--image-size"}``); the
    field the error is about (its ``key``, else the longest one named in the message) becomes the where. A
    ValueError becomes a ConfigError; an AlignlabError keeps its class and its fix.
    """
    message = e.what if isinstance(e, AlignlabError) else str(e)
    key = getattr(e, "key", None)
    if key not in options:
        named = [k for k in options if re.search(rf"\b{re.escape(k)}\b", message)]
        key = max(named, key=len) if named else None
    option = options[key] if key else default
    if isinstance(e, AlignlabError):
        return e.located(option, f"change {option}" if option else None)
    return ConfigError(message, where=option, fix=f"change {option}" if option else None)


def experiment_config(
    cls: type[T],
    quick_settings: Mapping[str, Any],
    *,
    quick: bool,
    seeds: list[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """An experiment's config: its quick settings (or the full defaults), then ``--set`` overrides merged
    deeply, so overriding one nested key (``model_config.width``) keeps the other quick keys; then seeds."""
    base = merge(quick_settings if quick else {}, overrides or {})
    if seeds is not None:
        base["seeds"] = list(seeds)
    return from_dict(cls, base)

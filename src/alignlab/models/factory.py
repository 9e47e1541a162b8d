"""Build, save and load models by name: ``load_model("tiny-dual" | "tiny-cross" | "ckpt:<dir>"
| "hf:<id or dir>" | "open_clip:<arch>@<tag or file>")``.

A saved tiny model is a folder with ``model.json`` (architecture, config, alignlab version),
``tokenizer.json`` and ``model.safetensors``; ``model.json`` is written last, so a folder that has it is
complete. Weights are read with safetensors (no pickle); optimizer checkpoints elsewhere are read with
``torch.load(weights_only=True)``.

Sources other than the tiny models (``hf:``, ``open_clip:``) are registered in
:data:`SOURCES` by :mod:`alignlab.models.adapters` when it is importable.

>>> m = load_model("tiny-dual", config={"width": 32, "embed_dim": 16})
>>> m.name, m.score_semantics
('tiny-dual', 'cosine')
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import alignlab
from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError, ModelError
from alignlab.core.io import atomic_path, to_jsonable, write_json
from alignlab.core.registry import Registry
from alignlab.data.text import WordTokenizer
from alignlab.models.base import resolve_device
from alignlab.models.pretrained import PRETRAINED_ARCHS
from alignlab.models.tiny import ARCHS

# The pretrained LiT dual encoder builds, saves and loads like the tiny models (its locked towers come from
# their packages, imported only when one is built), so trainers and checkpoints treat it alike.
ARCHS.update(PRETRAINED_ARCHS)

# Prefix ("hf", "open_clip") -> loader(rest_of_spec, **kwargs) -> Scorer; filled by alignlab.models.adapters.
SOURCES: Registry[Callable[..., Any]] = Registry("model source")
_ADAPTER_MODULE = "alignlab.models.adapters"


def default_tokenizer(texts: Iterable[str] | None = None) -> WordTokenizer:
    """A tokenizer from ``texts`` if given, else from the whole ShapesWorld grammar vocabulary."""
    if texts is not None:
        return WordTokenizer.build(texts)
    from alignlab.data.shapes import vocabulary

    return WordTokenizer.build(vocabulary())


def build_model(
    arch: str,
    config: Mapping[str, Any] | Any | None = None,
    tokenizer: WordTokenizer | None = None,
    texts: Iterable[str] | None = None,
) -> nn.Module:
    """A new, randomly initialised tiny model. ``config`` is a dict of overrides or a config dataclass."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown model architecture {arch!r}", fix=f"choose one of: {', '.join(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    cfg: Any  # the architecture's own config dataclass
    if config is None or isinstance(config, Mapping):
        cfg = from_dict(cfg_cls, config or {})
    elif isinstance(config, cfg_cls):
        cfg = config
    else:
        raise ConfigError(f"config for {arch} must be a dict or {cfg_cls.__name__}")
    return cls(cfg, tokenizer or default_tokenizer(texts))


def save_model(model: nn.Module, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a tiny model as ``model.safetensors`` + ``tokenizer.json`` + ``model.json`` (written last)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    # A model of ARCHS (tiny or pretrained) has a name, a config dataclass and a tokenizer with save();
    # nn.Module types such attributes as tensors or modules.
    arch_model: Any = model
    arch_model.tokenizer.save(out / "tokenizer.json")
    meta = {
        "arch": arch_model.name,
        "config": to_jsonable(dataclasses.asdict(arch_model.config)),
        "alignlab": alignlab.__version__,
        **(dict(extra) if extra else {}),
    }
    write_json(out / "model.json", meta)
    return out


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model folder written by :func:`save_model` (or a run folder: its ``best/`` model)."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir() and not (p / "model.json").is_file():
        for sub in ("best", "final"):
            if (p / sub / "model.json").is_file():
                p = p / sub
                break
    if not (p / "model.json").is_file():
        raise ModelError(
            "no saved model here (model.json missing)",
            where=str(path),
            fix="give a folder written by alignlab (a run folder or its best/ or final/)",
        )
    try:
        meta = json.loads((p / "model.json").read_text(encoding="utf-8"))
        arch = meta["arch"] if isinstance(meta, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as e:
        raise ModelError(
            f"model.json is not valid: {e}",
            where=str(p / "model.json"),
            fix="the checkpoint is damaged; save the model again or restore the folder",
        ) from None
    if not isinstance(arch, str) or not isinstance(meta.get("config") or {}, dict):
        raise ModelError(
            "model.json does not describe a model (needs an 'arch' name and a 'config' mapping)",
            where=str(p / "model.json"),
            fix="the checkpoint is damaged; save the model again or restore the folder",
        )
    tokenizer = WordTokenizer.load(p / "tokenizer.json")
    model = build_model(arch, meta.get("config") or {}, tokenizer)
    try:
        state = load_file(str(p / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ModelError(
            f"cannot read weights: {e}",
            where=str(p / "model.safetensors"),
            fix="the checkpoint is incomplete or corrupt; retrain or restore it",
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(
            f"weights do not fit the {arch} config in model.json: {_first_mismatch(e)}",
            where=str(p / "model.safetensors"),
            fix="load it with the config it was trained with (model.json of the same run)",
        ) from None
    return model.to(device).eval()


def _first_mismatch(e: RuntimeError) -> str:
    """The first keys named in torch's load_state_dict message (which starts 'Error(s) in loading ...')."""
    text = str(e)
    size = re.search(
        r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
        r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)",
        text,
    )
    if size:
        return f"{size.group(1)} has shape {size.group(2)} in the file but {size.group(3)} in the model"
    parts = []
    for label in ("Missing", "Unexpected"):
        m = re.search(label + r' key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)', text)
        if m:
            keys = re.findall(r'"([^"]+)"', m.group(1))
            parts.append(f"{label.lower()} key(s) {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
    return ", ".join(parts) or text.splitlines()[0]


def load_model(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    config: Mapping[str, Any] | None = None,
    texts: Iterable[str] | None = None,
    **kwargs: Any,
) -> Any:
    """A scorer from a spec string.

    * ``tiny-dual`` / ``tiny-cross`` — a new random tiny model (``config`` overrides; tokenizer from
      ``texts`` or the ShapesWorld vocabulary);
    * ``pretrained-lit`` — locked EfficientNet-Lite0 + MiniLM towers with new projections
      (:mod:`alignlab.models.pretrained`; needs the ``pretrained`` and ``embed`` extras);
    * ``ckpt:<dir>`` — a saved tiny model or run folder;
    * ``hf:<hub id or local dir>`` / ``open_clip:<arch>@<tag or file>`` — real models, through
      :mod:`alignlab.models.adapters` (extra keyword arguments go to the adapter).
    """
    device = resolve_device(device)  # "auto" | "cpu" | "cuda[:i]" | "mps"; an unavailable device fails here
    if spec in ARCHS:
        return build_model(spec, config, texts=texts).to(device).eval()
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "ckpt":
        return load_checkpoint(rest, device)
    if sep and prefix not in SOURCES:
        try:
            importlib.import_module(_ADAPTER_MODULE)
        except ModuleNotFoundError as e:
            if e.name != _ADAPTER_MODULE:
                raise
    if sep and prefix in SOURCES:
        return SOURCES.get(prefix)(rest, device=device, **kwargs)
    if not sep and Path(spec).is_dir() and (Path(spec) / "model.json").is_file():
        return load_checkpoint(spec, device)
    known = [*ARCHS, "ckpt:<dir>", *(f"{p}:<...>" for p in SOURCES.names())]
    raise ConfigError(f"unknown model {spec!r}", fix=f"give one of: {', '.join(known)}")

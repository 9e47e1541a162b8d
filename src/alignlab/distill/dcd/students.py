"""Teachers and students for DCD, and the checks that they fit together.

* **Teacher** — any scorer (:mod:`alignlab.models.base`): typically a tiny cross encoder trained on the
  same data (:func:`alignlab.distill.dcd.train.train_teacher`), loaded with :func:`load_teacher` from a
  spec such as ``ckpt:runs/teacher``. It is frozen: it only scores.
* **Student (a): dual encoder** (:func:`build_dual_student`) — a
  :class:`~alignlab.models.tiny.TinyDualEncoder` with the teacher's tokenizer and image size. Ranking ``N``
  images against ``C`` captions costs
  ``N + C`` encodings and one matrix product, instead of the teacher's ``N × C`` fused pairs.
* **Student (a'): a real dual encoder** (:func:`load_trainable_dual`) — a Hugging Face CLIP, SigLIP or
  BLIP ITC model (``student_init="hf:<folder or hub id>"``), trained whole: both towers and the learned
  logit scale. Its images go through the model's own processor, its texts through its own tokenizer.
* **Student (b): shallow cross encoder** (:func:`build_shallow_cross`) — the teacher's towers, copied
  and frozen, under a new, shallower fusion stack (DCD's METER setting: the student keeps the teacher's
  unimodal encoders and learns fewer cross layers). It is a ``tiny-cross`` model, so it saves and loads
  like any other (``ckpt:<dir>``).

:func:`check_compatible` refuses pairs that cannot share data: different image sizes, a tokenizer that
differs where towers are shared, or a student tokenizer that cannot spell words of the training captions.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from alignlab.core.errors import AlignlabError, ConfigError, ModelError
from alignlab.core.progress import info, library_bars_off
from alignlab.data.text import UNK, WordTokenizer, split_words
from alignlab.models.factory import build_model, load_model
from alignlab.models.tiny import TinyCrossEncoder, TinyDualEncoder

STUDENTS = ("dual", "shallow-cross")


def load_teacher(spec: str | Any, device: str = "cpu", **kwargs: Any) -> Any:
    """A frozen teacher scorer from a spec (``ckpt:<dir>``, ``hf:...``) or an already built model.

    A checkpoint that does not load is a :class:`ModelError` naming it.
    """
    if not isinstance(spec, str):
        model = spec
    else:
        if not spec:
            raise ConfigError(
                "no teacher given",
                fix="pass --teacher ckpt:<dir> (train one with `alignlab distill dcd teacher`)",
            )
        try:
            model = load_model(spec, device=device, **kwargs)
        except AlignlabError as e:
            raise ModelError(
                f"teacher checkpoint does not load: {e.what}",
                where=e.where or spec,
                fix=e.fix or "check the path; a tiny checkpoint folder holds model.json",
            ) from None
        except Exception as e:  # a corrupt file can raise anything from the reader below
            raise ModelError(
                f"teacher checkpoint does not load: {type(e).__name__}: {e}",
                where=spec,
                fix="the checkpoint is incomplete or corrupt; retrain or restore it",
            ) from None
    if not hasattr(model, "score"):
        raise ModelError(
            f"teacher {type(model).__name__} is not a scorer (no score(images, texts))",
            fix="give an image–text model (see alignlab.models.base)",
        )
    if isinstance(model, nn.Module):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model


def _image_size(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    size = getattr(cfg, "image_size", None)
    return int(size) if isinstance(size, int) else None


def check_compatible(
    teacher: Any, student: Any, captions: Iterable[str] | None = None, shares_towers: bool = False
) -> None:
    """Raise :class:`ConfigError` when ``teacher`` and ``student`` cannot be trained together.

    * image sizes differ (both models declare ``config.image_size``): the batch is rendered once, so both
      would not see the same pictures;
    * with ``shares_towers`` the tokenizers must be identical (the student reads the teacher's token ids);
    * otherwise the student's tokenizer must spell every word of ``captions`` that the teacher's can:
      a word the student maps to ``[UNK]`` would make a positive and its hard negative look the same.
    """
    ts, ss = _image_size(teacher), _image_size(student)
    if ts is not None and ss is not None and ts != ss:
        raise ConfigError(
            f"teacher and student see different image sizes ({ts} vs {ss})",
            fix=f"build the student with image_size={ts}",
        )
    t_tok: Any = getattr(teacher, "tokenizer", None)
    s_tok: Any = getattr(student, "tokenizer", None)
    if shares_towers:
        if t_tok is None or s_tok is None or t_tok.vocab != s_tok.vocab:
            raise ConfigError(
                "a student that shares the teacher's towers needs the teacher's tokenizer",
                fix="build it with build_shallow_cross(teacher)",
            )
        return
    if s_tok is None or captions is None:
        return
    if not isinstance(s_tok, WordTokenizer):  # a real model's tokenizer (BPE, WordPiece): see _check_unknown
        _check_unknown(s_tok, captions)
        return
    if not isinstance(t_tok, WordTokenizer):
        t_tok = None  # a real teacher's tokenizer spells (nearly) everything: check the student's alone
    words = {w for c in captions for w in split_words(c)}
    missing = sorted(
        w
        for w in words
        if s_tok.index.get(w, UNK) == UNK and (t_tok is None or t_tok.index.get(w, UNK) != UNK)
    )
    if missing:
        raise ConfigError(
            f"the student's tokenizer cannot spell {len(missing)} word(s) of the training captions "
            f"that the teacher can: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            fix="build the student with the teacher's tokenizer (the default)",
        )


def _check_unknown(tokenizer: Any, captions: Iterable[str], limit: int = 50_000) -> None:
    """Say which caption words a Hugging Face tokenizer maps to its unknown token (byte-level BPE, as in
    CLIP, never does; WordPiece may, for rare characters). Only a note: a few unknown words in real
    captions should not stop a run, but a tokenizer that cannot spell the data is worth knowing about."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not callable(tokenizer):
        return
    words = sorted({w for c in captions for w in split_words(c)})[:limit]
    if not words:
        return
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    missing = [w for w, row in zip(words, ids, strict=True) if unk in row]
    if missing:
        info(
            f"note: the student's tokenizer maps {len(missing)} caption word(s) to its unknown token: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )


def is_trainable_dual(model: Any) -> bool:
    """True for a real dual encoder with differentiable pieces (``preprocess_images``, ``tokenize``,
    ``embed_images``, ``embed_texts``, ``logit_params``): the Hugging Face CLIP, SigLIP and BLIP ITC
    adapters."""
    return isinstance(model, nn.Module) and all(
        callable(getattr(model, a, None))
        for a in ("preprocess_images", "tokenize", "embed_images", "embed_texts", "logit_params")
    )


def load_trainable_dual(spec: str, device: str = "cpu") -> Any:
    """Load ``spec`` (``hf:<folder or hub id>[#itc]``) as a student to train: every parameter trainable.

    The adapters load in eval mode and score under ``torch.no_grad``; training goes through their
    differentiable pieces instead (``embed_images(preprocess_images(x))``, ``embed_texts(tokenize(t))``),
    and the training loop switches train/eval mode around its dev evaluations.
    """
    model = load_model(spec, device=device)
    if not is_trainable_dual(model):
        raise ConfigError(
            f"student_init {spec!r} is a {type(model).__name__}, not a dual encoder that can be trained",
            fix="give a CLIP or SigLIP folder, a BLIP folder with #itc, or a tiny dual ckpt:<dir>",
        )
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    return model


def hf_student_spec(model: Any, folder: str | os.PathLike) -> str:
    """The spec that loads a student saved by :func:`save_trainable_dual` to ``folder``.

    BLIP ITC needs ``#itc``.
    """
    mode = getattr(model, "mode", "dual")
    return f"hf:{folder}" + ("#itc" if mode == "itc" else "")


def save_trainable_dual(model: Any, folder: str | os.PathLike) -> Path:
    """``save_pretrained`` of the model and its processor (or image processor + tokenizer) into ``folder``.

    Written to a sibling ``.tmp`` folder first and renamed, so ``folder`` is never half-written.
    """
    out = Path(folder)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with library_bars_off():  # transformers draws a bar per saved shard
        model.model.save_pretrained(tmp)
        proc = model.processor
        if hasattr(proc, "save_pretrained"):
            proc.save_pretrained(tmp)
        else:  # the image processor and tokenizer were loaded separately (no processor_config.json)
            model.image_processor.save_pretrained(tmp)
            model.tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def build_dual_student(
    teacher: Any, model_config: Mapping[str, Any] | None = None, captions: Iterable[str] | None = None
) -> TinyDualEncoder:
    """A new tiny dual encoder with the teacher's tokenizer and image size.

    Without a teacher tokenizer, one is built from ``captions``.
    """
    cfg = dict(model_config or {})
    size = _image_size(teacher)
    if size is not None:
        cfg.setdefault("image_size", size)
    tok = getattr(teacher, "tokenizer", None)
    if not isinstance(tok, WordTokenizer):
        if captions is None:
            raise ConfigError("the teacher has no word tokenizer to share", fix="pass the training captions")
        tok = WordTokenizer.build(captions)
    model = build_model("tiny-dual", cfg, tok)
    assert isinstance(model, TinyDualEncoder)
    return model


def build_shallow_cross(teacher: Any, fusion_layers: int = 1, **overrides: Any) -> TinyCrossEncoder:
    """A tiny cross encoder with the teacher's towers (copied, frozen) and ``fusion_layers`` new
    fusion layers."""
    if not isinstance(teacher, TinyCrossEncoder):
        raise ModelError(
            f"a shallow cross student needs a tiny cross-encoder teacher, got {type(teacher).__name__}",
            fix="use a tiny-cross teacher, or the dual student",
        )
    if fusion_layers < 1:
        raise ConfigError("fusion_layers must be >= 1")
    cfg = copy.deepcopy(teacher.config)
    cfg.fusion_layers = fusion_layers
    for k, v in overrides.items():
        if k in ("width", "image_size", "image_channels", "image_layers", "text_layers", "max_text_len"):
            raise ConfigError(f"{k} of a shallow cross student is fixed by the teacher's towers")
        if not hasattr(cfg, k):
            raise ConfigError(
                f"unknown key {k!r} for a shallow cross student",
                fix="only fusion_layers, heads, dropout and pair_chunk can change",
            )
        setattr(cfg, k, v)
    student = build_model("tiny-cross", cfg, teacher.tokenizer)
    assert isinstance(student, TinyCrossEncoder)
    student.image_encoder().load_state_dict(teacher.image_encoder().state_dict())
    student.text_encoder().load_state_dict(teacher.text_encoder().state_dict())
    # only the two towers are frozen (set_encoders_trainable would also freeze a dual_score head)
    for tower in (student.image_encoder(), student.text_encoder()):
        for p in tower.parameters():
            p.requires_grad_(False)
    return student


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    if not isinstance(model, nn.Module):
        return 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

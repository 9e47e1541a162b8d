"""Evaluating any scorer on image–text pairs, optionally under a named protocol.

Dual encoders are evaluated from embeddings (every image and every caption encoded once, in batches);
cross encoders from the full ``[n_images, n_captions]`` score matrix (``n_images × n_captions``
forward passes — the cost that distillation into a dual encoder removes).

``distributed=True`` (every rank of a torch.distributed process group calls it, e.g. inside a task's
``evaluate`` under torchrun): each rank encodes or scores a contiguous block of the images (and
captions), the blocks are gathered once and the padded duplicates dropped
(:func:`alignlab.train.distributed.eval_shard`), and every rank gets the single-process report.
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.core.progress import progress
from alignlab.data.pairs import ImageTextPairs
from alignlab.models.base import load_images_for
from alignlab.retrieval.metrics import evaluate_embeddings, evaluate_scores
from alignlab.retrieval.protocols import evaluate_protocol, evaluate_protocol_scores
from alignlab.train import distributed as ddp_


def encode_pairs(
    model: Any, pairs: ImageTextPairs, batch_size: int = 256, distributed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings ``[n_images, D]`` and caption embeddings ``[n_captions, D]`` of a dual encoder.

    Images are decoded batch by batch in the form the model wants (:func:`load_images_for`: natural size
    for real models, which preprocess themselves; ``uint8`` tensors otherwise). ``distributed``: see the
    module docstring.
    """
    if hasattr(model, "eval"):
        model.eval()
    ii = _items(pairs.n_images, distributed)
    ci = _items(pairs.n_captions, distributed)
    img = [
        model.encode_images(load_images_for(model, pairs, ii[s : s + batch_size]))
        for s in _batches(len(ii), batch_size, "encoding images")
    ]
    txt = [
        model.encode_texts([pairs.captions[c] for c in ci[s : s + batch_size]])
        for s in _batches(len(ci), batch_size, "encoding captions")
    ]
    img_t, txt_t = torch.cat(img).float(), torch.cat(txt).float()
    if distributed:
        img_t, txt_t = ddp_.gather_eval(img_t, pairs.n_images), ddp_.gather_eval(txt_t, pairs.n_captions)
    return img_t.cpu(), txt_t.cpu()


def _batches(n: int, size: int, desc: str) -> Any:
    """Batch starts over ``n`` items; a progress bar only when there is more than one batch."""
    starts = range(0, n, size)
    return progress(starts, desc=desc, unit="batch") if len(starts) > 1 else starts


def _items(n: int, distributed: bool) -> list[int]:
    return ddp_.eval_shard(n).tolist() if distributed else list(range(n))


def score_matrix(
    model: Any, pairs: ImageTextPairs, image_batch: int = 16, distributed: bool = False
) -> torch.Tensor:
    """All-pairs scores ``[n_images, n_captions]`` of any scorer (a cross encoder scores each pair).

    ``distributed``: each rank scores a block of the image rows (see the module docstring).
    """
    if hasattr(model, "eval"):
        model.eval()
    ii = _items(pairs.n_images, distributed)
    rows = [
        model.score(load_images_for(model, pairs, ii[s : s + image_batch]), pairs.captions)
        for s in _batches(len(ii), image_batch, "scoring all pairs")
    ]
    scores = torch.cat(rows).float()
    if distributed:
        scores = ddp_.gather_eval(scores, pairs.n_images)
    return scores.cpu()


def evaluate_model(
    model: Any,
    pairs: ImageTextPairs,
    protocol: str | None = None,
    distributed: bool = False,
    batch_size: int | None = None,
    **kwargs: Any,
) -> Any:
    """A retrieval report of ``model`` on ``pairs`` (under ``protocol`` if given: folds, size check).

    ``distributed=True``: every rank of the process group calls it and gets the same report.
    ``batch_size``: images (and captions) per encoding call, or image rows per all-pairs scoring call
    (default 256 and 16).
    """
    if getattr(model, "is_dual", False):
        img, txt = encode_pairs(model, pairs, batch_size=batch_size or 256, distributed=distributed)
        if protocol:
            return evaluate_protocol(protocol, img, txt, pairs, **kwargs)
        return evaluate_embeddings(img, txt, pairs.relevance, **kwargs)
    scores = score_matrix(model, pairs, image_batch=batch_size or 16, distributed=distributed)
    if protocol:
        return evaluate_protocol_scores(protocol, scores, pairs, **kwargs)
    return evaluate_scores(scores, pairs.relevance, **kwargs)

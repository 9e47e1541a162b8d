"""Evaluating any scorer on image–text pairs, optionally under a named protocol.

Dual encoders are evaluated from embeddings (every image and every caption encoded once, in batches);
cross encoders from the full ``[n_images, n_captions]`` score matrix (``n_images × n_captions``
forward passes — the cost that distillation into a dual encoder removes).
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.core.progress import progress
from alignlab.data.pairs import ImageTextPairs
from alignlab.models.base import load_images_for
from alignlab.retrieval.metrics import evaluate_embeddings, evaluate_scores
from alignlab.retrieval.protocols import evaluate_protocol, evaluate_protocol_scores


def encode_pairs(model: Any, pairs: ImageTextPairs, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings ``[n_images, D]`` and caption embeddings ``[n_captions, D]`` of a dual encoder.

    Images are decoded batch by batch in the form the model wants (:func:`load_images_for`: natural size
    for real models, which preprocess themselves; ``uint8`` tensors otherwise).
    """
    if hasattr(model, "eval"):
        model.eval()
    img = [model.encode_images(load_images_for(model, pairs, range(s, min(s + batch_size, pairs.n_images))))
           for s in progress(range(0, pairs.n_images, batch_size), desc="encoding images", unit="batch")]
    txt = [model.encode_texts(pairs.captions[s:s + batch_size])
           for s in progress(range(0, pairs.n_captions, batch_size), desc="encoding captions", unit="batch")]
    return torch.cat(img).float().cpu(), torch.cat(txt).float().cpu()


def score_matrix(model: Any, pairs: ImageTextPairs, image_batch: int = 16) -> torch.Tensor:
    """All-pairs scores ``[n_images, n_captions]`` of any scorer (a cross encoder scores each pair)."""
    if hasattr(model, "eval"):
        model.eval()
    rows = [model.score(load_images_for(model, pairs, range(s, min(s + image_batch, pairs.n_images))), pairs.captions)
            for s in progress(range(0, pairs.n_images, image_batch), desc="scoring all pairs", unit="batch")]
    return torch.cat(rows).float().cpu()


def evaluate_model(model: Any, pairs: ImageTextPairs, protocol: str | None = None, **kwargs: Any) -> Any:
    """A retrieval report of ``model`` on ``pairs`` (under ``protocol`` if given: folds, size check)."""
    if getattr(model, "is_dual", False):
        img, txt = encode_pairs(model, pairs)
        if protocol:
            return evaluate_protocol(protocol, img, txt, pairs, **kwargs)
        return evaluate_embeddings(img, txt, pairs.relevance, **kwargs)
    scores = score_matrix(model, pairs)
    if protocol:
        return evaluate_protocol_scores(protocol, scores, pairs, **kwargs)
    return evaluate_scores(scores, pairs.relevance, **kwargs)

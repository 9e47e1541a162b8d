"""The teacher as a miner of hard negatives, and a cache of a frozen teacher's scores.

DCD trains a fast student on few, well-chosen negatives. For every image of a batch:

1. **pool** — draw ``M`` candidate captions (:func:`draw_pools`): captions of the *other* images of the
   batch (batches are whole near-duplicate groups, so siblings' captions are in reach), never a caption
   that is true of the image — by the truth evaluator on ShapesWorld data (a generic "there is a red
   circle" of another image is no negative of an image with a red circle), else its own captions — nor
   one with the same text as its own; topped up from the whole set when the batch is too small. The
   old pools, which excluded only the image's own captions, stay available as ``exclude="source"``
   (:data:`POOL_EXCLUSIONS`; the DCD ablation arm ``dcd-source-pools``);
2. **score** — the teacher scores the positive ``t⁺`` and the pool ``t_1..t_M``
   (:class:`TeacherScores`);
3. **keep** — the ``k`` highest-scored candidates (the hardest by the teacher), of which a share
   ``random_mix`` is replaced by uniformly drawn pool members (:func:`select_hard`). The kept list is
   ``[positive, hard_1, ..., hard_k]`` and the teacher's scores are gathered in *the same order*, so
   ``teacher[:, 0]`` is the positive's score — asserted, because DCD's released code lost this alignment
   by sorting the teacher's scores alone (see :mod:`alignlab.distill.dcd.loss`).

Without a teacher (baseline), :func:`select_random` keeps ``k`` uniformly drawn pool members.

>>> import numpy as np, torch
>>> cols, t = select_hard(torch.tensor([2.0]), torch.tensor([[0.1, 3.0, -1.0, 0.5]]), keep=2,
...                       rng=np.random.default_rng(0))
>>> cols.tolist(), t.tolist()
([[1, 3]], [[2.0, 3.0, 0.5]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import ConfigError, ModelError
from alignlab.data.pairs import ImageTextPairs
from alignlab.models.base import CrossEncoder, DualEncoder, TokenStates


def check_pool(pool_size: int, keep: int, random_mix: float = 0.0) -> None:
    """Validate M, k and the random share: ``1 <= k < M`` and ``0 <= random_mix <= 1``."""
    if pool_size < 1 or keep < 1:
        raise ConfigError(f"pool_size (M={pool_size}) and keep (k={keep}) must be >= 1")
    if keep >= pool_size:
        raise ConfigError(
            f"keep k={keep} must be smaller than the pool size M={pool_size}",
            fix="the teacher must have candidates to choose from: use k < M (DCD: M=15, k=7)",
        )
    if not 0.0 <= random_mix <= 1.0:
        raise ConfigError(f"random_mix must be in [0, 1], got {random_mix}")


# What a pool leaves out: "truth" (every caption true of the image; ShapesWorld's evaluator, else the
# relevance map) or "source" (only the image's own captions: the pools before truth relevance, kept as an
# ablation; they can hold false negatives).
POOL_EXCLUSIONS = ("truth", "source")


def draw_pools(
    batch: Sequence[int],
    pairs: ImageTextPairs,
    pool_size: int,
    rng: np.random.Generator,
    exclude: str = "truth",
) -> np.ndarray:
    """``[B, M]`` candidate caption ids for the images ``batch`` (see the module docstring).

    ``exclude="source"`` draws exactly the pools of the code before truth relevance (same random
    stream): only the image's own captions and their texts are left out.
    """
    if exclude not in POOL_EXCLUSIONS:
        raise ConfigError(
            f"unknown pool exclusion {exclude!r}", fix=f"use one of {', '.join(POOL_EXCLUSIONS)}"
        )
    batch = [int(i) for i in batch]
    sources = pairs.sources
    in_batch = [c for i in batch for c in sources[i]]
    true_in_batch = pairs.known_true(batch, in_batch) if exclude == "truth" and in_batch else None
    pools = np.empty((len(batch), pool_size), dtype=np.int64)
    for row, i in enumerate(batch):
        own = set(sources[i])
        if true_in_batch is not None:
            own |= {c for c, t in zip(in_batch, true_in_batch[row]) if t}
        own_text = {pairs.captions[c] for c in sources[i]}
        cand = [c for c in in_batch if c not in own and pairs.captions[c] not in own_text]
        if len(cand) >= pool_size:
            pools[row] = rng.choice(np.asarray(cand), size=pool_size, replace=False)
            continue
        # A small batch: top up with captions of other images from the whole set.
        extra: list[int] = []
        taken = set(cand)
        for c in rng.permutation(pairs.n_captions):
            if len(cand) + len(extra) >= pool_size:
                break
            c = int(c)
            if c not in own and c not in taken and pairs.captions[c] not in own_text:
                if exclude == "truth" and pairs.known_true([i], [c])[0, 0]:
                    continue
                extra.append(c)
        got = cand + extra
        if len(got) < pool_size:
            raise ConfigError(
                f"only {len(got)} candidate captions for image {i}, pool_size is {pool_size}",
                fix="use a smaller pool_size or more data",
            )
        pools[row] = rng.permutation(np.asarray(got))[:pool_size]
    return pools


def select_hard(
    pos_scores: torch.Tensor,
    pool_scores: torch.Tensor,
    keep: int,
    rng: np.random.Generator,
    random_mix: float = 0.0,
) -> tuple[np.ndarray, torch.Tensor]:
    """Keep the ``keep`` pool members the teacher scores highest (``random_mix`` of them drawn at random).

    Returns ``cols [B, k]`` (indices into the pool, hardest first, random draws last) and the teacher's
    scores ``[B, 1 + k]`` of ``[positive, kept...]`` in that order.
    """
    b, m = pool_scores.shape
    check_pool(m, keep, random_mix)
    n_rand = int(round(random_mix * keep))
    n_hard = keep - n_rand
    # A stable sort keeps equal scores in pool order, so mining is deterministic.
    order = torch.sort(pool_scores.detach().cpu(), dim=1, descending=True, stable=True).indices.numpy()
    cols = np.empty((b, keep), dtype=np.int64)
    cols[:, :n_hard] = order[:, :n_hard]
    for row in range(b):
        if n_rand:
            cols[row, n_hard:] = rng.choice(order[row, n_hard:], size=n_rand, replace=False)
    kept = torch.gather(pool_scores, 1, torch.from_numpy(cols).to(pool_scores.device))
    teacher = torch.cat([pos_scores.reshape(-1, 1), kept], dim=1)
    # The invariant the DCD loss relies on: column 0 is the positive, with its own teacher score.
    assert torch.equal(teacher[:, 0], pos_scores.reshape(-1)), "positives lost alignment with their scores"
    return cols, teacher


def select_random(batch_size: int, pool_size: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, k]`` pool indices drawn uniformly without replacement (the no-teacher baseline)."""
    check_pool(pool_size, keep)
    return np.stack([rng.choice(pool_size, size=keep, replace=False) for _ in range(batch_size)]).astype(
        np.int64
    )


def slice_tokens(tokens: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a model's tokens (a tensor, a tuple of tensors or a dict of tensors).

    Texts are tokenized once and their states computed in chunks, so every chunk has the same padded
    length (the same bits as one tokenization of everything)."""
    if isinstance(tokens, torch.Tensor):
        return tokens[start:stop]
    if isinstance(tokens, tuple | list):
        return type(tokens)(slice_tokens(t, start, stop) for t in tokens)
    if isinstance(tokens, Mapping):
        return type(tokens)({k: slice_tokens(v, start, stop) for k, v in tokens.items()})  # type: ignore[call-arg]
    return tokens


def token_count(tokens: Any) -> int:
    if isinstance(tokens, torch.Tensor):
        return int(tokens.shape[0])
    if isinstance(tokens, tuple | list):
        return token_count(tokens[0])
    if isinstance(tokens, Mapping):
        return token_count(next(iter(tokens.values())))
    raise ModelError(f"cannot count tokens of type {type(tokens).__name__}")


@torch.no_grad()
def caption_states(model: CrossEncoder, captions: list[str], text_batch: int = 512) -> TokenStates:
    """A cross encoder's text states of ``captions``: tokenized once, the text tower in chunks."""
    tokens = model.tokenize(captions)
    return TokenStates.cat(
        [
            model.text_states(slice_tokens(tokens, s, s + text_batch))
            for s in range(0, token_count(tokens), text_batch)
        ]
    )


@torch.no_grad()
def cross_states(
    model: CrossEncoder,
    images: Callable[[int, int], Any],
    n_images: int,
    captions: list[str],
    image_batch: int = 256,
    text_batch: int = 512,
) -> tuple[TokenStates, TokenStates]:
    """A cross encoder's image and text states of a whole data set (images read per batch)."""
    img = TokenStates.cat(
        [
            model.image_states(model.preprocess_images(images(s, min(s + image_batch, n_images))))
            for s in range(0, n_images, image_batch)
        ]
    )
    return img, caption_states(model, captions, text_batch)


def has_states(model: Any) -> bool:
    """True when the cross encoder implements the training contract's states and fusion."""
    return all(
        getattr(type(model), a, None) is not getattr(CrossEncoder, a)
        for a in ("image_states", "text_states", "fuse_pairs")
    )


class TeacherScores:
    """A frozen teacher's scores of (image, caption) pairs of one data set.

    * a trainable cross encoder (the training contract: ``image_states``, ``text_states``, ``fuse_pairs``;
      the tiny one or Hugging Face BLIP ITM with ``#itm-logit``) whose scores are logits: the states of
      every image and caption are computed once; a query then costs only the fusion of its pairs;
    * a dual encoder: embeddings once, then ``scale · cos + bias``;
    * any other scorer: ``score(image, its captions)`` image by image (slow but general).

    Queries are computed in one deterministic pass (fixed chunking), so the same query always gives the
    same bits whether or not anything was asked before — results never depend on cache state.
    """

    def __init__(self, teacher: Any, pairs: ImageTextPairs, chunk: int = 2048, image_batch: int = 256):
        self.teacher = teacher
        self.pairs = pairs
        self.chunk = chunk
        self.image_batch = image_batch
        self.kind = (
            "cross"
            # the fusion gives match logits: the fast path only where score() gives them too
            if isinstance(teacher, CrossEncoder)
            and has_states(teacher)
            and teacher.score_semantics == "logit"
            else (
                "dual" if isinstance(teacher, DualEncoder) or getattr(teacher, "is_dual", False) else "scorer"
            )
        )
        if self.kind == "scorer" and not hasattr(teacher, "score"):
            raise ModelError(
                f"teacher {type(teacher).__name__} has no score(images, texts)",
                fix="give a scorer (see alignlab.models.base)",
            )
        self._img: torch.Tensor | None = None
        self._txt: torch.Tensor | None = None
        self._img_states: TokenStates | None = None
        self._txt_states: TokenStates | None = None
        self.pairs_scored = 0  # how many (image, caption) pairs went through the teacher

    @torch.no_grad()
    def _prepare(self) -> None:
        if self._img is not None or self._img_states is not None or self.kind == "scorer":
            return
        t = self.teacher
        if hasattr(t, "eval"):
            t.eval()
        n, c = self.pairs.n_images, self.pairs.n_captions
        if self.kind == "dual":
            self._img = torch.cat(
                [
                    t.encode_images(self.pairs.load_images(range(s, min(s + self.image_batch, n))))
                    for s in range(0, n, self.image_batch)
                ]
            ).float()
            self._txt = torch.cat(
                [t.encode_texts(self.pairs.captions[s : s + 512]) for s in range(0, c, 512)]
            ).float()
            return
        self._img_states, self._txt_states = cross_states(
            t,
            lambda lo, hi: self.pairs.load_images(range(lo, hi)),
            n,
            list(self.pairs.captions),
            self.image_batch,
        )

    def states(self) -> tuple[TokenStates, TokenStates]:
        """The image and caption :class:`TokenStates` of a cross teacher (every image, every caption)."""
        if self.kind != "cross":
            raise ModelError(
                "only a cross-encoder teacher has token states to share",
                fix="use a cross-encoder teacher (tiny-cross, a ckpt: of one, or hf BLIP ITM)",
            )
        self._prepare()
        assert self._img_states is not None and self._txt_states is not None
        return self._img_states, self._txt_states

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features of every image and caption (cross: ``TokenStates.pooled``; dual: embeddings)."""
        self._prepare()
        if self.kind == "cross":
            img, txt = self.states()
            if img.pooled is None or txt.pooled is None:
                raise ModelError("this cross teacher has no pooled features", fix="use a tiny-cross teacher")
            return img.pooled, txt.pooled
        if self.kind == "dual":
            assert self._img is not None and self._txt is not None
            return self._img, self._txt
        raise ModelError("this teacher exposes no features", fix="use a tiny or dual-encoder teacher")

    @torch.no_grad()
    def pair_scores(self, image_ids: np.ndarray, caption_ids: np.ndarray) -> torch.Tensor:
        """Scores ``[P]`` of the pairs ``(image_ids[p], caption_ids[p])``."""
        image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        caption_ids = np.asarray(caption_ids, dtype=np.int64).reshape(-1)
        self._prepare()
        self.pairs_scored += len(image_ids)
        if self.kind == "dual":
            assert self._img is not None and self._txt is not None
            scale = float(getattr(self.teacher, "score_scale", 1.0))
            bias = float(getattr(self.teacher, "score_bias", 0.0))
            ii, cc = torch.from_numpy(image_ids), torch.from_numpy(caption_ids)
            return (
                scale * (self._img[ii.to(self._img.device)] * self._txt[cc.to(self._txt.device)]).sum(-1)
                + bias
            ).cpu()
        if self.kind == "cross":
            img, txt = self.states()
            out = []
            for s in range(0, len(image_ids), self.chunk):
                ii = torch.from_numpy(image_ids[s : s + self.chunk])
                cc = torch.from_numpy(caption_ids[s : s + self.chunk])
                # trim=True: drop the padding shared by the whole chunk
                out.append(self.teacher.fuse_pairs(img.select(ii), txt.select(cc, trim=True)).float().cpu())
            return torch.cat(out) if out else torch.zeros(0)
        # Any scorer: one score() call per image with the captions asked for it.
        scores = torch.empty(len(image_ids))
        for i in np.unique(image_ids):
            rows = np.flatnonzero(image_ids == i)
            texts = [self.pairs.captions[c] for c in caption_ids[rows]]
            s = self.teacher.score(self.pairs.load_images([int(i)]), texts)
            scores[torch.from_numpy(rows)] = s.reshape(-1).float().cpu()
        return scores

    def grid(self, image_ids: np.ndarray, caption_ids: np.ndarray) -> torch.Tensor:
        """Scores ``[B, C]`` of every image in ``image_ids`` with every caption in ``caption_ids``."""
        image_ids = np.asarray(image_ids, dtype=np.int64)
        caption_ids = np.asarray(caption_ids, dtype=np.int64)
        b, c = len(image_ids), len(caption_ids)
        return self.pair_scores(np.repeat(image_ids, c), np.tile(caption_ids, b)).view(b, c)

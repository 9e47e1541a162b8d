"""The shared image–text training tasks for :func:`alignlab.train.loop.fit`, written against the model
contract.

A task reads a model only through the training contract of :mod:`alignlab.models.base`
(``preprocess_images``, ``tokenize``, ``embed_images``/``embed_texts``/``logit_params`` for a dual encoder,
``image_states``/``text_states``/``fuse_grid`` for a cross encoder), so the tiny models, the pretrained LiT
encoder, Hugging Face CLIP/SigLIP/BLIP and open_clip models all train with the same code.

* :class:`DualContrastiveTask` — a dual encoder on in-batch negatives (InfoNCE or VSE++). An epoch is
  one pass over the *images*; each image comes with one of its own captions (``pairs.sources``), drawn
  per epoch, so that no image appears twice in a batch. A caption of another image can still be true
  of an image ("there is a circle"): every batch carries ``positives [B, B]``
  (:meth:`ImageTextPairs.known_true`: the truth evaluator on ShapesWorld, the relevance map and equal
  texts elsewhere), and the losses take such pairs out of the negatives (masked InfoNCE, see
  :mod:`alignlab.train.losses`). A *warm start* (``warm_loss`` for the first ``warm_epochs`` epochs,
  then ``loss``) is an option.
* :class:`CrossMatchTask` — a cross encoder scoring every (image, caption) pair of the batch; the loss
  is the symmetric cross-entropy over the batch grid (listwise image–text matching), with true pairs
  masked out of the negatives as above.

Dev evaluation is the caller's: a task takes ``evaluate`` (``model -> {metric: value}``, e.g.
:func:`alignlab.retrieval.training.dev_evaluator`; ``None``: no dev metrics), because the retrieval
metrics live above this layer.

Under torchrun (DDP, :mod:`alignlab.train.distributed`) ``batch(epoch, index)`` is the global micro-batch
and each rank trains its slice (``local_batch``); every loss runs the model in *one* DDP forward pass
(:func:`~alignlab.train.distributed.forward_through`). With ``gather`` the losses see the whole global
batch as negatives, so a run on ``W`` ranks follows the run of one process with ``W`` times the batch.

A batch is ``(images, texts, image ids, positives)``; ``positives[i, j]`` = caption ``j`` of the batch
is true of image ``i`` (bool, over the *global* batch, the same on every rank).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import DataError, ModelError
from alignlab.core.seed import derive_seed
from alignlab.models.base import CrossEncoder, DualEncoder, Scorer, TokenStates, load_images_for
from alignlab.train import distributed as ddp_
from alignlab.train.loop import epoch_permutation
from alignlab.train.losses import exclude_true

Evaluate = Callable[[Any], Mapping[str, float]]  # the plain model -> dev metrics

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on the learned logit scale

_NATIVE = SimpleNamespace(native_images=True)  # asks load_images_for for images at their natural size


# --- the contract, as the tasks use it --------------------------------------------------------------


def _overrides(model: Any, base: type, name: str) -> bool:
    return getattr(type(model), name, None) is not getattr(base, name, None)


def check_trainable(model: Any) -> None:
    """Raise :class:`ModelError` when ``model`` lacks the training contract its kind needs (models/base.py).

    A dual encoder needs ``preprocess_images``, ``tokenize``, ``embed_images`` and ``embed_texts`` of its
    own; a cross encoder ``preprocess_images``, ``tokenize``, ``image_states``, ``text_states`` and
    ``fuse_pairs``. Called before any training, so that a scorer which can only score fails at once.
    """
    model = ddp_.unwrap(model)
    name = getattr(model, "name", type(model).__name__)
    kind: str
    base: type
    needed: tuple[str, ...]
    if isinstance(model, DualEncoder):
        kind, base, needed = "dual", DualEncoder, ("embed_images", "embed_texts")
    elif isinstance(model, CrossEncoder):
        kind, base, needed = "cross", CrossEncoder, ("image_states", "text_states", "fuse_pairs")
    else:
        raise ModelError(
            f"{name} is neither a dual nor a cross encoder (models.base.DualEncoder / CrossEncoder)",
            fix="train a tiny, pretrained-lit, Hugging Face or open_clip model",
        )
    missing = [m for m in ("preprocess_images", *needed) if not _overrides(model, base, m)]
    if not callable(getattr(model, "tokenize", None)):
        missing.append("tokenize")
    if missing:
        raise ModelError(
            f"{name} cannot be trained as a {kind} encoder: it has no {', '.join(missing)}",
            fix="train a tiny, pretrained-lit, Hugging Face or open_clip model (models/base.py)",
        )


def _dual_outputs(m: Any, pixels: torch.Tensor, tokens: Any) -> dict[str, Any]:
    image_emb = m.embed_images(pixels)
    text_emb = m.embed_texts(tokens)
    scale, bias = m.logit_params()
    # scale.clamp(max=100) is, bit for bit, what the tiny models' forward gave (logit_scale.exp().clamp).
    return {
        "image_emb": image_emb,
        "text_emb": text_emb,
        "logit_scale": (
            scale.clamp(max=MAX_LOGIT_SCALE)
            if scale is not None
            else torch.ones((), device=image_emb.device, dtype=image_emb.dtype)
        ),
        "logit_bias": bias,
    }


def dual_outputs(model: Any, pixels: torch.Tensor, tokens: Any) -> dict[str, Any]:
    """``{"image_emb", "text_emb", "logit_scale", "logit_bias"}`` of preprocessed images and tokens.

    The embeddings are unit vectors ``[B, D]``; ``logit_scale`` is the model's learned scale capped at 100
    (1 where it has none) and ``logit_bias`` its learned bias or None. Both towers run in one DDP forward
    when ``model`` is a :class:`~alignlab.train.distributed.DDPModel`.
    """
    return ddp_.forward_through(model, _dual_outputs, pixels, tokens)


def _match_grid(m: Any, pixels: torch.Tensor, tokens: Any) -> torch.Tensor:
    return m.fuse_grid(m.image_states(pixels), m.text_states(tokens))


def match_grid(model: Any, pixels: torch.Tensor, tokens: Any) -> torch.Tensor:
    """Match logits ``[N, M]`` of every image with every text (each tower once per side; one DDP forward)."""
    return ddp_.forward_through(model, _match_grid, pixels, tokens)


def gather_states(states: TokenStates) -> tuple[TokenStates, int]:
    """Every rank's rows of ``states`` in rank order, and this rank's row offset (DDP; itself in one process).

    Float tensors are gathered with gradients (they flow back to the rank that computed them), integer
    and mask tensors without. Masked states must already share one token length on every rank
    (:meth:`TokenStates.pad_to` the longest, :func:`pad_states`). ``pooled`` is not gathered.
    """
    offset = 0

    def gather(t: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        if t.is_floating_point():
            out, offset = ddp_.all_gather_with_grad(t)
            return out
        return ddp_.all_gather_nograd(t)

    return states.map(gather, pooled=False), offset


def pad_states(states: TokenStates) -> TokenStates:
    """``states`` padded (masked) to the longest token length of any rank (a no-op without a mask)."""
    if states.mask is None:
        return states
    return states.pad_to(max(ddp_.gather_sizes(states.length)))


def _true_negatives(positives: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """The off-diagonal true pairs of a batch mask (None when there are none)."""
    if positives is None:
        return None
    off = positives.to(device).bool() & ~torch.eye(len(positives), dtype=torch.bool, device=device)
    return off if bool(off.any()) else None


def _model_image_size(model: Any) -> int | None:
    """The size a model declares it reads images at (``config.image_size``: tiny, pretrained-lit), else
    None."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _leaves_parameters_unused(model: Any) -> bool:
    """Whether a task's loss may leave some of ``model``'s parameters without a gradient (DDP must know).

    The built-in models (tiny, pretrained-lit) use every parameter in their training losses; a real model
    often carries heads a task does not train (BLIP's ITC projections under ITM, SigLIP's bias under
    InfoNCE).
    """
    from alignlab.models.factory import ARCHS

    return getattr(model, "name", None) not in ARCHS


# --- batching -----------------------------------------------------------------------------------------


class _ImageBatches:
    """Shared batching: an epoch is a permutation of the images, each with one caption drawn per epoch.

    ``image_size``: the size the images are handed over at (the model resizes and normalises them itself
    in ``preprocess_images``). None keeps in-memory images at their own size and gives images read from
    files at their natural size (Pillow images, what real-model adapters want).
    """

    def __init__(self, pairs: Any, batch_size: int, seed: int, image_size: int | None, num_workers: int = 0):
        if pairs.n_images < 2:
            raise DataError("training needs at least 2 images", where=pairs.name)
        # In memory already (ShapesWorld): index the array. Files, a HF dataset or tar shards: a DataLoader
        # decodes each batch on demand (alignlab.data.loading), so memory is bounded by batch and prefetch.
        self.images: torch.Tensor | None = None
        self.loader: Any = None
        self._loader_state: dict[str, Any] | None = None
        self._loader_for: tuple[int, int] | None = None  # (rank, world size) the loader's batches are cut for
        if getattr(pairs, "image_array", None) is not None:
            if image_size is not None and pairs.image_array.shape[1] != image_size:
                pairs = pairs.materialize(image_size)
            self.images = torch.from_numpy(pairs.image_array).permute(0, 3, 1, 2)  # uint8 [N, 3, S, S] view
        self.pairs = pairs
        self.image_size, self.num_workers = image_size, num_workers
        self.bs = batch_size
        self.seed = seed
        self.current_epoch = 0

    def num_batches(self, epoch: int) -> int:
        n = self.pairs.n_images
        full, rest = divmod(n, self.bs)
        # A last batch of one image has no negatives, and under DDP one smaller than the number of ranks
        # would leave a rank without data: either is dropped.
        return full + (1 if rest >= max(2, ddp_.world_size()) else 0)

    def _indices(self, epoch: int, index: int) -> tuple[np.ndarray, list[int]]:
        perm = epoch_permutation(self.pairs.n_images, self.seed, epoch)
        idx = perm[index * self.bs : (index + 1) * self.bs]
        rng = np.random.default_rng(derive_seed(self.seed, "captions", epoch, index))
        # An image's own captions: under truth relevance, `relevance` lists every caption true of it.
        own = getattr(self.pairs, "sources", self.pairs.relevance)
        caps = [own[i][rng.integers(len(own[i]))] for i in idx]
        return idx, caps

    def positives(self, idx: np.ndarray, caps: list[int]) -> torch.Tensor:
        """``[B, B]`` bool: caption ``caps[j]`` is true of image ``idx[i]`` (the diagonal always is).

        :meth:`ImageTextPairs.known_true` (the truth evaluator on ShapesWorld, else the relevance map), or
        an identical text.
        """
        texts = [self.pairs.captions[c] for c in caps]
        mask = np.array([[a == b for b in texts] for a in texts], dtype=bool).reshape(len(texts), len(texts))
        mask |= np.eye(len(caps), dtype=bool)
        if hasattr(self.pairs, "known_true"):
            mask |= self.pairs.known_true(idx, caps)
        return torch.from_numpy(mask)

    def batch(self, epoch: int, index: int) -> tuple[Any, list[str], np.ndarray, torch.Tensor]:
        self.current_epoch = epoch  # the epoch of the batch about to be trained (a warm start reads it)
        idx, caps = self._indices(epoch, index)
        return (
            self._images(epoch, index, idx),
            [self.pairs.captions[c] for c in caps],
            idx,
            self.positives(idx, caps),
        )

    def _images(self, epoch: int, index: int, idx: np.ndarray, rank: int = 0, world: int = 1) -> Any:
        if self.images is not None:
            return self.images[idx]
        if self.image_size is None:  # natural size: decoded here, one batch at a time
            return load_images_for(_NATIVE, self.pairs, idx.tolist())
        if self.loader is None or self._loader_for != (rank, world):  # built at first use: the rank is known
            from alignlab.data.loading import ImageBatchLoader, streaming

            self._loader_for = (rank, world)
            self.loader = ImageBatchLoader(
                streaming(self.pairs).images,
                self.image_size,
                functools.partial(self._rank_indices, rank=rank, world=world),
                self.num_batches,
                self.num_workers,
            )
            if self._loader_state:
                self.loader.load_state_dict(self._loader_state)
        return self.loader.get(epoch, index)

    def _rank_indices(self, epoch: int, index: int, rank: int, world: int) -> list[int]:
        idx = self._indices(epoch, index)[0]
        lo, hi = ddp_.shard_range(len(idx), world, rank)
        return [int(i) for i in idx[lo:hi]]

    def state_dict(self) -> dict[str, Any]:
        """The image loader's position (epoch, next batch): saved in the training checkpoint."""
        state = self.loader.state_dict() if self.loader is not None else self._loader_state
        return {"loader": state} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loader_state = state.get("loader")
        if self.loader is not None and self._loader_state:
            self.loader.load_state_dict(self._loader_state)

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> Any:
        """Rank ``rank``'s contiguous slice of global batch ``index`` (DDP; only its images are loaded).

        The ``positives`` mask stays the global batch's: every rank masks its gathered negatives alike.
        """
        if type(self).batch is not _ImageBatches.batch:  # a subclass changed what a batch holds: cut it whole
            return ddp_.shard_batch(self.batch(epoch, index), rank, world)
        self.current_epoch = epoch
        idx, caps = self._indices(epoch, index)  # captions are drawn for the whole global batch, then cut
        lo, hi = ddp_.shard_range(len(idx), world, rank)
        return (
            self._images(epoch, index, idx[lo:hi], rank, world),
            [self.pairs.captions[c] for c in caps[lo:hi]],
            idx[lo:hi],
            self.positives(idx, caps),
        )

    def batch_size(self, batch: Any) -> int:
        return len(batch[1])


class _Evaluates:
    _evaluate: Evaluate | None

    def evaluate(self, model: Any) -> dict[str, float]:
        """Dev metrics of the (plain) model from the injected ``evaluate`` ({} without one)."""
        return dict(self._evaluate(model)) if self._evaluate is not None else {}


# --- the tasks ----------------------------------------------------------------------------------------


class DualContrastiveTask(_ImageBatches, _Evaluates):
    """In-batch contrastive training of a dual encoder (any :class:`~alignlab.models.base.DualEncoder`).

    ``model`` is only read for its declared image size (``config.image_size``) and whether it is a
    built-in model; ``image_size`` overrides the former (see :class:`_ImageBatches`).
    """

    def __init__(
        self,
        model: Any,
        train: Any,
        loss: nn.Module,
        batch_size: int,
        seed: int,
        *,
        evaluate: Evaluate | None = None,
        num_workers: int = 0,
        warm_loss: nn.Module | None = None,
        warm_epochs: int = 0,
        image_size: int | None = None,
    ):
        if isinstance(model, Scorer):
            check_trainable(model)
        super().__init__(train, batch_size, seed, image_size or _model_image_size(model), num_workers)
        self.loss_fn = loss
        # Warm start: batches of epochs < warm_epochs train with warm_loss (None or 0: loss throughout).
        self.warm_loss = warm_loss if warm_epochs > 0 else None
        self.warm_epochs = warm_epochs if warm_loss is not None else 0
        self._evaluate = evaluate
        # DDP has to be told when a model parameter (the temperature, for VSE losses) gets no gradient.
        self.find_unused_parameters = _leaves_parameters_unused(model) or any(
            not getattr(f, "uses_logit_scale", True) for f in (loss, self.warm_loss) if f is not None
        )

    def loss_for(self, epoch: int) -> nn.Module:
        """The loss that trains the batches of ``epoch`` (the warm-start loss before ``warm_epochs``)."""
        return self.warm_loss if self.warm_loss is not None and epoch < self.warm_epochs else self.loss_fn

    def loss(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, positives = batch
        out = dual_outputs(model, model.preprocess_images(images), model.tokenize(texts))
        return self.loss_for(self.current_epoch)(
            out["image_emb"], out["text_emb"], out["logit_scale"], positives=positives
        )

    def parameters(self) -> Iterable[nn.Parameter]:
        if self.warm_loss is None:
            return self.loss_fn.parameters()
        return [*self.loss_fn.parameters(), *self.warm_loss.parameters()]


class CrossMatchTask(_ImageBatches, _Evaluates):
    """Listwise matching for a cross encoder: CE over the rows and columns of the batch's score grid.

    Any :class:`~alignlab.models.base.CrossEncoder`; ``gather`` (under DDP): every rank's captions and
    images are negatives (the global grid).
    """

    def __init__(
        self,
        model: Any,
        train: Any,
        batch_size: int,
        seed: int,
        *,
        evaluate: Evaluate | None = None,
        gather: bool = False,
        num_workers: int = 0,
        image_size: int | None = None,
    ):
        if isinstance(model, Scorer):
            check_trainable(model)
        super().__init__(train, batch_size, seed, image_size or _model_image_size(model), num_workers)
        self._evaluate = evaluate
        self.gather = gather
        self.find_unused_parameters = _leaves_parameters_unused(model)

    def loss(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, positives = batch
        pixels, tokens = model.preprocess_images(images), model.tokenize(texts)
        if self.gather and ddp_.is_distributed():
            return {"match_loss": self._gathered_loss(model, pixels, tokens, positives=positives)}
        logits = match_grid(model, pixels, tokens)
        target = torch.arange(len(logits), device=logits.device)
        true_neg = _true_negatives(positives, logits.device)
        return {
            "match_loss": 0.5
            * (
                F.cross_entropy(exclude_true(logits, true_neg), target)
                + F.cross_entropy(exclude_true(logits.T, None if true_neg is None else true_neg.T), target)
            )
        }

    @staticmethod
    def _gathered_loss(
        model: Any, pixels: torch.Tensor, tokens: Any, positives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """This rank's share of the global grid loss: its rows (images) and columns (captions) of ``N × N``.

        The towers and the fusion all run inside one DDP forward pass (:func:`forward_through`); token
        states are gathered (float ones with gradients), masked ones padded to the longest of any rank
        first (padding is masked, so it changes nothing). The share is scaled by ``W/N`` like the gathered
        InfoNCE.
        """

        def grids(m: Any, pixels: torch.Tensor, tokens: Any) -> tuple[torch.Tensor, torch.Tensor, int, int]:
            img = pad_states(m.image_states(pixels))
            txt = pad_states(m.text_states(tokens))
            all_img, offset = gather_states(img)
            all_txt, _ = gather_states(txt)
            return m.fuse_grid(img, all_txt), m.fuse_grid(all_img, txt), offset, len(all_img)

        rows, cols, offset, n = ddp_.forward_through(model, grids, pixels, tokens)
        b = len(rows)
        target = torch.arange(b, device=rows.device) + offset
        true_neg = _true_negatives(positives, rows.device)  # the global batch's mask: this rank's part of it
        per = 0.5 * (
            F.cross_entropy(
                exclude_true(rows, None if true_neg is None else true_neg[offset : offset + b]),
                target,
                reduction="none",
            )
            + F.cross_entropy(
                exclude_true(cols.T, None if true_neg is None else true_neg[:, offset : offset + b].T),
                target,
                reduction="none",
            )
        )
        return per.sum() * (ddp_.world_size() / n)

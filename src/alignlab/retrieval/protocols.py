"""Named retrieval evaluation protocols: which images are evaluated, and in how many folds.

============== ====================================================== ======== =====
protocol       evaluation set                                         images   folds
============== ====================================================== ======== =====
f30k-1k        Flickr30K, Karpathy ``test`` split                     1000     1
coco-5k        MS-COCO, Karpathy ``test`` split                       5000     1
coco-1k-5fold  MS-COCO, Karpathy ``test`` split, 5 sequential folds   5000     5
shapes-1k      ShapesWorld ``test`` split, seed 0, default config      1000     1
shapes-5k      ShapesWorld ``test`` split, seed 0, default config      5000     1
shapes-1k-disc ShapesWorld ``test`` split, seed 0, discriminative      1000     1
shapes-5k-disc ShapesWorld ``test`` split, seed 0, discriminative      5000     1
============== ====================================================== ======== =====

**Relevance.** On ShapesWorld a caption is relevant to every image it is true of (the truth evaluator
decides; :func:`alignlab.data.shapes.truth_relevance`): "there is a circle" is a right answer for every
image with a circle. The source labels (only the captions written for an image), which real
Karpathy-style data has, stay available by name: ``shapes-1k-source`` and ``shapes-5k-source``, or
:func:`with_relevance` / ``alignlab eval retrieval --relevance source``. Every protocol report gives the
**perfect-ranker ceiling** under each labelling (:func:`perfect_ranker`): the expected metrics of a
ranker that puts every truly relevant item first (in random order among them). Under truth labels it is
100 everywhere; under source labels it is far lower (a true caption of another image outranks the
query's own). The ``-disc`` protocols use *discriminative* captions, each true of its own image only
within the gallery (``ShapesConfig(discriminative=True)``), so their one relevant image per caption is
the truth and single-relevance metrics mean what they say.

A fold ``k`` of a ``F``-fold protocol is images ``[k·n/F, (k+1)·n/F)`` in the data's order with their
captions, caption ids renumbered from 0 (:meth:`ImageTextPairs.subset`); each fold is evaluated on its
own (its images against its captions only) and the protocol's metrics are the mean over folds of every
R@K, rsum, medr and meanr (as the VSE++/SCAN code reports COCO 1K), while tie counts are summed. COCO
1K and 5K differ a lot: a 5K gallery holds five times as many distractors, so the same model scores
far lower on it (the SIGIR 2022 study found RSUM gaps of about 100 points).

The ShapesWorld protocols are generated, not loaded: ``ShapesWorld(ShapesConfig()).generate(n, seed=0,
split="test")`` with the generator ``shapesworld-1`` and its default config (64×64 images, 1–4
objects, 20% polysemous kinds, 5 captions per image, no negated captions). ``shapes-1k`` is the first
1000 images of ``shapes-5k``. Training data drawn from the ``train`` split never overlaps them (each
example is seeded by ``(seed, split, index)``).

>>> p = get_protocol("coco-1k-5fold")
>>> [(r.start, r.stop) for r in p.fold_ranges()][:2]
[(0, 1000), (1000, 2000)]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.registry import Registry
from alignlab.data.pairs import ImageTextPairs, load_pairs
from alignlab.retrieval.metrics import RetrievalReport, evaluate_embeddings, evaluate_scores


@dataclass(frozen=True)
class Protocol:
    """How to build a protocol's evaluation set(s) from :class:`ImageTextPairs`."""

    name: str
    description: str
    n_images: int  # images evaluated, all folds together
    folds: int = 1  # sequential folds of n_images // folds images; metrics are averaged over them
    data: str = ""  # what data the protocol expects (shown in errors)
    split: str | None = "test"  # the split to load
    shapes_seed: int | None = None  # ShapesWorld protocols are generated with this seed
    shapes_config: dict[str, Any] = field(default_factory=dict)  # ShapesConfig overrides ({} = defaults)
    # "truth" | "source"; None: the data's default (truth for ShapesWorld, the file's labels for other data)
    relevance: str | None = None

    @property
    def fold_size(self) -> int:
        return self.n_images // self.folds

    @property
    def generated(self) -> bool:
        return self.shapes_seed is not None

    def fold_ranges(self) -> list[range]:
        """Image index ranges of the folds: ``[k * fold_size, (k + 1) * fold_size)``."""
        f = self.fold_size
        return [range(k * f, (k + 1) * f) for k in range(self.folds)]

    def check(self, pairs: ImageTextPairs) -> None:
        """Raise :class:`DataError` unless ``pairs`` is the size this protocol evaluates."""
        if pairs.n_images != self.n_images:
            raise DataError(
                f"protocol {self.name} evaluates {self.n_images} images ({self.data}); "
                f"the data has {pairs.n_images}",
                where=pairs.name,
                fix=f"load {self.data}" if self.data else "give the protocol's evaluation split",
            )

    def load(
        self, path: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None
    ) -> ImageTextPairs:
        """The protocol's evaluation data: generated (ShapesWorld) or loaded from ``path`` and checked."""
        if self.generated:
            from alignlab.data.pairs import from_shapes
            from alignlab.data.shapes import ShapesConfig, ShapesWorld

            assert self.shapes_seed is not None
            world = ShapesWorld(ShapesConfig(**self.shapes_config))
            pairs = from_shapes(
                world.generate(self.n_images, self.shapes_seed, "test"),
                name=self.name,
                relevance=self.relevance or "truth",
            )
        else:
            if path is None:
                raise DataError(
                    f"protocol {self.name} needs data: {self.data}",
                    fix="give the Karpathy split file (dataset_flickr30k.json / dataset_coco.json) "
                    "or an exported folder",
                )
            pairs = load_pairs(
                path, split=self.split, image_root=image_root, relevance=self.relevance or "auto"
            )
        self.check(pairs)
        return pairs


PROTOCOLS: Registry[Protocol] = Registry("retrieval protocol")

for _p in (
    Protocol(
        "f30k-1k",
        "Flickr30K Karpathy test split: 1000 images, ~5 captions each",
        1000,
        data="the Flickr30K Karpathy test split (1000 images)",
    ),
    Protocol(
        "coco-5k",
        "MS-COCO Karpathy test split: 5000 images, ~5 captions each (25,010 captions)",
        5000,
        data="the MS-COCO Karpathy test split (5000 images)",
    ),
    Protocol(
        "coco-1k-5fold",
        "MS-COCO Karpathy test split in 5 sequential folds of 1000 images; metrics are "
        "the mean over the folds",
        5000,
        folds=5,
        data="the MS-COCO Karpathy test split (5000 images)",
    ),
    Protocol(
        "shapes-1k",
        "ShapesWorld test split, first 1000 images, seed 0, default ShapesConfig (generator shapesworld-1)",
        1000,
        data="ShapesWorld test images (generated)",
        shapes_seed=0,
    ),
    Protocol(
        "shapes-5k",
        "ShapesWorld test split, 5000 images, seed 0, default ShapesConfig (generator shapesworld-1)",
        5000,
        data="ShapesWorld test images (generated)",
        shapes_seed=0,
    ),
    Protocol(
        "shapes-1k-disc",
        "ShapesWorld test split, 1000 images, seed 0, discriminative captions (each true "
        "of its own image only, within the gallery)",
        1000,
        data="ShapesWorld test images (generated)",
        shapes_seed=0,
        shapes_config={"discriminative": True},
    ),
    Protocol(
        "shapes-5k-disc",
        "ShapesWorld test split, 5000 images, seed 0, discriminative captions (each true "
        "of its own image only, within the gallery)",
        5000,
        data="ShapesWorld test images (generated)",
        shapes_seed=0,
        shapes_config={"discriminative": True},
    ),
):
    PROTOCOLS.register(_p.name, _p)
for _name in ("shapes-1k", "shapes-5k"):
    _p = PROTOCOLS.get(_name)
    PROTOCOLS.register(
        f"{_name}-source",
        replace(
            _p,
            name=f"{_name}-source",
            relevance="source",
            description=_p.description
            + "; source labels: only the captions written for an image are relevant",
        ),
    )


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A protocol by name (:class:`ConfigError` listing the valid names if unknown), or itself."""
    return protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)


def with_relevance(protocol: str | Protocol, relevance: str | None) -> Protocol:
    """``protocol`` with its relevance labelling set (``"truth"``, ``"source"``; None: unchanged)."""
    from alignlab.data.pairs import RELEVANCE_KINDS

    proto = get_protocol(protocol)
    if relevance is None:
        return proto
    if relevance not in RELEVANCE_KINDS:
        raise ConfigError(f"unknown relevance {relevance!r}", fix=f"use one of {', '.join(RELEVANCE_KINDS)}")
    if relevance == (proto.relevance or ("truth" if proto.generated else None)):
        return proto
    base = proto.name.removesuffix("-source")
    return replace(proto, name=base if relevance == "truth" else f"{base}-source", relevance=relevance)


# --- the perfect-ranker ceiling ---------------------------------------------------------------------------


def _hit_probability(t: int, r_true: int, r_false: int, n: int, k: int) -> float:
    """P(a labelled item in the top ``k``) when the ``t`` truly relevant of ``n`` candidates come first.

    The ranker orders the true items first and the rest after them, each block in random order;
    ``r_true`` labelled items are among the true ones and ``r_false`` among the others.
    """
    if r_true > 0:
        if k >= t:
            return 1.0
        miss = 1.0
        for j in range(k):  # C(t - r, k) / C(t, k): no labelled item among the first k of t
            miss *= (t - r_true - j) / (t - j)
        return 1.0 - max(miss, 0.0)
    if r_false == 0 or k <= t:
        return 0.0
    f, k2 = n - t, k - t
    if k2 >= f:
        return 1.0
    miss = 1.0
    for j in range(k2):
        miss *= (f - r_false - j) / (f - j)
    return 1.0 - max(miss, 0.0)


def _ceiling(
    ranker: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], n_captions: int, ks: Sequence[int]
) -> dict[str, float]:
    n_images = len(ranker)

    def flat(rel: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.array([len(r) for r in rel], dtype=np.int64)
        cols = np.fromiter((int(c) for r in rel for c in r), dtype=np.int64, count=int(lengths.sum()))
        return np.repeat(np.arange(len(rel), dtype=np.int64), lengths), cols

    (rk_rows, rk_cols), (lb_rows, lb_cols) = flat(ranker), flat(labels)
    rk_keys = np.sort(rk_rows * n_captions + rk_cols)
    lb_keys = lb_rows * n_captions + lb_cols
    at = np.minimum(np.searchsorted(rk_keys, lb_keys), max(len(rk_keys) - 1, 0))
    shared = (
        rk_keys[at] == lb_keys if len(rk_keys) else np.zeros(len(lb_keys), dtype=bool)
    )  # labelled and true
    t_img, t_cap = np.bincount(rk_rows, minlength=n_images), np.bincount(rk_cols, minlength=n_captions)
    l_img, l_cap = np.bincount(lb_rows, minlength=n_images), np.bincount(lb_cols, minlength=n_captions)
    both_img = np.bincount(lb_rows[shared], minlength=n_images)
    both_cap = np.bincount(lb_cols[shared], minlength=n_captions)
    out: dict[str, float] = {}
    for d, (t, lab, both, n) in {
        "i2t": (t_img, l_img, both_img, n_captions),
        "t2i": (t_cap, l_cap, both_cap, n_images),
    }.items():
        keys, counts = np.unique(np.stack([t, both, lab - both]), axis=1, return_counts=True)
        for k in ks:
            p = sum(
                int(w) * _hit_probability(int(a), int(b), int(c), n, k)
                for (a, b, c), w in zip(keys.T, counts)
            )
            out[f"{d}_R@{k}"] = float(100.0 * p / max(len(t), 1))
    out["rsum"] = float(sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks))
    return out


def perfect_ranker(pairs: ImageTextPairs, ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Expected R@K and rsum of a perfect ranker under each labelling of ``pairs``.

    The ranker puts every truly relevant item first (random order among them, then the rest). On
    ShapesWorld pairs "true" is the truth evaluator's answer and both labellings are scored: ``truth``
    (every true caption relevant: 100 everywhere) and ``source`` (only an image's own captions: a true
    caption of another image takes a top slot, so the ceiling is lower). For other data only its own
    labels exist, and the ceiling under them is 100.
    """
    if pairs.has_truth:
        truth = pairs.with_relevance("truth")
        return {
            "truth": _ceiling(truth.relevance, truth.relevance, truth.n_captions, ks),
            "source": _ceiling(truth.relevance, truth.sources, truth.n_captions, ks),
        }
    return {pairs.relevance_kind: _ceiling(pairs.relevance, pairs.relevance, pairs.n_captions, ks)}


# --- evaluation -----------------------------------------------------------------------------------------


@dataclass
class ProtocolReport:
    """Metrics of a protocol: the mean over its folds, and every fold's own report.

    ``i2t_ranks`` are the folds' image ranks in image order; ``t2i_ranks`` the folds' caption ranks in
    fold order, with ``t2i_caption_ids`` the original caption id of each (a caption listed by images of
    two folds appears once per fold).
    """

    protocol: str
    description: str
    metrics: dict[str, float]
    folds: list[RetrievalReport]
    fold_caption_ids: list[np.ndarray]
    definitions: dict[str, str]
    # labelling -> expected metrics of a perfect ranker (mean over folds); see perfect_ranker
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)
    relevance: str = "source"  # the labelling the metrics were computed under

    @property
    def fold_metrics(self) -> list[dict[str, float]]:
        return [f.metrics for f in self.folds]

    @property
    def i2t_ranks(self) -> np.ndarray:
        return np.concatenate([f.i2t_ranks for f in self.folds])

    @property
    def t2i_ranks(self) -> np.ndarray:
        return np.concatenate([f.t2i_ranks for f in self.folds])

    @property
    def t2i_caption_ids(self) -> np.ndarray:
        return np.concatenate(self.fold_caption_ids)

    @property
    def ties(self) -> dict[str, int]:
        return {k: sum(f.ties[k] for f in self.folds) for k in self.folds[0].ties}

    def to_dict(self, include_ranks: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "protocol": self.protocol,
            "description": self.description,
            "metrics": dict(self.metrics),
            "definitions": dict(self.definitions),
            "ties": self.ties,
            "n_folds": len(self.folds),
            "relevance": self.relevance,
            "perfect_ranker": {k: dict(v) for k, v in self.ceilings.items()},
        }
        if len(self.folds) > 1:
            d["folds"] = [f.to_dict(include_ranks) for f in self.folds]
        else:
            d.update(
                {
                    k: v
                    for k, v in self.folds[0].to_dict(include_ranks).items()
                    if k not in ("metrics", "definitions", "ties")
                }
            )
        return d

    def format(self) -> str:
        """The metrics, then the perfect-ranker ceiling under each labelling (one line each)."""
        ks = self.folds[0].ks
        lines = [
            f"{self.protocol} ({self.relevance} labels): "
            + ", ".join(f"{k}={v:.2f}" for k, v in self.metrics.items() if "R@" in k or k == "rsum")
        ]
        for label, m in self.ceilings.items():
            lines.append(
                f"perfect ranker under {label} labels: rsum {m['rsum']:.1f} of {200 * len(ks)} ("
                + ", ".join(f"{k}={m[k]:.1f}" for k in m if "R@" in k)
                + ")"
            )
        return "\n".join(lines)


def fold_pairs(
    pairs: ImageTextPairs, images: Sequence[int], name: str | None = None
) -> tuple[ImageTextPairs, np.ndarray]:
    """``pairs.subset(images)`` and the original id of each of its captions (its row in ``text_emb``)."""
    sub = pairs.subset(images, name=name)
    new_id: dict[int, int] = {}
    for i in images:  # a fold's captions are those written for its images (the relevance may list more)
        for c in pairs.sources[int(i)]:
            new_id.setdefault(int(c), len(new_id))
    cap_ids = np.fromiter(new_id, dtype=np.int64, count=len(new_id))
    # subset() numbers captions by first appearance, as above; check rather than assume.
    expected = [[new_id[int(c)] for c in pairs.sources[int(i)]] for i in images]
    if expected != [list(r) for r in sub.sources]:
        raise RuntimeError("ImageTextPairs.subset numbers captions differently than fold_pairs expects")
    return sub, cap_ids


def _take(x: Any, index: np.ndarray | range, name: str) -> Any:
    if isinstance(x, torch.Tensor):
        if isinstance(index, range):
            return x[index.start : index.stop]
        return x[torch.as_tensor(index, device=x.device)]
    arr = np.asarray(x)
    return arr[index.start : index.stop] if isinstance(index, range) else arr[index]


def _rows(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") and len(x.shape) else len(x)


def _run(protocol: str | Protocol, pairs: ImageTextPairs, evaluate_fold: Any) -> ProtocolReport:
    proto = get_protocol(protocol)
    proto.check(pairs)
    folds: list[RetrievalReport] = []
    cap_ids_per_fold: list[np.ndarray] = []
    fold_ceilings: list[dict[str, dict[str, float]]] = []
    for k, images in enumerate(proto.fold_ranges()):
        if proto.folds == 1 and images == range(pairs.n_images):
            sub, cap_ids = pairs, np.arange(pairs.n_captions, dtype=np.int64)
        else:
            sub, cap_ids = fold_pairs(pairs, images, name=f"{pairs.name}[fold {k}]")
        folds.append(evaluate_fold(images, cap_ids, sub))
        cap_ids_per_fold.append(cap_ids)
        if isinstance(sub, ImageTextPairs):
            fold_ceilings.append(perfect_ranker(sub, folds[-1].ks))
    ceilings = (
        {
            label: {key: float(np.mean([c[label][key] for c in fold_ceilings])) for key in m}
            for label, m in fold_ceilings[0].items()
        }
        if fold_ceilings
        else {}
    )
    metrics: dict[str, float] = {}
    for key in folds[0].metrics:
        values = [f.metrics[key] for f in folds]
        metrics[key] = int(sum(values)) if key.endswith("tied_queries") else float(np.mean(values))
    definitions = dict(folds[0].definitions)
    definitions["protocol"] = f"{proto.name}: {proto.description}"
    kind = getattr(pairs, "relevance_kind", "source")
    definitions["relevance"] = f"{kind}: " + (
        "a caption is relevant to every image it is true of (the ShapesWorld truth evaluator)"
        if kind == "truth"
        else "a caption is relevant to the image(s) it was written for"
    )
    definitions["perfect_ranker"] = (
        "expected metrics of a ranker that puts every truly relevant item first "
        "(random order among them), under each labelling"
    )
    if proto.folds > 1:
        definitions["folds"] = (
            f"{proto.folds} sequential folds of {proto.fold_size} images, each evaluated "
            "against its own captions; metrics are the mean over folds, tie counts the sum"
        )
    return ProtocolReport(
        proto.name,
        proto.description,
        metrics,
        folds,
        cap_ids_per_fold,
        definitions,
        ceilings=ceilings,
        relevance=kind,
    )


def evaluate_protocol(
    protocol: str | Protocol,
    image_emb: Any,
    text_emb: Any,
    pairs: ImageTextPairs,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    normalize: bool = False,
) -> ProtocolReport:
    """Evaluate embeddings of ``pairs`` (rows in the pairs' image and caption order) under a protocol.

    >>> import torch
    >>> from alignlab.data.pairs import ImageTextPairs
    >>> pairs = ImageTextPairs([str(i) for i in range(5000)], [str(c) for c in range(5000)],
    ...                        [[i] for i in range(5000)], image_array=np.zeros((5000, 1, 1, 3), np.uint8))
    >>> rep = evaluate_protocol("coco-1k-5fold", torch.randn(5000, 8), torch.randn(5000, 8), pairs)
    >>> len(rep.folds), rep.folds[0].n_images
    (5, 1000)
    """
    protocol = get_protocol(protocol)  # an unknown name fails first, whatever the data
    if _rows(image_emb) != pairs.n_images or _rows(text_emb) != pairs.n_captions:
        raise DataError(
            f"embeddings have {_rows(image_emb)} image and {_rows(text_emb)} caption rows; the data "
            f"has {pairs.n_images} images and {pairs.n_captions} captions",
            where=pairs.name,
            fix="encode the protocol's data in its order (image i -> row i, caption c -> row c)",
        )

    def one(images: range, cap_ids: np.ndarray, sub: ImageTextPairs) -> RetrievalReport:
        img = image_emb if sub is pairs else _take(image_emb, images, "image_emb")
        txt = text_emb if sub is pairs else _take(text_emb, cap_ids, "text_emb")
        return evaluate_embeddings(
            img, txt, sub.relevance, ks=ks, ties=ties, chunk_size=chunk_size, normalize=normalize
        )

    return _run(protocol, pairs, one)


def evaluate_protocol_scores(
    protocol: str | Protocol,
    score_matrix: Any,
    pairs: ImageTextPairs,
    *,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
) -> ProtocolReport:
    """Evaluate a ``[n_images, n_captions]`` score matrix of ``pairs`` (e.g. a cross encoder's) under a
    protocol."""
    protocol = get_protocol(protocol)
    shape = tuple(score_matrix.shape) if hasattr(score_matrix, "shape") else np.shape(score_matrix)
    if shape != (pairs.n_images, pairs.n_captions):
        raise DataError(
            f"score matrix has shape {shape}; the data has {pairs.n_images} images and "
            f"{pairs.n_captions} captions",
            where=pairs.name,
            fix="score every image against every caption, in the data's order",
        )

    def one(images: range, cap_ids: np.ndarray, sub: ImageTextPairs) -> RetrievalReport:
        if sub is pairs:
            s = score_matrix
        else:
            rows = _take(score_matrix, images, "score_matrix")
            s = _take(rows.T, cap_ids, "score_matrix").T
        return evaluate_scores(s, sub.relevance, ks=ks, ties=ties, chunk_size=chunk_size)

    return _run(protocol, pairs, one)

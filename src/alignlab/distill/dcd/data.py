"""Near-duplicate ShapesWorld sets: retrieval data whose hard negatives matter.

Ordinary ShapesWorld scenes are random, so two images in a batch rarely look alike and a retrieval
model can succeed with coarse cues ("is there something red?"). DCD's claim is about *hard* negatives,
so here every image comes in a **group** of ``group_size`` scenes: a random base scene and
``group_size - 1`` near duplicates of it (:func:`alignlab.data.shapes.near_duplicate`: one object's
colour, size or kind changed, or two objects swapped so a relation reverses).

Each image keeps only **discriminative** captions: captions true of its own scene (checked with the
truth evaluator) and false of every other scene in its group. So within a group the relevance is
exact — a sibling's caption is a true negative that differs in exactly the changed attribute or
relation — and telling siblings apart needs the detail the change touched. Across groups a generic
caption of another group can be true of an image too, so evaluation splits take relevance from the
truth evaluator (every caption true of an image is relevant to it, as in every ShapesWorld set); the
training split keeps each image's own captions as ``relevance`` (what training draws positives from)
and the miner excludes every caption true of an image from its pools
(:func:`alignlab.distill.dcd.miner.draw_pools`).

Images of a group are stored next to each other (image ``g * group_size + j`` is member ``j`` of group
``g``); ``image_meta[i]`` holds ``group``, ``member`` and the scene. :class:`GroupBatches` draws
training batches of whole groups, so near duplicates meet in a batch.

>>> pairs = near_duplicate_pairs(6, seed=0, split="test", cfg=NearDupConfig(group_size=3))
>>> pairs.n_images, [m["group"] for m in pairs.image_meta]
(6, [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.progress import progress
from alignlab.data.pairs import ImageTextPairs
from alignlab.data.shapes import (
    SPLIT_CODES,
    Caption,
    Scene,
    ShapesConfig,
    evaluate,
    form_to_dict,
    generate_captions,
    near_duplicate,
    render_array,
    sample_scene,
)

# A stream id mixed into every group's seed so that these sets never share a generator stream with the
# plain ShapesWorld splits of the same seed.
_STREAM = 0xDCD


@dataclass
class NearDupConfig:
    """How near-duplicate groups are made."""

    group_size: int = 3  # scenes per group: a base scene and group_size - 1 near duplicates of it
    captions_per_image: int = 5  # discriminative captions wanted per image
    min_captions: int = 3  # a group whose every image gets at least this many is kept, else redrawn
    caption_rounds: int = 12  # rounds of caption generation per image before giving up on the group
    image_size: int = 64
    polysemous_rate: float = 0.2
    min_objects: int = 2  # >= 2 objects lets a near duplicate also swap two objects (a relation change)
    max_objects: int = 4

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2 (a scene and one near duplicate)")
        if not 1 <= self.min_captions <= self.captions_per_image:
            raise ValueError("need 1 <= min_captions <= captions_per_image")
        if self.caption_rounds < 1:
            raise ValueError("caption_rounds must be >= 1")

    def shapes_config(self) -> ShapesConfig:
        return ShapesConfig(
            image_size=self.image_size,
            polysemous_rate=self.polysemous_rate,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
        )


def _visible(scene: Scene) -> tuple:
    """What a picture shows of a scene (jitter aside): used to reject siblings that look the same."""
    return tuple(sorted((o.kind, o.colour, o.size, o.row, o.col) for o in scene.objects))


def _discriminative_captions(
    scenes: list[Scene], j: int, rng: np.random.Generator, cfg: NearDupConfig, shapes_cfg: ShapesConfig
) -> list[Caption]:
    """Up to ``captions_per_image`` distinct captions true of ``scenes[j]`` and false of the others."""
    kept: list[Caption] = []
    seen: set[str] = set()
    others = [s for k, s in enumerate(scenes) if k != j]
    for _ in range(cfg.caption_rounds):
        for c in generate_captions(scenes[j], rng, shapes_cfg):
            if c.en in seen:
                continue
            seen.add(c.en)
            if not any(evaluate(c.form, s) for s in others):
                kept.append(c)
                if len(kept) == cfg.captions_per_image:
                    return kept
    return kept


def make_group(
    seed: int, split: str, group: int, cfg: NearDupConfig, shapes_cfg: ShapesConfig | None = None
) -> tuple[list[Scene], list[list[Caption]]]:
    """Scenes and discriminative captions of one group (a pure function of its arguments)."""
    shapes_cfg = shapes_cfg or cfg.shapes_config()
    if split not in SPLIT_CODES:
        raise DataError(f"unknown split {split!r}", fix="use train, val or test")
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(group), _STREAM])
    for _attempt in range(100):
        base = sample_scene(rng, shapes_cfg)
        scenes = [base]
        looks = {_visible(base)}
        tries = 0
        while len(scenes) < cfg.group_size and tries < 50:
            tries += 1
            nd = near_duplicate(base, rng, shapes_cfg)
            if _visible(nd) not in looks:
                scenes.append(nd)
                looks.add(_visible(nd))
        if len(scenes) < cfg.group_size:
            continue
        captions = [_discriminative_captions(scenes, j, rng, cfg, shapes_cfg) for j in range(len(scenes))]
        if all(len(c) >= cfg.min_captions for c in captions):
            return scenes, captions
    raise DataError(
        f"could not make near-duplicate group {group} with {cfg.min_captions}+ discriminative "
        f"captions per image",
        where=f"{split}, seed {seed}",
        fix="lower min_captions or group_size",
    )


def near_duplicate_pairs(
    n_images: int,
    seed: int,
    split: str,
    cfg: NearDupConfig | None = None,
    name: str | None = None,
    relevance: str | None = None,
) -> ImageTextPairs:
    """``n_images`` images (rounded down to whole groups) in near-duplicate groups, as
    :class:`ImageTextPairs`.

    ``relevance``: ``"truth"`` or ``"source"``; None: source for the ``train`` split (training draws an
    image's own captions; truth is checked per batch), truth for the others (evaluation).
    """
    cfg = cfg or NearDupConfig()
    n_groups = n_images // cfg.group_size
    if n_groups < 1:
        raise ConfigError(f"{n_images} images make no group of {cfg.group_size}", fix="ask for more images")
    shapes_cfg = cfg.shapes_config()
    image_ids, captions, relevance_ids, images, cmeta, imeta = [], [], [], [], [], []
    for g in progress(range(n_groups), desc=f"near-duplicate {split}", unit="group"):
        scenes, caps = make_group(seed, split, g, cfg, shapes_cfg)
        for j, (scene, cs) in enumerate(zip(scenes, caps, strict=True)):
            ids = []
            for c in cs:
                ids.append(len(captions))
                captions.append(c.en)
                cmeta.append({"zh": c.zh, "family": c.family, "form": form_to_dict(c.form)})
            relevance_ids.append(ids)
            image_ids.append(f"{split}_g{g:05d}_{j}")
            images.append(render_array(scene, cfg.image_size, shapes_cfg.background))
            imeta.append({"split": split, "group": g, "member": j, "scene": scene.to_dict()})
    pairs = ImageTextPairs(
        image_ids,
        captions,
        relevance_ids,
        image_array=np.stack(images),
        name=name or f"shapes-neardup-{split}",
        caption_meta=cmeta,
        image_meta=imeta,
    )
    return pairs.with_relevance(relevance or ("source" if split == "train" else "truth"))


def near_duplicate_splits(
    sizes: dict[str, int], seed: int = 0, cfg: NearDupConfig | None = None
) -> dict[str, ImageTextPairs]:
    """``{"train": n, "val": n, "test": n}`` -> near-duplicate pairs per split.

    Every split uses the same ``seed``, each with its own streams.
    """
    return {split: near_duplicate_pairs(n, seed, split, cfg) for split, n in sizes.items() if n > 0}


def groups_of(pairs: ImageTextPairs) -> np.ndarray:
    """Group id of every image: from ``image_meta["group"]`` when present, else each image alone."""
    if pairs.image_meta and all("group" in m for m in pairs.image_meta):
        raw = [m["group"] for m in pairs.image_meta]
        _, inverse = np.unique(np.asarray(raw), return_inverse=True)
        return inverse.astype(np.int64)
    return np.arange(pairs.n_images, dtype=np.int64)


class GroupBatches:
    """Seeded batches of whole groups: an epoch is a permutation of the groups, packed into batches.

    A batch takes groups in order until it holds ``batch_size`` images (a group is never split); a last
    batch with fewer than two images is dropped (it has no negatives). ``batches(epoch)`` depends only
    on (seed, epoch), so training can resume on exactly the next batch.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int):
        if batch_size < 2:
            raise ConfigError("batch_size must be at least 2")
        self.groups = np.asarray(groups)
        self.members = [np.flatnonzero(self.groups == g) for g in range(int(self.groups.max()) + 1)]
        if max(len(m) for m in self.members) > batch_size:
            raise ConfigError(
                f"a group has more images than batch_size {batch_size}",
                fix="use a batch size of at least the group size",
            )
        self.batch_size = batch_size
        self.seed = seed
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def batches(self, epoch: int) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        from alignlab.train.loop import epoch_permutation

        order = epoch_permutation(len(self.members), self.seed, epoch)
        out: list[np.ndarray] = []
        cur: list[np.ndarray] = []
        size = 0
        for g in order:
            m = self.members[g]
            if size + len(m) > self.batch_size:
                out.append(np.concatenate(cur))
                cur, size = [], 0
            cur.append(m)
            size += len(m)
        if cur and size >= 2:
            out.append(np.concatenate(cur))
        self._cache = (epoch, out)
        return out

    def __len__(self) -> int:
        return len(self.batches(0))


def with_captions(pairs: ImageTextPairs, n: int) -> ImageTextPairs:
    """A copy keeping at most the first ``n`` own captions of each image (for fixed-size benchmarks).

    Under truth relevance each image keeps the kept captions true of it.
    """
    keep = [ids[:n] for ids in pairs.sources]
    flat = [c for ids in keep for c in ids]
    new_id = {c: k for k, c in enumerate(flat)}
    sources = [[new_id[c] for c in ids] for ids in keep]
    truth = pairs.source_relevance is not None
    return replace(
        pairs,
        captions=[pairs.captions[c] for c in flat],
        relevance=[[new_id[c] for c in ids if c in new_id] for ids in pairs.relevance] if truth else sources,
        source_relevance=sources if truth else None,
        caption_meta=[pairs.caption_meta[c] for c in flat] if pairs.caption_meta else None,
        _caption_images=None,
    )


def concat_pairs(a: ImageTextPairs, b: ImageTextPairs, name: str | None = None) -> ImageTextPairs:
    """``a`` then ``b`` as one set (caption ids of ``b`` shifted; group ids of ``b`` made distinct)."""
    if a.image_array is None or b.image_array is None or a.image_array.shape[1:] != b.image_array.shape[1:]:
        raise DataError("can only join in-memory pairs of one image size", fix="materialize both first")
    shift = a.n_captions
    g0 = int(groups_of(a).max()) + 1 if a.n_images else 0
    meta_b = [
        {**m, "group": g0 + int(g)}
        for m, g in zip(b.image_meta or [{}] * b.n_images, groups_of(b), strict=True)
    ]
    meta_a = [
        {**m, "group": int(g)} for m, g in zip(a.image_meta or [{}] * a.n_images, groups_of(a), strict=True)
    ]
    cmeta = (
        (a.caption_meta + b.caption_meta)
        if a.caption_meta is not None and b.caption_meta is not None
        else None
    )
    joined = ImageTextPairs(
        a.image_ids + b.image_ids,
        a.captions + b.captions,
        a.sources + [[c + shift for c in ids] for ids in b.sources],
        image_array=np.concatenate([a.image_array, b.image_array]),
        name=name or f"{a.name}+{b.name}",
        caption_meta=cmeta,
        image_meta=meta_a + meta_b,
    )
    # Truth across the two sets is new: recompute it when either part was truth-labelled.
    truth = "truth" in (a.relevance_kind, b.relevance_kind) and joined.has_truth
    return joined.with_relevance("truth") if truth else joined

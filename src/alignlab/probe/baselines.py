"""Blind baselines and sanity models, all usable through the scorer contract.

Blind baselines answer from the text alone (or from an uninformative image); the best of them is the
bar a model must clear to show it *looks* at the image (the grounded gap):

* :class:`NeverNotScorer` — never pick a sentence with a negation word (``not``, ``no``, ``n't``…);
* :class:`ShorterScorer` — pick the shorter caption (fewer words);
* :class:`UnigramLMScorer` — the caption most probable under a unigram language model of the training
  captions, ``log P(s) = Σ_w log (c(w) + 1) / (N + V + 1)`` (add-one smoothing, one slot for unseen words);
* the model's own text side with a null, mean or shuffled image — built by
  :mod:`alignlab.probe.evaluate`, not here.

A heuristic has no opinion between options it scores equally; instead of letting every such tie count
as wrong (which would understate the baseline and inflate the grounded gap), heuristics declare
``tie_credit = "expected"``: an item whose top score is shared by ``k`` options, the correct one among
them, earns ``1/k`` — exactly the expected accuracy of breaking the tie at random, without the noise of
one random draw (which would also bias the *best* blind baseline upwards).

Sanity models (tested in CI):

* :class:`RandomScorer` — uniform random scores: chance everywhere;
* :class:`BagOfWordsOracle` — knows every object in the image (its scene graph) but reads a caption
  as a bag of words: ``Σ_w support(w)`` with +1 for a colour/size/kind word that some object has and −1
  for one no object has (other words 0), ties broken at random per (image, caption). It is at chance
  on attribute ownership, relationship composition and word order, where the distractors have the same
  bag of words;
* :class:`SceneGraphOracle` — parses the caption and evaluates it on the scene graph: 100%.

The two oracles recognise a ShapesWorld image by the hash of its pixels (:meth:`from_probe` renders
nothing: it reads the items' images and scene graphs).

>>> s = ShorterScorer()
>>> s.score(
...     torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["a red circle", "a red circle to the left"]
... ).argmax().item()
0
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignlab.core.errors import ModelError
from alignlab.data.shapes import COLOURS, POLYSEMOUS, SHAPES, SIZE_SYNONYMS, Scene, kind_plural
from alignlab.data.text import split_words
from alignlab.models.base import ImageInput, Scorer, as_text_list, num_images

NEGATION_WORDS = frozenset(
    {
        "not",
        "no",
        "n't",
        "never",
        "nor",
        "none",
        "nothing",
        "nobody",
        "neither",
        "without",
        "isn't",
        "aren't",
        "doesn't",
        "don't",
        "can't",
        "cannot",
        "won't",
        "wasn't",
        "weren't",
    }
)
JITTER = 1e-9


def jitter(*parts: Any, seed: int = 0) -> float:
    """A deterministic pseudo-random number in [0, JITTER) from ``parts`` (for tie-breaking)."""
    h = hashlib.sha256(("\x1f".join(map(str, (seed, *parts)))).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * JITTER


def image_key(image: Any) -> str:
    """A content key of one image (uint8 ``[3, H, W]`` tensor, ``[H, W, 3]`` array or Pillow image)."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise ModelError("scene oracles need uint8 images", fix="pass the probe images unchanged")
        arr = image.permute(1, 2, 0).contiguous().numpy()
    else:
        arr = np.asarray(image, dtype=np.uint8)
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def _image_list(images: ImageInput) -> list[Any]:
    return [images[i] for i in range(num_images(images))]


class TextOnlyScorer(Scorer):
    """A scorer that ignores the image: every image gets the same row of text scores."""

    score_semantics = "logit"
    tie_credit = "expected"  # a tie among k top options (the correct one included) earns 1/k

    def __init__(self, seed: int = 0):
        self.seed = seed

    def text_score(self, text: str) -> float:
        raise NotImplementedError

    def _row(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.text_score(t) for t in as_text_list(texts)], dtype=torch.float64)

    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        row = self._row(texts)
        return row.unsqueeze(0).expand(num_images(images), len(row)).clone()

    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        return self._row(texts)


class NeverNotScorer(TextOnlyScorer):
    """Prefers sentences without negation words: ``score = −#negation words``."""

    name = "never-not"

    def text_score(self, text: str) -> float:
        words = split_words(text.replace("’", "'"))
        return -float(sum(w in NEGATION_WORDS or w.endswith("n't") for w in words))


class ShorterScorer(TextOnlyScorer):
    """Prefers the shorter caption: ``score = −#words``."""

    name = "shorter"

    def text_score(self, text: str) -> float:
        return -float(len(split_words(text)))


class UnigramLMScorer(TextOnlyScorer):
    """Log-probability of the caption under an add-one-smoothed unigram model of ``captions``."""

    name = "unigram-lm"

    def __init__(self, captions: Iterable[str], seed: int = 0):
        super().__init__(seed)
        self.counts: Counter[str] = Counter(w for c in captions for w in split_words(c))
        if not self.counts:
            raise ModelError(
                "the unigram language model needs training captions",
                fix="give the captions the model was trained on (--lm-captions)",
            )
        self.total = sum(self.counts.values())
        self.denominator = math.log(self.total + len(self.counts) + 1)

    def text_score(self, text: str) -> float:
        # fsum is exactly rounded, hence independent of word order: permutations tie exactly.
        return math.fsum(math.log(self.counts.get(w, 0) + 1) - self.denominator for w in split_words(text))


class RandomScorer(Scorer):
    """Uniform random scores (a seeded generator; deterministic for a fixed call sequence)."""

    name = "random"
    score_semantics = "logit"

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        return torch.rand(
            num_images(images), len(as_text_list(texts)), generator=self.gen, dtype=torch.float64
        )

    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        return torch.rand(len(as_text_list(texts)), generator=self.gen, dtype=torch.float64)


class _SceneScorer(Scorer):
    """A scorer that looks up the scene graph of each image by the hash of its pixels."""

    score_semantics = "logit"

    def __init__(self, scenes: dict[str, Scene], seed: int = 0, unknown: str = "error"):
        if unknown not in ("error", "empty"):
            raise ValueError("unknown must be 'error' or 'empty'")
        self.scenes = scenes
        self.seed = seed
        self.unknown = unknown  # "empty": an image it does not know (a blind baseline's) shows an empty scene

    @classmethod
    def from_probe(cls, ps: Any, **kwargs: Any) -> _SceneScorer:
        """From a :class:`~alignlab.probe.items.ProbeSet` of ShapesWorld items (their ``meta.scenes``)."""
        from alignlab.probe.items import load_item_images

        scenes: dict[str, Scene] = {}
        for it in ps.items:
            sc = it.meta.get("scenes")
            if not sc:
                continue
            for img, d in zip(load_item_images(ps, it), sc, strict=True):
                scenes[image_key(img)] = Scene.from_dict(d)
        if not scenes:
            raise ModelError(
                "the probe items carry no scene graphs", fix="use ShapesWorld items for the oracles"
            )
        return cls(scenes, **kwargs)

    def scene(self, image: Any) -> tuple[str, Scene]:
        key = image_key(image)
        if key not in self.scenes and self.unknown == "empty":
            return key, Scene(())
        if key not in self.scenes:
            raise ModelError(
                "the oracle has no scene graph for this image",
                fix="score the images of the probe set the oracle was built from",
            )
        return key, self.scenes[key]

    def pair_score(self, key: str, scene: Scene, text: str) -> float:
        raise NotImplementedError

    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = as_text_list(texts)
        rows = []
        for im in _image_list(images):
            key, scene = self.scene(im)
            rows.append([self.pair_score(key, scene, t) for t in texts])
        return torch.tensor(rows, dtype=torch.float64).reshape(num_images(images), len(texts))

    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = as_text_list(texts)
        out = []
        for im, t in zip(_image_list(images), texts, strict=True):
            key, scene = self.scene(im)
            out.append(self.pair_score(key, scene, t))
        return torch.tensor(out, dtype=torch.float64)


class SceneGraphOracle(_SceneScorer):
    """1 if the caption parses and is true of the image's scene graph, else 0."""

    name = "scene-graph-oracle"

    def pair_score(self, key: str, scene: Scene, text: str) -> float:
        from alignlab.probe.build_shapes import caption_truth

        return 1.0 if caption_truth(text, scene) else 0.0


_KIND_WORDS = {
    **{k: k for k in (*SHAPES, *POLYSEMOUS)},
    **{kind_plural(k): k for k in (*SHAPES, *POLYSEMOUS)},
}
_SIZE_OF = {w: s for s, ws in SIZE_SYNONYMS.items() for w in ws}


class BagOfWordsOracle(_SceneScorer):
    """Scene-aware but order-blind: ``Σ_w support(w)`` (+1 word present in the scene, −1 absent),
    random ties."""

    name = "bag-of-words-oracle"

    def __init__(
        self, scenes: dict[str, Scene], seed: int = 0, unknown: str = "error", tie_break: bool = True
    ):
        super().__init__(scenes, seed, unknown)
        self.tie_break = tie_break  # False: equal bags tie exactly (and ties count as wrong)

    def pair_score(self, key: str, scene: Scene, text: str) -> float:
        colours = {o.colour for o in scene.objects}
        sizes = {o.size for o in scene.objects}
        kinds = {o.kind for o in scene.objects}
        s = 0.0
        for w in split_words(text):
            if w in COLOURS:
                s += 1.0 if w in colours else -1.0
            elif w in _SIZE_OF:
                s += 1.0 if _SIZE_OF[w] in sizes else -1.0
            elif w in _KIND_WORDS:
                s += 1.0 if _KIND_WORDS[w] in kinds else -1.0
        return s + (jitter(key, text, seed=self.seed) if self.tie_break else 0.0)


HEURISTICS = ("never_not", "shorter", "unigram_lm")
IMAGE_BLINDS = ("null_image", "mean_image", "shuffled_image")
BLINDS = (*IMAGE_BLINDS, *HEURISTICS)


def heuristic_scorer(name: str, lm_captions: Sequence[str] | None = None, seed: int = 0) -> Scorer:
    if name == "never_not":
        return NeverNotScorer(seed)
    if name == "shorter":
        return ShorterScorer(seed)
    if name == "unigram_lm":
        if not lm_captions:
            raise ModelError(
                "the unigram-LM baseline needs training captions",
                fix="give --lm-captions (a caption file) or leave unigram_lm out of the baselines",
            )
        return UnigramLMScorer(lm_captions, seed)
    raise ModelError(f"unknown heuristic baseline {name!r}", fix=f"use one of: {', '.join(HEURISTICS)}")

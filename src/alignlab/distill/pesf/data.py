"""Classification data for the KD experiments: scikit-learn's digits and a ShapesWorld task.

* :func:`load_digits_split` — the 1,797 real 8×8 handwritten digits that ship inside scikit-learn (no
  download), scaled to [0, 1] and split train/val/test by a *stratified* split with a fixed seed, so
  every method and every model seed sees exactly the same examples.
* :func:`shapes_classification` — ShapesWorld images (:mod:`alignlab.data.shapes`) with one **large**
  object and 0–``max_distractors`` (default 1) **small** distractors; the label is the large object's shape ×
  colour (5 shapes × ``n_colours`` colours). The distractors use every shape and colour, so a model has to
  find the large object rather than read off the image's colour histogram. Every image is a pure function of
  ``(seed, split, index)``.

Both return a :class:`ClassificationData`: float tensors ``[N, C, H, W]`` in [0, 1] and int64 labels.

>>> d = load_digits_split(seed=0)
>>> d.x_train.shape[1:], d.n_classes, len(d.y_train) + len(d.y_val) + len(d.y_test)
(torch.Size([1, 8, 8]), 10, 1797)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from alignlab.core.errors import ConfigError, DataError


@dataclass
class ClassificationData:
    """Three splits of a classification set; images ``[N, C, H, W]`` float in [0, 1], labels int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4:
                raise DataError(
                    f"{split} images must be [N, C, H, W], got shape {tuple(x.shape)}", where=self.name
                )
            if len(x) != len(y):
                raise DataError(f"{split} has {len(x)} images but {len(y)} labels", where=self.name)
            if len(y) == 0:
                raise DataError(f"{split} split is empty", where=self.name, fix="give every split examples")
            if int(y.min()) < 0 or int(y.max()) >= self.n_classes:
                raise DataError(f"{split} labels must lie in [0, {self.n_classes})", where=self.name)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}", fix="use train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def subsample_train(self, n: int, seed: int = 0) -> ClassificationData:
        """A copy whose training split keeps ``n`` examples, stratified by label (val/test unchanged)."""
        if n >= len(self.y_train):
            return self
        if n < self.n_classes:
            raise ConfigError(
                f"max_train={n} is smaller than the {self.n_classes} classes",
                fix=f"keep at least {self.n_classes} training examples",
            )
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(self.y_train)), train_size=n, stratify=self.y_train.numpy(), random_state=seed
        )
        keep = torch.from_numpy(np.sort(keep))
        return ClassificationData(
            self.name,
            self.x_train[keep],
            self.y_train[keep],
            self.x_val,
            self.y_val,
            self.x_test,
            self.y_test,
            self.n_classes,
            list(self.class_names),
        )

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, f"y_{s}")) for s in ("train", "val", "test")}


def load_digits_split(
    seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> ClassificationData:
    """scikit-learn's digits, stratified into train/val/test with ``seed`` (default 60/20/20 %)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - sklearn is in the `embed` extra
        from alignlab.core.errors import DependencyError

        raise DependencyError(
            "the digits data needs scikit-learn", fix="pip install 'alignlab[pesf]'"
        ) from None
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("val_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # pixel values are counts 0..16
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=seed
    )

    def take(ix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ix = np.sort(ix)
        return torch.from_numpy(x[ix]).unsqueeze(1).contiguous(), torch.from_numpy(y[ix])

    (xtr, ytr), (xva, yva), (xte, yte) = take(train), take(val), take(test)
    return ClassificationData("digits", xtr, ytr, xva, yva, xte, yte, 10, [str(i) for i in range(10)])


SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "star")
# Colours of the large object, chosen to be far apart in RGB; distractors use every ShapesWorld colour.
MAIN_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "gray")


def _shapes_example(
    seed: int, split: str, index: int, image_size: int, n_colours: int, max_distractors: int
) -> tuple[np.ndarray, int]:
    from alignlab.data.shapes import COLOURS, GRID, SPLIT_CODES, Obj, Scene, render_array

    # One generator per image, seeded from (seed, split, index): images are independent of set sizes.
    rng = np.random.default_rng([int(seed), 100 + SPLIT_CODES[split], int(index)])
    label = int(rng.integers(len(SHAPE_CLASSES) * n_colours))
    shape, colour = SHAPE_CLASSES[label // n_colours], MAIN_COLOURS[label % n_colours]
    n = int(rng.integers(0, max_distractors + 1))
    cells = rng.choice(GRID * GRID, size=n + 1, replace=False)
    objs = []
    for k, cell in enumerate(cells):
        dx, dy = (rng.random(2) - 0.5).tolist()
        if k == 0:
            objs.append(Obj(shape, colour, "large", int(cell) // GRID, int(cell) % GRID, dx, dy))
        else:
            objs.append(
                Obj(
                    SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))],
                    tuple(COLOURS)[int(rng.integers(len(COLOURS)))],
                    "small",
                    int(cell) // GRID,
                    int(cell) % GRID,
                    dx,
                    dy,
                )
            )
    return render_array(Scene(tuple(objs)), image_size), label


def shapes_classification(
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 1000,
    seed: int = 0,
    image_size: int = 24,
    n_colours: int = 4,
    max_distractors: int = 1,
) -> ClassificationData:
    """ShapesWorld shape × colour classification (``5 * n_colours`` classes) of the large object.

    Images are ``image_size``² RGB; one large object of the labelled shape and colour, and up to
    ``max_distractors`` small objects of any shape and colour in other cells of the 3×3 grid.
    """
    if not 1 <= n_colours <= len(MAIN_COLOURS):
        raise ConfigError(f"n_colours must be in 1..{len(MAIN_COLOURS)}, got {n_colours}")
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError("every ShapesWorld split needs at least one image")
    if not 0 <= max_distractors <= 8:
        raise ConfigError("max_distractors must be in 0..8 (the grid has 9 cells)")
    if image_size < 16:
        raise ConfigError("image_size must be at least 16")
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, labels = zip(
            *(_shapes_example(seed, split, i, image_size, n_colours, max_distractors) for i in range(n))
        )
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        out[split] = (x, torch.tensor(labels, dtype=torch.int64))
    names = [f"{s}-{c}" for s in SHAPE_CLASSES for c in MAIN_COLOURS[:n_colours]]
    return ClassificationData("shapes", *out["train"], *out["val"], *out["test"], len(names), names)


DATASETS = ("digits", "shapes")


def load_data(name: str, *, seed: int = 0, **shapes_kwargs) -> ClassificationData:
    """``"digits"`` or ``"shapes"``; ``seed`` fixes the split (digits) or the generated images (shapes)."""
    if name == "digits":
        if shapes_kwargs:
            raise ConfigError(f"digits takes no ShapesWorld settings, got {', '.join(shapes_kwargs)}")
        return load_digits_split(seed=seed)
    if name == "shapes":
        return shapes_classification(seed=seed, **shapes_kwargs)
    raise ConfigError(f"unknown data set {name!r}", fix=f"choose one of: {', '.join(DATASETS)}")

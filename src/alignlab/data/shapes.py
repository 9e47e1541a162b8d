"""ShapesWorld: a seeded generator of scenes, images, English captions, Chinese translations and truth.

A *scene* holds 1–4 objects placed in distinct cells of a 3×3 grid. Each object has a kind (a plain
shape, or a *polysemous* kind such as "bat" that is drawn as either the animal or the club), a colour
and a size. From the scene graph ShapesWorld makes

* an RGB image drawn with Pillow (64×64 by default);
* captions from a small grammar: existence ("a large red circle"), spatial relations ("a red circle to
  the left of a blue square"), counts ("there are three objects"), properties ("the circle is red",
  "the circle is not blue"), lists ("a red circle and a blue square") and "… respectively" forms —
  each caption is a :class:`Caption` holding its logical form, its English text and its Chinese
  translation, in which a polysemous noun gets the word of the drawn sense (bat → 蝙蝠 or 球棒);
* a truth evaluator: :func:`evaluate` decides whether a logical form, or any English sentence of the
  grammar (parsed by :func:`parse_caption`), is true of a scene.

Relations are defined on grid cells (``left_of(a, b)`` iff ``a.col < b.col``; ``above`` iff
``a.row < b.row``), so they are crisp and visible. A definite noun phrase ("the circle") presupposes a
unique referent; when there is none the sentence is false, negated or not.

The same seed gives byte-identical data: every image has its own generator seeded from
``(seed, split, index)``.

>>> world = ShapesWorld(ShapesConfig(polysemous_rate=0.3))
>>> ex = world.example(seed=0, split="train", index=0)
>>> all(evaluate(c.form, ex.scene) for c in ex.captions)
True
>>> is_true(ex.captions[0].en, ex.scene)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from alignlab.core.errors import ConfigError, DataError

GENERATOR_VERSION = "shapesworld-1"

# --- vocabulary -------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red": ((220, 40, 40), "红色"),
    "green": ((40, 180, 60), "绿色"),
    "blue": ((50, 100, 240), "蓝色"),
    "yellow": ((240, 220, 40), "黄色"),
    "purple": ((160, 60, 210), "紫色"),
    "orange": ((250, 140, 20), "橙色"),
    "white": ((245, 245, 245), "白色"),
    "gray": ((130, 130, 130), "灰色"),
}
SIZES: dict[str, tuple[float, str]] = {"small": (0.085, "小"), "large": (0.145, "大")}
SIZE_SYNONYMS = {"small": ("small", "little"), "large": ("large", "big")}

# Plain shapes: English noun -> (plural, Chinese noun, Chinese classifier).
SHAPES: dict[str, tuple[str, str, str]] = {
    "circle": ("circles", "圆形", "个"),
    "square": ("squares", "正方形", "个"),
    "triangle": ("triangles", "三角形", "个"),
    "diamond": ("diamonds", "菱形", "个"),
    "star": ("stars", "星形", "个"),
}


@dataclass(frozen=True)
class Sense:
    """One sense of a polysemous kind: its WordNet 3.0 synset, a short gloss and its Chinese word."""

    synset: str
    gloss: str
    zh: str
    classifier: str


# Polysemous kinds: each sense is drawn differently and translated differently.
POLYSEMOUS: dict[str, tuple[str, tuple[Sense, ...]]] = {
    "bat": ("bats", (Sense("bat.n.01", "animal", "蝙蝠", "只"), Sense("bat.n.05", "club", "球棒", "根"))),
    "mouse": (
        "mice",
        (Sense("mouse.n.01", "animal", "老鼠", "只"), Sense("mouse.n.04", "device", "鼠标", "个")),
    ),
    "crane": (
        "cranes",
        (Sense("crane.n.05", "bird", "鹤", "只"), Sense("crane.n.04", "machine", "起重机", "台")),
    ),
    "seal": (
        "seals",
        (Sense("seal.n.09", "animal", "海豹", "只"), Sense("seal.n.02", "stamp", "印章", "枚")),
    ),
    "kite": ("kites", (Sense("kite.n.04", "bird", "鸢", "只"), Sense("kite.n.03", "toy", "风筝", "个"))),
}
SENSES: dict[str, Sense] = {s.synset: s for _, senses in POLYSEMOUS.values() for s in senses}

GENERIC_NOUNS = {"object": "objects", "shape": "shapes", "thing": "things"}
RELATIONS = ("left_of", "right_of", "above", "below")
REL_PHRASES = {
    "left_of": ("to the left of", "left of", "on the left of"),
    "right_of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
REL_ZH = {"left_of": "左边", "right_of": "右边", "above": "上面", "below": "下面"}
INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
NUMBERS = ("zero", "one", "two", "three", "four")
NUMBERS_ZH = ("零", "一", "两", "三", "四")
GRID = 3


def kind_plural(kind: str) -> str:
    if kind in SHAPES:
        return SHAPES[kind][0]
    if kind in POLYSEMOUS:
        return POLYSEMOUS[kind][0]
    return GENERIC_NOUNS[kind]


def all_kinds() -> list[str]:
    return [*SHAPES, *POLYSEMOUS]


def vocabulary() -> list[str]:
    """Every English word the caption grammar can produce (a default tokenizer vocabulary)."""
    words = {"a", "an", "the", "there", "is", "are", "not", "and", "respectively", "in", "image", "exactly"}
    words |= set(COLOURS) | {w for ws in SIZE_SYNONYMS.values() for w in ws} | set(NUMBERS[1:])
    for kind in (*SHAPES, *POLYSEMOUS, *GENERIC_NOUNS):
        words |= {kind, kind_plural(kind)}
    words |= {w for ps in REL_PHRASES.values() for p in ps for w in p.split()}
    return sorted(words)


# --- scenes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """One object of a scene. ``sense`` is the WordNet synset of a polysemous kind (None for shapes)."""

    kind: str
    colour: str
    size: str
    row: int
    col: int
    dx: float = 0.0  # jitter inside the cell, as a fraction of the cell size
    dy: float = 0.0
    sense: str | None = None

    def replace(self, **changes: Any) -> Obj:
        return Obj(**{**asdict(self), **changes})


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Scene:
        try:
            return Scene(tuple(Obj(**o) for o in d["objects"]))
        except (KeyError, TypeError) as e:
            raise DataError(
                f"not a ShapesWorld scene: {e}", fix="give a dict with an 'objects' list"
            ) from None


def relation_holds(rel: str, a: Obj, b: Obj) -> bool:
    if rel == "left_of":
        return a.col < b.col
    if rel == "right_of":
        return a.col > b.col
    if rel == "above":
        return a.row < b.row
    if rel == "below":
        return a.row > b.row
    raise ValueError(f"unknown relation {rel!r}")


@dataclass
class ShapesConfig:
    """Settings of the generator. Defaults give the embedded default data set."""

    image_size: int = 64  # width and height of rendered images, in pixels
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = tuple(SHAPES)
    colours: tuple[str, ...] = tuple(COLOURS)
    polysemous_kinds: tuple[str, ...] = tuple(POLYSEMOUS)
    polysemous_rate: float = 0.2  # chance that an object is of a polysemous kind
    captions_per_image: int = 5
    negation_rate: float = 0.0  # weight of true negated captions ("the circle is not blue")
    background: tuple[int, int, int] = (0, 0, 0)
    # Captions unique to their image within the generated gallery (checked by the truth evaluator), so
    # that one relevant image per caption is the truth; see ShapesWorld.generate.
    discriminative: bool = False

    def __post_init__(self) -> None:
        # Count captions name the number of matching objects in words, up to NUMBERS[-1] ("four").
        max_n = min(GRID * GRID, len(NUMBERS) - 1)
        if not 1 <= self.min_objects <= self.max_objects <= max_n:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {max_n}")
        if self.image_size < 16:
            raise ValueError("image_size must be at least 16")
        if self.captions_per_image < 1:
            raise ValueError("captions_per_image must be at least 1")
        if not 0.0 <= self.polysemous_rate <= 1.0:
            raise ValueError("polysemous_rate must be in [0, 1]")
        for s in self.shapes:
            if s not in SHAPES:
                raise ValueError(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
        for k in self.polysemous_kinds:
            if k not in POLYSEMOUS:
                raise ValueError(f"unknown polysemous kind {k!r}; choose from {', '.join(POLYSEMOUS)}")
        for c in self.colours:
            if c not in COLOURS:
                raise ValueError(f"unknown colour {c!r}; choose from {', '.join(COLOURS)}")
        if self.polysemous_rate > 0 and not self.polysemous_kinds:
            raise ValueError("polysemous_rate > 0 needs at least one polysemous kind")
        if self.polysemous_rate < 1 and not self.shapes:
            raise ValueError("polysemous_rate < 1 needs at least one shape")


def sample_object(rng: np.random.Generator, cfg: ShapesConfig, row: int, col: int) -> Obj:
    if cfg.polysemous_kinds and rng.random() < cfg.polysemous_rate:
        kind = cfg.polysemous_kinds[rng.integers(len(cfg.polysemous_kinds))]
        senses = POLYSEMOUS[kind][1]
        sense = senses[rng.integers(len(senses))].synset
    else:
        kind = cfg.shapes[rng.integers(len(cfg.shapes))]
        sense = None
    colour = cfg.colours[rng.integers(len(cfg.colours))]
    size = ("small", "large")[rng.integers(2)]
    dx, dy = (rng.random(2) - 0.5).tolist()
    return Obj(kind, colour, size, row, col, round(dx, 3), round(dy, 3), sense)


def sample_scene(rng: np.random.Generator, cfg: ShapesConfig) -> Scene:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    return Scene(tuple(sample_object(rng, cfg, int(c) // GRID, int(c) % GRID) for c in cells))


# --- counterfactual scenes (probes, hard negatives) --------------------------------------------------


def mirror(scene: Scene) -> Scene:
    """The scene flipped left–right: every left/right relation reverses, nothing else changes."""
    return Scene(tuple(o.replace(col=GRID - 1 - o.col, dx=-o.dx) for o in scene.objects))


def swap_colours(scene: Scene, i: int, j: int) -> Scene:
    objs = list(scene.objects)
    objs[i], objs[j] = objs[i].replace(colour=objs[j].colour), objs[j].replace(colour=objs[i].colour)
    return Scene(tuple(objs))


def swap_positions(scene: Scene, i: int, j: int) -> Scene:
    objs = list(scene.objects)
    a, b = objs[i], objs[j]
    objs[i] = a.replace(row=b.row, col=b.col, dx=b.dx, dy=b.dy)
    objs[j] = b.replace(row=a.row, col=a.col, dx=a.dx, dy=a.dy)
    return Scene(tuple(objs))


def near_duplicate(scene: Scene, rng: np.random.Generator, cfg: ShapesConfig | None = None) -> Scene:
    """A scene differing from ``scene`` in exactly one attribute or one relation.

    Changes the colour, size or kind of one object, or (with two or more objects) swaps the places of
    two objects, so that at least one relation between them reverses. Used for hard negatives.
    """
    cfg = cfg or ShapesConfig()
    objs = list(scene.objects)
    options = ["colour", "size", "kind"] + (["swap"] if len(objs) > 1 else [])
    what = options[rng.integers(len(options))]
    if what == "swap":
        i, j = (int(x) for x in rng.choice(len(objs), size=2, replace=False))
        if objs[i].kind == objs[j].kind and objs[i].colour == objs[j].colour and objs[i].size == objs[j].size:
            what = "colour"  # swapping identical objects changes nothing visible
        else:
            return swap_positions(scene, i, j)
    i = int(rng.integers(len(objs)))
    o = objs[i]
    if what == "colour":
        choices = [c for c in cfg.colours if c != o.colour]
        objs[i] = o.replace(colour=choices[rng.integers(len(choices))])
    elif what == "size":
        objs[i] = o.replace(size="small" if o.size == "large" else "large")
    else:
        kinds = [k for k in (*cfg.shapes, *cfg.polysemous_kinds) if k != o.kind]
        kind = kinds[rng.integers(len(kinds))]
        sense = None
        if kind in POLYSEMOUS:
            senses = POLYSEMOUS[kind][1]
            sense = senses[rng.integers(len(senses))].synset
        objs[i] = o.replace(kind=kind, sense=sense)
    return Scene(tuple(objs))


# --- rendering --------------------------------------------------------------------------------------


def _poly(cx: float, cy: float, r: float, pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(cx + px * r, cy + py * r) for px, py in pts]


_STAR = [
    (
        math.cos(math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.45),
        -math.sin(math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.45),
    )
    for k in range(10)
]


def _draw_object(d: ImageDraw.ImageDraw, o: Obj, cx: float, cy: float, r: float, bg: tuple) -> None:
    col = COLOURS[o.colour][0]
    w = max(1, round(r / 3.5))
    key = o.sense or o.kind
    if key == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    elif key == "square":
        s = r * 0.88
        d.rectangle((cx - s, cy - s, cx + s, cy + s), fill=col)
    elif key == "triangle":
        d.polygon(_poly(cx, cy, r, [(0, -1), (0.95, 0.8), (-0.95, 0.8)]), fill=col)
    elif key == "diamond":
        d.polygon(_poly(cx, cy, r, [(0, -1), (0.75, 0), (0, 1), (-0.75, 0)]), fill=col)
    elif key == "star":
        d.polygon(_poly(cx, cy, r * 1.05, _STAR), fill=col)
    elif key == "bat.n.01":  # the animal: spread wings with a small body
        d.polygon(
            _poly(
                cx,
                cy,
                r,
                [
                    (-1, -0.5),
                    (-0.5, 0.1),
                    (-0.2, -0.1),
                    (0, 0.35),
                    (0.2, -0.1),
                    (0.5, 0.1),
                    (1, -0.5),
                    (0.35, 0.45),
                    (0, 0.2),
                    (-0.35, 0.45),
                ],
            ),
            fill=col,
        )
        d.ellipse((cx - r * 0.22, cy - r * 0.45, cx + r * 0.22, cy + r * 0.3), fill=col)
    elif key == "bat.n.05":  # the club: a long diagonal stick, thicker at the top
        d.polygon(_poly(cx, cy, r, [(-0.95, 0.8), (-0.8, 0.95), (0.95, -0.5), (0.5, -0.95)]), fill=col)
    elif key == "mouse.n.01":  # the animal: body, round ear, tail
        d.ellipse((cx - r * 0.8, cy - r * 0.35, cx + r * 0.6, cy + r * 0.5), fill=col)
        d.ellipse((cx + r * 0.1, cy - r * 0.75, cx + r * 0.6, cy - r * 0.2), fill=col)
        d.line(_poly(cx, cy, r, [(-0.8, 0.2), (-1.0, -0.3)]), fill=col, width=w)
    elif key == "mouse.n.04":  # the device: upright rounded body with a button split and a cord
        d.rounded_rectangle((cx - r * 0.5, cy - r * 0.45, cx + r * 0.5, cy + r), radius=r * 0.4, fill=col)
        d.line(_poly(cx, cy, r, [(0, -0.45), (0, 0.15)]), fill=bg, width=max(1, w // 2))
        d.line(_poly(cx, cy, r, [(0, -0.45), (0, -1.0)]), fill=col, width=w)
    elif key == "crane.n.05":  # the bird: body, long neck and legs
        d.ellipse((cx - r * 0.7, cy - r * 0.2, cx + r * 0.3, cy + r * 0.35), fill=col)
        d.line(_poly(cx, cy, r, [(0.2, -0.05), (0.45, -0.95)]), fill=col, width=w)
        d.line(_poly(cx, cy, r, [(-0.3, 0.3), (-0.35, 1.0)]), fill=col, width=max(1, w // 2))
        d.line(_poly(cx, cy, r, [(0.0, 0.3), (0.05, 1.0)]), fill=col, width=max(1, w // 2))
    elif key == "crane.n.04":  # the machine: tower, jib and hanging hook
        d.rectangle((cx - r * 0.7, cy - r * 0.8, cx - r * 0.4, cy + r), fill=col)
        d.rectangle((cx - r * 0.7, cy - r * 0.95, cx + r, cy - r * 0.7), fill=col)
        d.line(_poly(cx, cy, r, [(0.85, -0.75), (0.85, 0.2)]), fill=col, width=max(1, w // 2))
        d.rectangle((cx + r * 0.65, cy + r * 0.15, cx + r * 1.0, cy + r * 0.4), fill=col)
    elif key == "seal.n.09":  # the animal: long body, raised head, flipper
        d.ellipse((cx - r, cy - r * 0.05, cx + r * 0.5, cy + r * 0.55), fill=col)
        d.ellipse((cx + r * 0.25, cy - r * 0.6, cx + r * 0.85, cy + r * 0.05), fill=col)
        d.polygon(_poly(cx, cy, r, [(-0.2, 0.45), (0.15, 0.95), (-0.55, 0.95)]), fill=col)
    elif key == "seal.n.02":  # the stamp: knob, neck, wide base
        d.ellipse((cx - r * 0.35, cy - r, cx + r * 0.35, cy - r * 0.35), fill=col)
        d.rectangle((cx - r * 0.18, cy - r * 0.45, cx + r * 0.18, cy + r * 0.3), fill=col)
        d.rectangle((cx - r * 0.9, cy + r * 0.3, cx + r * 0.9, cy + r * 0.85), fill=col)
    elif key == "kite.n.04":  # the bird: swept wings
        d.polygon(
            _poly(
                cx,
                cy,
                r,
                [
                    (-1, -0.1),
                    (-0.3, -0.35),
                    (0, -0.05),
                    (0.3, -0.35),
                    (1, -0.1),
                    (0.3, 0.0),
                    (0.15, 0.6),
                    (0, 0.35),
                    (-0.15, 0.6),
                    (-0.3, 0.0),
                ],
            ),
            fill=col,
        )
    elif key == "kite.n.03":  # the toy: a diamond with a zigzag tail
        d.polygon(_poly(cx, cy, r, [(0.2, -1), (0.75, -0.35), (0.2, 0.35), (-0.35, -0.35)]), fill=col)
        d.line(
            _poly(cx, cy, r, [(0.2, 0.35), (-0.1, 0.6), (0.1, 0.8), (-0.25, 1.0)]),
            fill=col,
            width=max(1, w // 2),
        )
    else:
        raise ValueError(f"cannot draw kind {o.kind!r} (sense {o.sense!r})")


def render(scene: Scene, image_size: int = 64, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Draw ``scene`` as an RGB Pillow image of ``image_size`` × ``image_size`` pixels."""
    img = Image.new("RGB", (image_size, image_size), background)
    d = ImageDraw.Draw(img)
    cell = image_size / GRID
    for o in scene.objects:
        r = SIZES[o.size][0] * image_size
        slack = max(0.0, cell / 2 - r - 1)
        cx = (o.col + 0.5) * cell + o.dx * slack
        cy = (o.row + 0.5) * cell + o.dy * slack
        _draw_object(d, o, cx, cy, r, background)
    return img


def render_array(
    scene: Scene, image_size: int = 64, background: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """:func:`render` as a ``uint8`` array of shape ``[H, W, 3]``."""
    return np.asarray(render(scene, image_size, background))


# --- logical forms ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NP:
    """A noun phrase: kind (None = any object), optional colour and size, definite or indefinite.

    ``sense`` records which sense of a polysemous kind the speaker means; it decides the Chinese word
    but not truth (English does not say it).
    """

    kind: str | None = None
    colour: str | None = None
    size: str | None = None
    definite: bool = False
    sense: str | None = None

    def matches(self, o: Obj) -> bool:
        return (
            (self.kind is None or self.kind == o.kind)
            and (self.colour is None or self.colour == o.colour)
            and (self.size is None or self.size == o.size)
        )


@dataclass(frozen=True)
class Exists:
    np: NP


@dataclass(frozen=True)
class Relation:
    a: NP
    rel: str
    b: NP


@dataclass(frozen=True)
class Count:
    n: int
    np: NP


@dataclass(frozen=True)
class Property:
    np: NP  # definite
    value: str  # a colour or a size
    negated: bool = False


@dataclass(frozen=True)
class And:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Respectively:
    a: NP
    b: NP
    value_a: str
    value_b: str


Form = Exists | Relation | Count | Property | And | Respectively


def _referents(np_: NP, scene: Scene) -> list[Obj]:
    """Objects ``np_`` can refer to; a definite NP refers only when exactly one object matches."""
    found = [o for o in scene.objects if np_.matches(o)]
    if np_.definite and len(found) != 1:
        return []
    return found


def _has_value(o: Obj, value: str) -> bool:
    return o.colour == value if value in COLOURS else o.size == value


def evaluate(form: Form, scene: Scene) -> bool:
    """Whether ``form`` is true of ``scene`` (definite NPs without a unique referent make it false)."""
    if isinstance(form, Exists):
        return bool(_referents(form.np, scene))
    if isinstance(form, Relation):
        return any(
            a is not b and relation_holds(form.rel, a, b)
            for a in _referents(form.a, scene)
            for b in _referents(form.b, scene)
        )
    if isinstance(form, Count):
        return sum(form.np.matches(o) for o in scene.objects) == form.n
    if isinstance(form, Property):
        refs = _referents(form.np, scene)
        return bool(refs) and (_has_value(refs[0], form.value) != form.negated)
    if isinstance(form, And):
        return all(evaluate(p, scene) for p in form.parts)
    if isinstance(form, Respectively):
        ra, rb = _referents(form.a, scene), _referents(form.b, scene)
        return (
            bool(ra)
            and bool(rb)
            and ra[0] is not rb[0]
            and _has_value(ra[0], form.value_a)
            and _has_value(rb[0], form.value_b)
        )
    raise TypeError(f"not a ShapesWorld form: {form!r}")


def is_true(caption: str | Form, scene: Scene) -> bool:
    """Truth of an English sentence of the grammar (or a form) in ``scene``; raises for non-grammar text."""
    form = parse_caption(caption) if isinstance(caption, str) else caption
    return evaluate(form, scene)


# --- English ----------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator | None, options: Sequence[str]) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _np_words(np_: NP, rng: np.random.Generator | None, plural: bool = False) -> list[str]:
    words = []
    if np_.size:
        words.append(_choice(rng, SIZE_SYNONYMS[np_.size]))
    if np_.colour:
        words.append(np_.colour)
    if np_.kind is None:
        generic = _choice(rng, tuple(GENERIC_NOUNS))
        words.append(GENERIC_NOUNS[generic] if plural else generic)
    else:
        words.append(kind_plural(np_.kind) if plural else np_.kind)
    return words


def english_np(np_: NP, rng: np.random.Generator | None = None) -> str:
    words = _np_words(np_, rng)
    if np_.definite:
        det = "the"
    else:
        det = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([det, *words])


def english(form: Form, rng: np.random.Generator | None = None) -> str:
    """English text of ``form``; ``rng`` picks among synonyms and templates (None: the first ones)."""
    if isinstance(form, Exists):
        np_text = english_np(form.np, rng)
        return _choice(rng, (np_text, f"there is {np_text}", f"there is {np_text} in the image"))
    if isinstance(form, Relation):
        a, b = english_np(form.a, rng), english_np(form.b, rng)
        phrase = _choice(rng, REL_PHRASES[form.rel])
        return _choice(rng, (f"{a} {phrase} {b}", f"{a} is {phrase} {b}", f"there is {a} {phrase} {b}"))
    if isinstance(form, Count):
        words = " ".join(_np_words(form.np, rng, plural=form.n != 1))
        if form.n == 1:
            return _choice(rng, (f"there is one {words}", f"exactly one {words}"))
        return _choice(rng, (f"there are {NUMBERS[form.n]} {words}", f"{NUMBERS[form.n]} {words}"))
    if isinstance(form, Property):
        value = _choice(rng, SIZE_SYNONYMS[form.value]) if form.value in SIZES else form.value
        return f"{english_np(form.np, rng)} is {'not ' if form.negated else ''}{value}"
    if isinstance(form, And):
        if all(isinstance(p, Exists) for p in form.parts):  # a list of things: "a, b and c"
            texts = [english_np(p.np, rng) for p in form.parts]
            prefix = _choice(rng, ("", "there is "))
        else:
            texts = [english(p, rng) for p in form.parts]
            prefix = ""
        return prefix + (texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1])
    if isinstance(form, Respectively):
        va, vb = (_choice(rng, SIZE_SYNONYMS[v]) if v in SIZES else v for v in (form.value_a, form.value_b))
        return f"{english_np(form.a, rng)} and {english_np(form.b, rng)} are {va} and {vb} respectively"
    raise TypeError(f"not a ShapesWorld form: {form!r}")


# --- Chinese ----------------------------------------------------------------------------------------


def _zh_noun(np_: NP) -> tuple[str, str]:
    """(Chinese noun, classifier) of ``np_``; a polysemous kind needs its sense."""
    if np_.kind is None:
        return "物体", "个"
    if np_.kind in SHAPES:
        return SHAPES[np_.kind][1], SHAPES[np_.kind][2]
    if np_.sense is None or np_.sense not in SENSES:
        raise ValueError(
            f"translating {np_.kind!r} needs its sense (one of "
            f"{', '.join(s.synset for s in POLYSEMOUS[np_.kind][1])})"
        )
    s = SENSES[np_.sense]
    return s.zh, s.classifier


def _zh_np(np_: NP, number: str = "一") -> str:
    noun, clf = _zh_noun(np_)
    mods = (COLOURS[np_.colour][1] + "的" if np_.colour else "") + (SIZES[np_.size][1] if np_.size else "")
    det = "那" if np_.definite else number
    return f"{det}{clf}{mods}{noun}"


def _zh_value(value: str) -> str:
    return (COLOURS[value][1] if value in COLOURS else SIZES[value][1]) + "的"


def chinese(form: Form) -> str:
    """Chinese translation of ``form`` (polysemous nouns follow ``NP.sense``)."""
    if isinstance(form, Exists):
        return _zh_np(form.np) if form.np.definite else "有" + _zh_np(form.np)
    if isinstance(form, Relation):
        return f"{_zh_np(form.a)}在{_zh_np(form.b)}的{REL_ZH[form.rel]}"
    if isinstance(form, Count):
        return "有" + _zh_np(form.np, NUMBERS_ZH[form.n])
    if isinstance(form, Property):
        return f"{_zh_np(form.np)}{'不是' if form.negated else '是'}{_zh_value(form.value)}"
    if isinstance(form, And):
        texts = [chinese(p) for p in form.parts]
        if all(isinstance(p, Exists) for p in form.parts):
            return (
                "有"
                + "、".join(t.removeprefix("有") for t in texts[:-1])
                + "和"
                + texts[-1].removeprefix("有")
            )
        return "，".join(texts[:-1]) + "，并且" + texts[-1]
    if isinstance(form, Respectively):
        return f"{_zh_np(form.a)}和{_zh_np(form.b)}分别是{_zh_value(form.value_a)}和{_zh_value(form.value_b)}"
    raise TypeError(f"not a ShapesWorld form: {form!r}")


def noun_phrases(form: Form) -> list[NP]:
    """Every NP of ``form``, in order."""
    if isinstance(form, (Exists, Count, Property)):
        return [form.np]
    if isinstance(form, (Relation, Respectively)):
        return [form.a, form.b]
    if isinstance(form, And):
        return [np_ for p in form.parts for np_ in noun_phrases(p)]
    raise TypeError(f"not a ShapesWorld form: {form!r}")


# --- parsing ----------------------------------------------------------------------------------------


class GrammarError(DataError):
    """A sentence is not in the ShapesWorld grammar."""


_SIZE_WORDS = {w: s for s, ws in SIZE_SYNONYMS.items() for w in ws}
_NOUNS = {**{k: k for k in (*SHAPES, *POLYSEMOUS)}, **{kind_plural(k): k for k in (*SHAPES, *POLYSEMOUS)}}
_GENERIC = {**{g: None for g in GENERIC_NOUNS}, **{p: None for p in GENERIC_NOUNS.values()}}
_PLURALS = {kind_plural(k) for k in (*SHAPES, *POLYSEMOUS)} | set(GENERIC_NOUNS.values())
_REL_WORDS = sorted(
    ((tuple(p.split()), rel) for rel, ps in REL_PHRASES.items() for p in ps), key=lambda x: -len(x[0])
)


def tokenize(text: str) -> list[str]:
    return text.lower().replace(",", " ").replace(".", " ").split()


def _parse_np(toks: list[str], i: int, *, article: bool = True) -> tuple[NP, int, bool] | None:
    """Parse ``[det] [size] [colour] noun`` at ``i``; returns (NP, next index, plural) or None."""
    definite = False
    if article:
        if i < len(toks) and toks[i] in ("a", "an"):
            i += 1
        elif i < len(toks) and toks[i] == "the":
            definite = True
            i += 1
        else:
            return None
    size = colour = None
    if i < len(toks) and toks[i] in _SIZE_WORDS:
        size = _SIZE_WORDS[toks[i]]
        i += 1
    if i < len(toks) and toks[i] in COLOURS:
        colour = toks[i]
        i += 1
    if i >= len(toks):
        return None
    w = toks[i]
    if w in _NOUNS:
        kind = _NOUNS[w]
    elif w in _GENERIC:
        kind = None
    else:
        return None
    return NP(kind, colour, size, definite), i + 1, w in _PLURALS


def _parse_value(toks: list[str], i: int) -> tuple[str, int] | None:
    if i < len(toks) and toks[i] in COLOURS:
        return toks[i], i + 1
    if i < len(toks) and toks[i] in _SIZE_WORDS:
        return _SIZE_WORDS[toks[i]], i + 1
    return None


def _parse_clause(toks: list[str]) -> Form | None:
    """One clause (no top-level conjunction of clauses)."""
    n = len(toks)
    # Respectively: the A and the B are X and Y respectively
    if n and toks[-1] == "respectively":
        a = _parse_np(toks, 0)
        if a and a[1] < n and toks[a[1]] == "and":
            b = _parse_np(toks, a[1] + 1)
            if b and b[1] < n and toks[b[1]] == "are":
                va = _parse_value(toks, b[1] + 1)
                if va and va[1] < n and toks[va[1]] == "and":
                    vb = _parse_value(toks, va[1] + 1)
                    if vb and vb[1] == n - 1 and a[0].definite and b[0].definite and not (a[2] or b[2]):
                        return Respectively(a[0], b[0], va[0], vb[0])
        return None
    # Property: the NP is [not] VALUE
    np_ = _parse_np(toks, 0)
    if np_ and np_[0].definite and not np_[2] and np_[1] < n and toks[np_[1]] == "is":
        j = np_[1] + 1
        negated = j < n and toks[j] == "not"
        j += negated
        v = _parse_value(toks, j)
        if v and v[1] == n:
            return Property(np_[0], v[0], negated)
    # Count: there are NUM ..., there is one ..., exactly one ..., NUM ...
    i = 0
    if toks[:2] in (["there", "are"], ["there", "is"]):
        i = 2
    elif toks[:1] == ["exactly"]:
        i = 1
    if i < n and toks[i] in NUMBERS:  # "zero" too: english() writes Count(0, ...) as "there are zero ..."
        num = NUMBERS.index(toks[i])
        c = _parse_np(toks, i + 1, article=False)
        if c and c[1] == n and c[2] == (num != 1):
            return Count(num, c[0])
    # Relation or existence, with optional "there is" and "is"
    i = 2 if toks[:2] == ["there", "is"] else 0
    a = _parse_np(toks, i)
    if a is None or a[2]:
        return None
    j = a[1]
    if j == n:
        return Exists(a[0])
    if toks[j:] == ["in", "the", "image"] and i == 2:
        return Exists(a[0])
    has_is = toks[j] == "is" and i == 0
    j += has_is
    for words, rel in _REL_WORDS:
        if tuple(toks[j : j + len(words)]) == words:
            b = _parse_np(toks, j + len(words))
            if b and b[1] == n and not b[2]:
                return Relation(a[0], rel, b[0])
    return None


def parse_caption(text: str) -> Form:
    """Parse an English sentence of the ShapesWorld grammar into its logical form.

    Raises :class:`GrammarError` for a sentence outside the grammar (e.g. shuffled words).
    """
    toks = tokenize(text)
    if not toks:
        raise GrammarError("empty sentence", fix="give a ShapesWorld caption")
    form = _parse_clause(toks)
    if form is not None:
        return form
    # Conjunctions: split at each "and" and parse both sides (lists of NPs or of properties).
    for k, w in enumerate(toks):
        if w != "and" or k == 0:
            continue
        left, right = toks[:k], toks[k + 1 :]
        rf = _parse_clause(right)
        if rf is None:
            continue
        lf = _parse_list(left)
        if lf is not None and all(type(p) is type(rf) for p in lf) and isinstance(rf, (Exists, Property)):
            return And((*lf, rf))
    raise GrammarError(f"not a ShapesWorld sentence: {text!r}", fix="use the grammar of alignlab.data.shapes")


def _parse_list(toks: list[str]) -> list[Form] | None:
    """A comma-less sequence of clauses: NP NP ... (existence) or a single property clause."""
    whole = _parse_clause(toks)
    if isinstance(whole, Property):
        return [whole]
    out: list[Form] = []
    i = 2 if toks[:2] == ["there", "is"] else 0
    while i < len(toks):
        np_ = _parse_np(toks, i)
        if np_ is None or np_[2]:
            return None
        out.append(Exists(np_[0]))
        i = np_[1]
    return out or None


# --- caption generation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caption:
    form: Any
    en: str
    zh: str
    family: str

    def sense_words(self) -> list[tuple[str, str, str]]:
        """(English noun, WordNet synset, Chinese word) of each polysemous noun in the caption."""
        return [
            (np_.kind, np_.sense, SENSES[np_.sense].zh)
            for np_ in noun_phrases(self.form)
            if np_.kind in POLYSEMOUS and np_.sense
        ]


def _describe(o: Obj, rng: np.random.Generator, definite: bool = False, full: bool = False) -> NP:
    """An NP describing ``o`` with a random subset of its attributes (all of them when ``full``)."""
    if full:
        use_size, use_colour = True, True
    else:
        pattern = int(rng.integers(4))  # kind only / colour / size / both
        use_colour, use_size = pattern in (1, 3), pattern in (2, 3)
    return NP(o.kind, o.colour if use_colour else None, o.size if use_size else None, definite, o.sense)


def _unique_description(o: Obj, scene: Scene, rng: np.random.Generator, drop: str | None = None) -> NP | None:
    """A definite NP that picks out ``o`` alone (not using attribute ``drop``), or None."""
    candidates = [NP(o.kind, None, None, True, o.sense)]
    if drop != "size":
        candidates.append(NP(o.kind, None, o.size, True, o.sense))
    if drop != "colour":
        candidates.append(NP(o.kind, o.colour, None, True, o.sense))
    if drop is None:
        candidates.append(NP(o.kind, o.colour, o.size, True, o.sense))
    unique = [c for c in candidates if sum(c.matches(x) for x in scene.objects) == 1]
    if not unique:
        return None
    # Prefer the shortest description most of the time, as people do.
    return unique[0] if rng.random() < 0.7 else unique[int(rng.integers(len(unique)))]


def _caption_form(family: str, scene: Scene, rng: np.random.Generator, cfg: ShapesConfig) -> Form | None:
    objs = scene.objects
    if family == "exists":
        return Exists(_describe(objs[int(rng.integers(len(objs)))], rng))
    if family == "relation":
        if len(objs) < 2:
            return None
        i, j = (int(x) for x in rng.choice(len(objs), size=2, replace=False))
        rels = [r for r in RELATIONS if relation_holds(r, objs[i], objs[j])]
        if not rels:
            return None
        return Relation(_describe(objs[i], rng), rels[int(rng.integers(len(rels)))], _describe(objs[j], rng))
    if family == "count":
        o = objs[int(rng.integers(len(objs)))]
        options = [
            NP(None),
            NP(None, o.colour),
            NP(o.kind, None, None, False, o.sense),
            NP(o.kind, o.colour, None, False, o.sense),
        ]
        np_ = options[int(rng.integers(len(options)))]
        matched = [x for x in objs if np_.matches(x)]
        if np_.kind in POLYSEMOUS and len({x.sense for x in matched}) > 1:
            return None  # "two bats", one an animal and one a club, has no single Chinese noun
        return Count(len(matched), np_)
    if family in ("property", "negation"):
        o = objs[int(rng.integers(len(objs)))]
        attr = "colour" if rng.random() < 0.7 else "size"
        np_ = _unique_description(o, scene, rng, drop=attr)
        if np_ is None:
            return None
        value = o.colour if attr == "colour" else o.size
        if family == "negation":
            others = (
                [c for c in cfg.colours if c != o.colour]
                if attr == "colour"
                else [s for s in SIZES if s != o.size]
            )
            return Property(np_, others[int(rng.integers(len(others)))], negated=True)
        return Property(np_, value)
    if family == "list":
        if len(objs) < 2:
            return None
        order = rng.permutation(len(objs))
        return And(tuple(Exists(_describe(objs[int(k)], rng, full=rng.random() < 0.5)) for k in order))
    if family == "respectively":
        if len(objs) < 2:
            return None
        i, j = (int(x) for x in rng.choice(len(objs), size=2, replace=False))
        a = _unique_description(objs[i], scene, rng, drop="colour")
        b = _unique_description(objs[j], scene, rng, drop="colour")
        if a is None or b is None:
            return None
        return Respectively(a, b, objs[i].colour, objs[j].colour)
    raise ValueError(f"unknown caption family {family!r}")


def _family_weights(cfg: ShapesConfig) -> dict[str, float]:
    return {
        "exists": 1.0,
        "relation": 1.6,
        "count": 0.6,
        "property": 0.8,
        "list": 0.7,
        "respectively": 0.3,
        "negation": cfg.negation_rate,
    }


def generate_captions(scene: Scene, rng: np.random.Generator, cfg: ShapesConfig) -> list[Caption]:
    """``cfg.captions_per_image`` distinct true captions of ``scene`` from varied templates."""
    weights = {k: v for k, v in _family_weights(cfg).items() if v > 0}
    names = list(weights)
    p = np.array([weights[k] for k in names])
    p /= p.sum()
    seen: set[Any] = set()  # English texts and forms already used: no two captions say the same thing
    out: list[Caption] = []
    attempts = 0
    while len(out) < cfg.captions_per_image:
        attempts += 1
        if attempts > 400:
            # A user's setting, not a bug: a one-object scene has only about a dozen distinct true captions.
            raise ConfigError(
                f"could not make {cfg.captions_per_image} distinct captions for a scene of "
                f"{len(scene.objects)} object(s)",
                fix="lower captions_per_image or raise min_objects",
            )
        family = names[int(rng.choice(len(names), p=p))]
        form = _caption_form(family, scene, rng, cfg)
        if form is None:
            continue
        en = english(form, rng)
        if en in seen or form in seen:
            continue
        seen.update((en, form))
        out.append(Caption(form, en, chinese(form), family))
    return out


# --- the data set -----------------------------------------------------------------------------------

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass
class ShapesExample:
    image_id: str
    split: str
    scene: Scene
    image: np.ndarray  # uint8 [H, W, 3]
    captions: list[Caption] = field(default_factory=list)


class ShapesWorld:
    """The generator: ``example(seed, split, index)`` is a pure function of its arguments."""

    def __init__(self, config: ShapesConfig | None = None):
        self.config = config or ShapesConfig()

    def rng(self, seed: int, split: str, index: int) -> np.random.Generator:
        code = SPLIT_CODES.get(split)
        if code is None:
            raise DataError(f"unknown split {split!r}", fix="use train, val or test")
        return np.random.default_rng([int(seed), code, int(index)])

    def example(self, seed: int, split: str, index: int) -> ShapesExample:
        rng = self.rng(seed, split, index)
        scene = sample_scene(rng, self.config)
        captions = generate_captions(scene, rng, self.config)
        image = render_array(scene, self.config.image_size, self.config.background)
        return ShapesExample(f"{split}_{index:06d}", split, scene, image, captions)

    def iter_split(self, n: int, seed: int, split: str) -> Iterator[ShapesExample]:
        for i in range(n):
            yield self.example(seed, split, i)

    def generate(
        self, n: int, seed: int, split: str = "train", desc: str | None = None
    ) -> list[ShapesExample]:
        """``n`` examples of ``split``; with ``config.discriminative`` a gallery of unique captions.

        Discriminative galleries (:func:`discriminative_gallery`) depend on the whole gallery: an image
        whose scene admits no caption unique within it is redrawn, so they differ from ``iter_split``.
        """
        from alignlab.core.progress import progress

        examples = list(
            progress(
                self.iter_split(n, seed, split), total=n, desc=desc or f"ShapesWorld {split}", unit="img"
            )
        )
        if self.config.discriminative:
            examples = discriminative_gallery(self, examples, seed)
        return examples


def generate_splits(
    config: ShapesConfig | None = None, seed: int = 0, **sizes: int
) -> dict[str, list[ShapesExample]]:
    """``generate_splits(train=1000, val=200)`` -> {"train": [...], "val": [...]}."""
    world = ShapesWorld(config)
    return {split: world.generate(n, seed, split) for split, n in sizes.items() if n > 0}


def form_to_dict(form: Form) -> dict[str, Any]:
    """A JSON-ready description of a form (``{"type": "Relation", ...}``)."""
    d: dict[str, Any] = {"type": type(form).__name__}
    for k, v in form.__dict__.items():
        if isinstance(v, NP):
            d[k] = asdict(v)
        elif isinstance(v, tuple):
            d[k] = [form_to_dict(p) for p in v]
        else:
            d[k] = v
    return d


def form_from_dict(d: dict[str, Any]) -> Form:
    types_ = {
        "Exists": Exists,
        "Relation": Relation,
        "Count": Count,
        "Property": Property,
        "And": And,
        "Respectively": Respectively,
    }
    kind = types_[d["type"]]
    kwargs = {}
    for k, v in d.items():
        if k == "type":
            continue
        if isinstance(v, dict):
            kwargs[k] = NP(**v)
        elif isinstance(v, list):
            kwargs[k] = tuple(form_from_dict(p) for p in v)
        else:
            kwargs[k] = v
    return kind(**kwargs)


# --- truth of many captions in many scenes at once ----------------------------------------------------
#
# Relevance on ShapesWorld is truth: a caption is relevant to every image it is true of. Calling
# :func:`evaluate` for every (caption, image) pair of the 5K test set is 25,000 x 5,000 Python calls
# (minutes). :class:`SceneTable` holds the scenes as padded attribute arrays, and :func:`truth_matrix`
# evaluates one *distinct meaning* at a time over every scene with NumPy: captions that mean the same
# (same form, synonyms and the translation-only ``sense`` aside) share one truth row, and noun phrases
# are matched once per table.

_KIND_CODE = {k: i for i, k in enumerate(all_kinds())}
_COLOUR_CODE = {c: i for i, c in enumerate(COLOURS)}
_SIZE_CODE = {s: i for i, s in enumerate(SIZES)}


def meaning(form: Form) -> Form:
    """``form`` with the sense of every noun phrase removed: forms with one meaning compare equal.

    (The sense picks the Chinese word, never the truth; see :class:`NP`.)
    """
    if isinstance(form, NP):
        return NP(form.kind, form.colour, form.size, form.definite) if form.sense is not None else form
    if isinstance(form, Exists):
        return Exists(meaning(form.np))
    if isinstance(form, Relation):
        return Relation(meaning(form.a), form.rel, meaning(form.b))
    if isinstance(form, Count):
        return Count(form.n, meaning(form.np))
    if isinstance(form, Property):
        return Property(meaning(form.np), form.value, form.negated)
    if isinstance(form, And):
        return And(tuple(meaning(p) for p in form.parts))
    if isinstance(form, Respectively):
        return Respectively(meaning(form.a), meaning(form.b), form.value_a, form.value_b)
    raise TypeError(f"not a ShapesWorld form: {form!r}")


class SceneTable:
    """Scenes as arrays ``[S, K]`` (K = most objects in a scene; padding is marked invalid).

    ``truth(form)`` is :func:`evaluate` of one form in every scene at once (a bool vector ``[S]``).
    """

    def __init__(self, scenes: Sequence[Scene]):
        self.n = len(scenes)
        k = max((len(s.objects) for s in scenes), default=1) or 1
        self.valid = np.zeros((self.n, k), dtype=bool)
        self.kind = np.full((self.n, k), -1, dtype=np.int16)
        self.colour = np.full((self.n, k), -1, dtype=np.int16)
        self.size = np.full((self.n, k), -1, dtype=np.int16)
        self.row = np.zeros((self.n, k), dtype=np.int16)
        self.col = np.zeros((self.n, k), dtype=np.int16)
        for s, scene in enumerate(scenes):
            for j, o in enumerate(scene.objects):
                self.valid[s, j] = True
                self.kind[s, j] = _KIND_CODE.get(o.kind, -2)
                self.colour[s, j] = _COLOUR_CODE.get(o.colour, -2)
                self.size[s, j] = _SIZE_CODE.get(o.size, -2)
                self.row[s, j], self.col[s, j] = o.row, o.col
        self._np_cache: dict[NP, np.ndarray] = {}
        self._rel_cache: dict[str, np.ndarray] = {}

    def take(self, rows: Sequence[int] | np.ndarray) -> SceneTable:
        """The table of scenes ``rows`` (in that order; repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = object.__new__(SceneTable)
        out.n = len(rows)
        for name in ("valid", "kind", "colour", "size", "row", "col"):
            setattr(out, name, getattr(self, name)[rows])
        out._np_cache, out._rel_cache = {}, {}
        return out

    def _matches(self, np_: NP) -> np.ndarray:
        """``[S, K]``: objects ``np_`` describes (kind, colour and size; not definiteness)."""
        key = NP(np_.kind, np_.colour, np_.size)
        got = self._np_cache.get(key)
        if got is None:
            got = self.valid.copy()
            for value, codes, table in (
                (np_.kind, _KIND_CODE, self.kind),
                (np_.colour, _COLOUR_CODE, self.colour),
                (np_.size, _SIZE_CODE, self.size),
            ):
                if value is not None:
                    got &= table == codes.get(value, -3)  # an unknown word matches nothing
            self._np_cache[key] = got
        return got

    def _referents(self, np_: NP) -> np.ndarray:
        m = self._matches(np_)
        if np_.definite:  # a definite NP refers only when exactly one object matches
            m = m & (m.sum(axis=1) == 1)[:, None]
        return m

    def _relation(self, rel: str) -> np.ndarray:
        """``[S, K, K]``: ``rel(a, b)`` for every ordered pair of object slots."""
        got = self._rel_cache.get(rel)
        if got is None:
            if rel in ("left_of", "right_of"):
                a, b = self.col[:, :, None], self.col[:, None, :]
            elif rel in ("above", "below"):
                a, b = self.row[:, :, None], self.row[:, None, :]
            else:
                raise ValueError(f"unknown relation {rel!r}")
            got = (a < b) if rel in ("left_of", "above") else (a > b)
            self._rel_cache[rel] = got
        return got

    def _value(self, refs: np.ndarray, value: str) -> tuple[np.ndarray, np.ndarray]:
        """(has a referent, the first referent has ``value``), as :func:`evaluate` reads ``refs[0]``."""
        first = refs.argmax(axis=1)
        table = self.colour if value in COLOURS else self.size
        code = _COLOUR_CODE.get(value, -3) if value in COLOURS else _SIZE_CODE.get(value, -3)
        return refs.any(axis=1), table[np.arange(self.n), first] == code

    def truth(self, form: Form) -> np.ndarray:
        """``[S]`` bool: whether ``form`` is true of each scene (exactly :func:`evaluate`)."""
        if isinstance(form, Exists):
            return self._referents(form.np).any(axis=1)
        if isinstance(form, Relation):
            a, b = self._referents(form.a), self._referents(form.b)
            # The relations are strict, so a pair that satisfies one is two different objects.
            return (a[:, :, None] & b[:, None, :] & self._relation(form.rel)).any(axis=(1, 2))
        if isinstance(form, Count):
            return self._matches(form.np).sum(axis=1) == form.n
        if isinstance(form, Property):
            found, has = self._value(self._referents(form.np), form.value)
            return found & (has != form.negated)
        if isinstance(form, And):
            out = np.ones(self.n, dtype=bool)
            for p in form.parts:
                out &= self.truth(p)
            return out
        if isinstance(form, Respectively):
            ra, rb = self._referents(form.a), self._referents(form.b)
            found_a, has_a = self._value(ra, form.value_a)
            found_b, has_b = self._value(rb, form.value_b)
            return found_a & found_b & (ra.argmax(axis=1) != rb.argmax(axis=1)) & has_a & has_b
        raise TypeError(f"not a ShapesWorld form: {form!r}")


def group_meanings(forms: Sequence[Form]) -> tuple[list[Form], np.ndarray]:
    """The distinct meanings of ``forms`` (first-seen order) and each form's index among them."""
    index: dict[Form, int] = {}
    inverse = np.empty(len(forms), dtype=np.int64)
    for c, form in enumerate(forms):
        inverse[c] = index.setdefault(meaning(form), len(index))
    return list(index), inverse


def truth_matrix(forms: Sequence[Form], scenes: Sequence[Scene] | SceneTable) -> np.ndarray:
    """``[len(forms), len(scenes)]`` bool: ``evaluate(forms[f], scenes[s])`` for every pair.

    Each distinct meaning is evaluated once over all scenes at once (see :class:`SceneTable`).
    """
    table = scenes if isinstance(scenes, SceneTable) else SceneTable(scenes)
    distinct, inverse = group_meanings(forms)
    rows = np.stack([table.truth(f) for f in distinct]) if distinct else np.zeros((0, table.n), dtype=bool)
    return rows[inverse]


def truth_relevance(
    forms: Sequence[Form],
    scenes: Sequence[Scene] | SceneTable,
    own: Sequence[Sequence[int]] | None = None,
    chunk: int = 512,
) -> list[list[int]]:
    """``relevance[i]`` = every caption (index into ``forms``) true of ``scenes[i]``.

    ``own[i]`` (optional) lists the captions written for image ``i``: they come first in its row, in
    their order, and must be true of it (:class:`DataError` otherwise); the other true captions follow
    in id order. Distinct meanings are evaluated once each, over all scenes at once.
    """
    table = scenes if isinstance(scenes, SceneTable) else SceneTable(scenes)
    distinct, inverse = group_meanings(forms)
    truth = (
        np.stack([table.truth(f) for f in distinct]) if distinct else np.zeros((0, table.n), dtype=bool)
    ).T.copy()  # [S, U]
    out: list[list[int]] = []
    for a in range(0, table.n, chunk):
        block = truth[a : a + chunk][:, inverse]  # [b, C]: caption c true of scene a + r
        mine: list[list[int]] = [[] for _ in range(len(block))]
        if own is not None:
            mine = [[int(c) for c in own[a + r]] for r in range(len(block))]
            rows = np.repeat(np.arange(len(block)), [len(m) for m in mine])
            cols = np.fromiter((c for m in mine for c in m), dtype=np.int64, count=len(rows))
            false = np.flatnonzero(~block[rows, cols])
            if len(false):
                i, c = a + int(rows[false[0]]), int(cols[false[0]])
                raise DataError(
                    f"caption {c} of image {i} is false of its own scene",
                    where=f"image {i}",
                    fix="regenerate the data (captions must be true of their image)",
                )
            block[rows, cols] = False  # listed first, not twice
        r_idx, c_idx = np.nonzero(block)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(r_idx, minlength=len(block)))])
        c_list = c_idx.tolist()
        out.extend(mine[r] + c_list[ptr[r] : ptr[r + 1]] for r in range(len(block)))
    return out


# --- discriminative captions: unique to their image within a gallery -----------------------------------

_DISCRIMINATIVE_STREAM = 0xD15C  # mixed into the redraw seeds so they share no stream with iter_split


def _full(o: Obj) -> NP:
    return NP(o.kind, o.colour, o.size, False, o.sense)


def description_forms(scene: Scene) -> list[tuple[Form, str]]:
    """Specific true forms of ``scene``: the full scene description and one full-NP relation per pair.

    The scene description lists every object with all its attributes ("a large red circle, a small
    blue square and a big green star"); a relation names both objects in full (for each pair of
    objects, the first relation of :data:`RELATIONS` that holds between them).
    """
    objs = scene.objects
    out: list[tuple[Form, str]] = [
        (And(tuple(Exists(_full(o)) for o in objs)) if len(objs) > 1 else Exists(_full(objs[0])), "scene")
    ]
    for i, a in enumerate(objs):
        for b in objs[i + 1 :]:
            rel = next(r for r in RELATIONS if relation_holds(r, a, b))  # distinct cells: one always holds
            out.append((Relation(_full(a), rel, _full(b)), "relation"))
    return out


def discriminative_gallery(
    world: ShapesWorld, examples: list[ShapesExample], seed: int, max_rounds: int = 60
) -> list[ShapesExample]:
    """``examples`` with captions that are true of their own image and of no other image of the gallery.

    Candidates per image: its generated captions, its full scene description and its full-NP relations
    (:func:`description_forms`). A candidate is kept when the truth evaluator finds it true of exactly
    one scene of the gallery (its own); each image keeps up to ``captions_per_image`` of them (at least
    one). A scene with no such caption (e.g. one object that another scene also holds) is redrawn from a
    seeded stream of its own and every count is updated, until every image has one (:class:`DataError`
    after ``max_rounds``). A redrawn scene has at least two objects when ``max_objects`` allows: a lone
    object is seldom unique in a large gallery. Seeded: the same gallery for the same seed, size and config.
    """
    cfg = world.config
    redraw_cfg = replace(cfg, min_objects=max(cfg.min_objects, min(2, cfg.max_objects)))
    n = len(examples)
    if n == 0:
        return examples
    split = examples[0].split
    scenes = [ex.scene for ex in examples]
    base = [list(ex.captions) for ex in examples]

    def candidates(i: int) -> list[tuple[Form, str]]:
        return [(c.form, c.family) for c in base[i]] + description_forms(scenes[i])

    cands = [candidates(i) for i in range(n)]
    meanings: dict[Form, int] = {}  # meaning -> row of `counts`
    counts = np.zeros(0, dtype=np.int64)  # how many scenes of the gallery each meaning is true of

    def register(forms: list[Form], table: SceneTable) -> None:
        nonlocal counts
        new = [m for m in dict.fromkeys(meaning(f) for f in forms) if m not in meanings]
        if new:
            for m in new:
                meanings[m] = len(meanings)
            counts = np.concatenate([counts, np.stack([table.truth(m) for m in new]).sum(axis=1)])

    table = SceneTable(scenes)
    register([f for cs in cands for f, _ in cs], table)
    for round_ in range(max_rounds + 1):
        unique = [[k for k, (f, _) in enumerate(cs) if counts[meanings[meaning(f)]] == 1] for cs in cands]
        failing = [i for i, u in enumerate(unique) if not u]
        if not failing:
            break
        if round_ == max_rounds:
            raise DataError(
                f"{len(failing)} image(s) have no caption unique in a gallery of {n}",
                where=f"ShapesWorld {split}, seed {seed}",
                fix="use a smaller gallery or more objects per scene (min_objects)",
            )
        old = SceneTable([scenes[i] for i in failing])
        known = list(meanings)
        counts[: len(known)] -= np.stack([old.truth(m) for m in known]).sum(axis=1)
        for i in failing:
            rng = np.random.default_rng(
                [int(seed), SPLIT_CODES[split], i, round_ + 1, _DISCRIMINATIVE_STREAM]
            )
            scenes[i] = sample_scene(rng, redraw_cfg)
            base[i] = generate_captions(scenes[i], rng, cfg)
            cands[i] = candidates(i)
        fresh = SceneTable([scenes[i] for i in failing])
        counts[: len(known)] += np.stack([fresh.truth(m) for m in known]).sum(axis=1)
        register([f for i in failing for f, _ in cands[i]], SceneTable(scenes))
    out = []
    for i, ex in enumerate(examples):
        rng = np.random.default_rng([int(seed), SPLIT_CODES[split], i, _DISCRIMINATIVE_STREAM])
        picked: list[Caption] = []
        seen: set[Form] = set()
        for k in rng.permutation(unique[i]):
            form, family = cands[i][int(k)]
            if meaning(form) in seen:
                continue
            seen.add(meaning(form))
            picked.append(Caption(form, english(form, rng), chinese(form), family))
            if len(picked) == cfg.captions_per_image:
                break
        image = ex.image if scenes[i] is ex.scene else render_array(scenes[i], cfg.image_size, cfg.background)
        out.append(ShapesExample(ex.image_id, ex.split, scenes[i], image, picked))
    return out

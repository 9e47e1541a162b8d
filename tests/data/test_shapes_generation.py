"""ShapesWorld generation: determinism, caption variety, image size, rendering and counterfactual scenes."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from alignlab.data.shapes import (
    COLOURS,
    GENERATOR_VERSION,
    GRID,
    NP,
    POLYSEMOUS,
    SENSES,
    SHAPES,
    Obj,
    Relation,
    Scene,
    ShapesConfig,
    ShapesWorld,
    evaluate,
    generate_splits,
    mirror,
    near_duplicate,
    relation_holds,
    render_array,
    swap_colours,
    swap_positions,
)


def _fingerprint(examples) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.image_id.encode())
        h.update(ex.image.tobytes())
        h.update(repr(ex.scene).encode())
        for c in ex.captions:
            h.update(f"{c.en}|{c.zh}|{c.family}|{c.form!r}".encode())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_images_and_captions():
    cfg = ShapesConfig(polysemous_rate=0.3)
    a = ShapesWorld(cfg).generate(40, seed=5, split="train")
    b = ShapesWorld(ShapesConfig(polysemous_rate=0.3)).generate(40, seed=5, split="train")
    assert _fingerprint(a) == _fingerprint(b)
    assert all(x.image.dtype == np.uint8 and x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b))


def test_different_seeds_and_splits_give_different_data():
    world = ShapesWorld()
    base = world.generate(20, seed=0, split="train")
    for other in (world.generate(20, seed=1, split="train"), world.generate(20, seed=0, split="test")):
        same = sum(x.image.tobytes() == y.image.tobytes() for x, y in zip(base, other))
        assert same <= 2  # a one-object scene can repeat by chance, whole sets do not
        assert _fingerprint(base) != _fingerprint(other)


def test_an_example_depends_only_on_seed_split_and_index():
    world = ShapesWorld()
    listed = world.generate(8, seed=3, split="val")
    alone = world.example(3, "val", 6)
    assert alone.image_id == "val_000006" == listed[6].image_id
    assert alone.image.tobytes() == listed[6].image.tobytes() and alone.captions == listed[6].captions
    splits = generate_splits(seed=3, val=8, test=0)
    assert list(splits) == ["val"] and _fingerprint(splits["val"]) == _fingerprint(listed)


def test_unknown_split_is_a_data_error():
    from alignlab.core.errors import DataError

    with pytest.raises(DataError, match="unknown split 'dev'"):
        ShapesWorld().example(0, "dev", 0)


def test_every_image_has_at_least_five_distinct_captions_from_several_families():
    examples = ShapesWorld().generate(200, seed=0)
    families = Counter()
    for ex in examples:
        texts = [c.en for c in ex.captions]
        assert len(texts) >= 5 and len(set(texts)) == len(texts)
        assert len({c.form for c in ex.captions}) == len(texts)
        families.update(c.family for c in ex.captions)
    assert {"exists", "relation", "count", "property", "list", "respectively"} <= set(families)
    # Several templates and synonyms: many distinct sentence openings and relation phrases.
    words = Counter(w for ex in examples for c in ex.captions for w in c.en.split())
    for synonym in ("big", "large", "little", "small", "over", "above", "under", "beneath", "left", "right"):
        assert words[synonym] > 0, synonym


def test_captions_per_image_and_image_size_are_configurable():
    world = ShapesWorld(ShapesConfig(image_size=96, captions_per_image=7))
    ex = world.example(0, "train", 0)
    assert ex.image.shape == (96, 96, 3) and ex.image.dtype == np.uint8
    assert len(ex.captions) == 7
    assert ShapesWorld().example(0, "train", 0).image.shape == (64, 64, 3)


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_size=8),
        dict(max_objects=5),
        dict(min_objects=0),
        dict(min_objects=3, max_objects=2),
        dict(captions_per_image=0),
        dict(polysemous_rate=1.5),
        dict(shapes=("hexagon",)),
        dict(colours=("teal",)),
        dict(polysemous_kinds=("bank",)),
    ],
)
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        ShapesConfig(**bad)


def test_asking_for_more_distinct_captions_than_a_scene_has_is_a_config_error():
    from alignlab.core.errors import ConfigError

    world = ShapesWorld(ShapesConfig(min_objects=1, max_objects=1, captions_per_image=15))
    with pytest.raises(ConfigError, match="could not make 15 distinct captions for a scene of 1 object"):
        world.example(0, "train", 0)
    assert (
        len(ShapesWorld(ShapesConfig(max_objects=1, captions_per_image=10)).example(0, "train", 0).captions)
        == 10
    )


def test_scenes_respect_object_counts_distinct_cells_and_config_vocabulary():
    cfg = ShapesConfig(
        min_objects=2,
        max_objects=3,
        colours=("red", "blue"),
        shapes=("circle",),
        polysemous_rate=0.5,
        polysemous_kinds=("bat",),
    )
    for ex in ShapesWorld(cfg).generate(100, seed=2):
        objs = ex.scene.objects
        assert 2 <= len(objs) <= 3
        assert len({(o.row, o.col) for o in objs}) == len(objs)
        assert all(0 <= o.row < GRID and 0 <= o.col < GRID for o in objs)
        assert all(o.colour in ("red", "blue") and o.kind in ("circle", "bat") for o in objs)
        assert all((o.sense is None) == (o.kind == "circle") for o in objs)


def test_polysemous_objects_carry_a_sense_of_their_kind_and_both_senses_occur():
    examples = ShapesWorld(ShapesConfig(polysemous_rate=1.0)).generate(300, seed=0)
    seen = Counter()
    for ex in examples:
        for o in ex.scene.objects:
            assert o.kind in POLYSEMOUS and o.sense in {s.synset for s in POLYSEMOUS[o.kind][1]}
            seen[o.sense] += 1
    assert set(seen) == set(SENSES)


def test_rendering_draws_each_object_in_its_cell_with_its_colour():
    size = 90
    for k, kind in enumerate([*SHAPES, *SENSES]):
        colour = list(COLOURS)[k % len(COLOURS)]
        is_sense = kind in SENSES
        row, col = k % GRID, (k // GRID) % GRID
        obj = Obj(
            kind.split(".")[0] if is_sense else kind,
            colour,
            "large",
            row,
            col,
            sense=kind if is_sense else None,
        )
        img = render_array(Scene((obj,)), size)
        mask = (img == np.array(COLOURS[colour][0], np.uint8)).all(axis=2)
        ys, xs = np.nonzero(mask)
        assert mask.sum() > 20, kind  # drawn, in its own colour
        cell = size / GRID
        # The object's pixels lie in its own grid cell (a pixel of slack for anti-aliasing-free edges).
        assert ys.min() >= row * cell - 1 and ys.max() <= (row + 1) * cell + 1, kind
        assert xs.min() >= col * cell - 1 and xs.max() <= (col + 1) * cell + 1, kind
        assert ((img != 0).any(axis=2) <= mask).all()  # nothing else drawn on the black background


def test_the_two_senses_of_each_polysemous_kind_are_drawn_differently():
    for kind, (_, senses) in POLYSEMOUS.items():
        a, b = (render_array(Scene((Obj(kind, "white", "large", 1, 1, sense=s.synset),))) for s in senses)
        assert (a != b).any(axis=2).sum() > 30, kind


def test_large_objects_cover_more_pixels_than_small_ones():
    for kind in SHAPES:
        small, large = (
            render_array(Scene((Obj(kind, "red", s, 1, 1),))).any(axis=2).sum() for s in ("small", "large")
        )
        assert large > 1.5 * small, kind


# --- counterfactual scenes -----------------------------------------------------------------------------


def test_mirror_reverses_left_and_right_and_keeps_above_and_below():
    examples = ShapesWorld().generate(100, seed=4)
    for ex in examples:
        objs, mobjs = ex.scene.objects, mirror(ex.scene).objects
        for i, a in enumerate(objs):
            assert (mobjs[i].kind, mobjs[i].colour, mobjs[i].size, mobjs[i].row) == (
                a.kind,
                a.colour,
                a.size,
                a.row,
            )
            for j, b in enumerate(objs):
                assert relation_holds("left_of", a, b) == relation_holds("right_of", mobjs[i], mobjs[j])
                assert relation_holds("right_of", a, b) == relation_holds("left_of", mobjs[i], mobjs[j])
                assert relation_holds("above", a, b) == relation_holds("above", mobjs[i], mobjs[j])
        assert mirror(mirror(ex.scene)) == ex.scene


def test_mirror_of_symmetric_shapes_renders_as_the_flipped_image():
    scene = Scene(
        (
            Obj("circle", "red", "large", 0, 0, 0.3, 0.1),
            Obj("square", "blue", "small", 1, 2, -0.2, 0.4),
            Obj("circle", "green", "small", 2, 1, 0.45, -0.3),
        )
    )
    assert np.array_equal(render_array(mirror(scene)), render_array(scene)[:, ::-1])


def _attrs(o: Obj):
    return (o.kind, o.colour, o.size, o.sense)


def test_near_duplicate_changes_exactly_one_attribute_or_swaps_one_pair():
    world = ShapesWorld(ShapesConfig(polysemous_rate=0.3))
    rng = np.random.default_rng(0)
    kinds = Counter()
    for ex in world.generate(300, seed=1):
        scene = ex.scene
        dup = near_duplicate(scene, rng)
        assert dup != scene
        old, new = scene.objects, dup.objects
        assert len(old) == len(new)
        changed = [i for i in range(len(old)) if old[i] != new[i]]
        if len(changed) == 1:
            a, b = old[changed[0]], new[changed[0]]
            assert (a.row, a.col, a.dx, a.dy) == (b.row, b.col, b.dx, b.dy)
            diffs = [f for f in ("kind", "colour", "size") if getattr(a, f) != getattr(b, f)]
            assert len(diffs) == 1
            kinds[diffs[0]] += 1
            if diffs[0] == "kind":
                assert (b.sense is None) == (b.kind not in POLYSEMOUS)
        else:
            i, j = changed
            assert len(changed) == 2
            assert _attrs(new[i]) == _attrs(old[i]) and _attrs(new[j]) == _attrs(old[j])
            assert (new[i].row, new[i].col) == (old[j].row, old[j].col)
            assert (new[j].row, new[j].col) == (old[i].row, old[i].col)
            assert _attrs(old[i])[:3] != _attrs(old[j])[:3]  # a visible change
            kinds["swap"] += 1
    assert set(kinds) == {"kind", "colour", "size", "swap"}


def test_swap_colours_and_positions_change_only_what_they_say():
    scene = Scene((Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 2, 2)))
    sc = swap_colours(scene, 0, 1)
    assert [(o.kind, o.colour) for o in sc.objects] == [("circle", "blue"), ("square", "red")]
    sp = swap_positions(scene, 0, 1)
    assert [(o.kind, o.row, o.col) for o in sp.objects] == [("circle", 2, 2), ("square", 0, 0)]
    circle_left_of_square = Relation(NP("circle"), "left_of", NP("square"))
    assert evaluate(circle_left_of_square, scene) and not evaluate(circle_left_of_square, sp)


def test_generator_version_is_recorded():
    assert GENERATOR_VERSION.startswith("shapesworld-")

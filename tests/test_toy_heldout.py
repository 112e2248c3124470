"""The toy CLIP's held-out probe (issue 23 item 6's goal conditions): drawings beyond the trained
sizes (larger and smaller) and on backgrounds the pretraining never draws, and zero-shot accuracy
of shape, colour and place, each with the other two given."""

from __future__ import annotations

import numpy as np
import pytest

from cachekit.synth.vocab import BACKGROUNDS, POSITIONS, SHAPES, SIZES
from cachekit.toy.heldout import BEYOND, CONDITIONS, LARGEST, SIZE_BANDS, SMALLEST, factor_accuracy, probe_images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_probe_conditions_lie_beyond_training():
    larger, smaller, unseen = (c for name, c in CONDITIONS.items() if name != "trained sizes and backgrounds")
    assert larger.radius == (LARGEST, BEYOND * LARGEST) and smaller.radius == (SMALLEST / BEYOND, SMALLEST)
    assert BEYOND >= 1.5 and LARGEST == max(hi for _, hi in SIZES.values())
    assert not set(unseen.backgrounds) & set(BACKGROUNDS)
    trained = CONDITIONS["trained sizes and backgrounds"]
    imgs, objs, owners = probe_images(larger, 5, 64, 112)
    again = probe_images(larger, 5, 64, 112)
    assert imgs.shape == (64, 112, 112, 3) and np.array_equal(again[0], imgs)  # seeded
    assert [o.shape for o in objs[:8]] == list(SHAPES) * 2 and {o.position for o in objs} <= set(POSITIONS)
    # the drawn objects are larger / smaller than trained ones: the area they cover says so
    area = {name: (lambda o: ((o[2] == 0).sum((1, 2)), [x.shape for x in o[1]]))(probe_images(c, 5, 64, 112))
            for name, c in (("larger", larger), ("smaller", smaller), ("trained", trained))}
    for shape in SHAPES:
        med = {k: np.median([a for a, s in zip(*v) if s == shape]) for k, v in area.items()}
        assert med["smaller"] < med["trained"] < med["larger"], (shape, med)
        assert med["larger"] > 1.5 ** 2 * np.median([a for a, s in zip(*area["smaller"]) if s == shape]), (shape, med)


def test_the_size_bands_run_from_the_smaller_to_the_larger_condition_and_say_which_lie_beyond():
    bands = list(SIZE_BANDS.items())
    radii = [c.radius for _, c in bands]
    assert radii[0][0] == pytest.approx(SMALLEST / BEYOND) and radii[-1][1] == pytest.approx(BEYOND * LARGEST)
    assert all(lo < hi for lo, hi in radii) and all(a[1] <= b[0] for a, b in zip(radii, radii[1:]))
    for name, c in bands:
        inside = SMALLEST <= c.radius[0] and c.radius[1] <= LARGEST
        assert name.endswith("(beyond)") != inside and c.backgrounds == BACKGROUNDS, name
    assert sum(name.endswith("(beyond)") for name, _ in bands) == 4  # two bands each way


def test_each_probe_image_shows_its_one_object_on_a_background():
    """Drawn by the pretraining's own drawing (cachekit.toy.scenes.render): one object
    covers part of the image and the background most of it."""
    imgs, objs, owners = probe_images(CONDITIONS["trained sizes and backgrounds"], 1, 16, 112)
    for img, owner in zip(imgs, owners):
        assert (owner == 0).sum() > 30 and (owner == -1).sum() > 112 * 112 // 2


def test_factor_accuracy_reports_every_condition_and_factor():
    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.toy.files import toy_model_config

    clip = load_clip(EncoderConfig(model=str(toy_model_config()), pretrained="random", seed=0, device="cpu"))
    res = factor_accuracy(clip, 0, 8)
    assert res["images"] == 8 and list(res["conditions"]) == list(CONDITIONS)
    assert list(factor_accuracy(clip, 0, 4, SIZE_BANDS)["conditions"]) == list(SIZE_BANDS)
    assert res["chance"] == {"shape": 25.0, "colour": 11.1, "place": 11.1, "colour_and_shape": 2.8}
    for v in res["conditions"].values():
        assert set(v) == {"shape", "colour", "place", "colour_and_shape"}
        assert all(0 <= x <= 100 and round(x * 8 / 100, 6) % 1 == 0 for x in v.values())
    assert list(res["shape_by"]) == list(CONDITIONS)
    for name, by in res["shape_by"].items():  # 8 images cycle through the 4 shapes twice
        assert set(SHAPES) <= set(by) and set(by) <= set(SHAPES) | {"centre", "edge", "corner"}
        assert all(round(by[sh] * 2 / 100, 6) % 1 == 0 for sh in SHAPES), by
        shape = res["conditions"][name]["shape"]
        assert min(by[sh] for sh in SHAPES) <= shape <= max(by[sh] for sh in SHAPES)


def test_place_kind_names_centre_edges_and_corners():
    from cachekit.toy.heldout import place_kind

    kinds = [place_kind(p) for p in POSITIONS]
    assert kinds.count("centre") == 1 and kinds.count("edge") == 4 and kinds.count("corner") == 4


def test_the_shipped_toy_knows_shape_colour_and_place_in_the_trained_conditions():
    """The shipped weights' floor on the probe (the README's table: 92.8 / 98.8 / 99.5 on 400
    images): shape, colour and place well above chance where they were trained. Beyond the trained
    sizes shape is issue 23 item 6's open goal and is not asserted."""
    from cachekit.encoder import EncoderConfig, load_clip

    res = factor_accuracy(load_clip(EncoderConfig(model="toy", pretrained="toy", device="cpu")), 0, 72)
    trained = res["conditions"]["trained sizes and backgrounds"]
    assert trained["shape"] >= 75 and trained["colour"] >= 85 and trained["place"] >= 85, trained


def test_ink_area_matches_the_drawn_shapes_and_mixed_sizing_spans_radius_to_equal_ink():
    """``INK_AREA`` is what the drawing fills (coverage of a drawn shape at 20 px, within 3%), so
    the "mixed" sizing's largest factor gives each shape the disc's ink; "radius" draws nothing
    from the stream (the shipped toy's images are unchanged), "mixed" stays within [1, k]."""
    from cachekit.toy.scenes import INK_AREA, SceneObject, render, scene_batch, size_factor

    r = 20.0
    for shape, area in INK_AREA.items():
        rng = np.random.default_rng(0)
        cover = np.zeros((1, 112, 112), np.float32)
        obj = SceneObject("red", shape, "large", "centre")
        render(rng, np.zeros((112, 112, 3), np.float32), [obj], lambda _o: r, cover)
        assert abs(cover.sum() / (area * r * r) - 1) < 0.03, (shape, cover.sum(), area * r * r)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    assert size_factor("triangle", "radius", rng) == 1.0 and rng.bit_generator.state == state
    k = {s: np.sqrt(np.pi / a) for s, a in INK_AREA.items()}
    got = [size_factor("triangle", "mixed", rng) for _ in range(200)]
    assert 1.0 <= min(got) < 1.1 and k["triangle"] - 0.1 < max(got) <= k["triangle"]
    assert size_factor("disc", "mixed", rng) == 1.0
    radius, mixed = scene_batch(0, 3, 8, 112), scene_batch(0, 3, 8, 112, "mixed")
    assert [len(s.objects) for s in radius[2]] and not np.array_equal(radius[0], mixed[0])
    for sizing in ("radius", "mixed"):
        images, objects, _ = probe_images(CONDITIONS["trained sizes and backgrounds"], 0, 4, 112, 0, sizing)
        assert images.shape == (4, 112, 112, 3) and len(objects) == 4


def test_marks_off_draws_the_same_objects_without_outline_or_marker():
    """``marks=False`` keeps every draw of the stream (the same objects, places and sizes) and
    leaves out only the outline and marker dot: the object covers the same pixels, and the images
    differ only inside it. The pretraining's own images (marks on) are unchanged."""
    from cachekit.toy.scenes import scene_batch

    cond = CONDITIONS["trained sizes and backgrounds"]
    on, objs_on, owners_on = probe_images(cond, 3, 24, 112)
    off, objs_off, owners_off = probe_images(cond, 3, 24, 112, marks=False)
    assert objs_on == objs_off and np.array_equal(owners_on, owners_off)
    changed = np.abs(on.astype(np.int16) - off).max(-1) > 0  # [n, H, W]
    near = owners_on == 0  # the object's pixels (covered at least half), grown by 3 px: its thin parts and edges
    for _ in range(3):
        grown = np.pad(near, ((0, 0), (1, 1), (1, 1)))
        near = np.zeros_like(near)
        for dy in range(3):
            for dx in range(3):
                near |= grown[:, dy:dy + 112, dx:dx + 112]
    assert changed.any() and not (changed & ~near).any()  # only the object's own pixels
    assert (~near).sum() > 0.8 * near.size  # the background stays out of it
    assert np.array_equal(probe_images(cond, 3, 24, 112)[0], on)
    assert np.array_equal(scene_batch(0, 5, 4, 112)[0], scene_batch(0, 5, 4, 112)[0])


def test_shape_by_layer_reads_each_layer_on_each_row():
    from cachekit.encoder import EncoderConfig, load_clip
    from cachekit.toy.files import toy_model_config
    from cachekit.toy.heldout import LAYER_BLOCKS, shape_by_layer

    clip = load_clip(EncoderConfig(model=str(toy_model_config()), pretrained="random", seed=0, device="cpu"))
    rows = dict(list(SIZE_BANDS.items())[:2])
    res = shape_by_layer(clip, 0, 8, rows, fit=16)
    assert list(res["conditions"]) == list(rows) and res["blocks"] == list(LAYER_BLOCKS)
    want = {f"{b} {pool}" for b in LAYER_BLOCKS for pool in ("max", "cell")} | {"embedding"}
    for v in res["conditions"].values():
        assert set(v) == want and all(0 <= x <= 100 and round(x * 8 / 100, 6) % 1 == 0 for x in v.values())

"""The second synthetic style (``SynthConfig(style="doodle")``): its own classes, shapes,
backgrounds and speeds, deterministic, time-reversed pairs, motions that do what the class names
say, the files, and the CLI option."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import invoke

from cachekit.errors import InputError
from cachekit.synth import CLASSES, SynthConfig, render, render_clip, scene, synth_dataset
from cachekit.synth.classes import DOODLE_CLASSES, DOODLE_REVERSAL_PAIRS
from cachekit.synth.doodle import DOODLE_BACKGROUNDS, DOODLE_SHAPES, pattern

CFG = SynthConfig(style="doodle", size=64, frames=16, videos_per_class=2)


def _track(name: str, index: int, cfg: SynthConfig = CFG) -> np.ndarray:
    return render(name, index, cfg).centroids()  # [T, 2]


def test_fifteen_classes_none_of_the_benchmark_and_four_reversal_pairs():
    assert len(DOODLE_CLASSES) == 15 and not set(DOODLE_CLASSES) & set(CLASSES)
    assert CFG.class_names == tuple(DOODLE_CLASSES)
    assert CFG.reversal_pairs() == list(DOODLE_REVERSAL_PAIRS) and len(DOODLE_REVERSAL_PAIRS) == 4
    assert not set(DOODLE_SHAPES) & {"disc", "square", "triangle", "ring"}
    assert not set(DOODLE_BACKGROUNDS) & {"plain", "noisy", "striped", "gradient"}


def test_style_is_validated_and_has_no_compositions():
    with pytest.raises(InputError, match="style must be one of"):
        SynthConfig(style="sketch")
    with pytest.raises(InputError, match="motion classes only"):
        SynthConfig(style="doodle", objects=("default",))
    with pytest.raises(InputError, match="unknown synthetic class"):
        SynthConfig(style="doodle", classes=("something falling",))
    with pytest.raises(InputError, match="default style"):
        scene("something blinking", 0, CFG)


def test_clips_are_deterministic_and_differ_between_clips_and_seeds():
    a = render_clip("something zigzagging", 0, CFG)
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_clip("something zigzagging", 0, CFG))
    assert not np.array_equal(a, render_clip("something zigzagging", 1, CFG))
    assert not np.array_equal(a, render_clip("something zigzagging", 0, SynthConfig(style="doodle", size=64,
                                                                                       frames=16, seed=1)))


@pytest.mark.parametrize("forward,backward", DOODLE_REVERSAL_PAIRS)
def test_reversed_class_is_its_partner_played_backwards(forward, backward):
    assert np.array_equal(render_clip(backward, 1, CFG), render_clip(forward, 1, CFG)[::-1])


def test_motions_do_what_the_names_say():
    big = SynthConfig(style="doodle", size=112, frames=16, clutter="low")
    for index in range(4):
        xy = _track("something moving diagonally down to the right", index, big)
        assert xy[-1, 0] - xy[0, 0] > 20 and xy[-1, 1] - xy[0, 1] > 20
        xy = _track("something moving diagonally up to the left", index, big)
        assert xy[-1, 0] - xy[0, 0] < -20 and xy[-1, 1] - xy[0, 1] < -20
        xy = _track("something jumping in an arc from left to right", index, big)
        assert xy[-1, 0] - xy[0, 0] > 40 and xy[:, 1].min() < min(xy[0, 1], xy[-1, 1]) - 15  # up, then down
        step = np.linalg.norm(np.diff(_track("something speeding up", index, big), axis=0), axis=1)
        assert step[-4:].mean() > 3 * step[:4].mean()
        step = np.linalg.norm(np.diff(_track("something slowing down", index, big), axis=0), axis=1)
        assert step[:4].mean() > 3 * step[-4:].mean()
        area = render("something blinking", index, big).object_mask.sum(axis=(1, 2))
        assert area.min() < 0.2 * area.max()
        area = render("something pulsing", index, big).object_mask.sum(axis=(1, 2))
        assert area.max() > 1.5 * area.min()
        c = _track("something wobbling", index, big)
        assert np.abs(c - c[0]).max() < 6  # turns in place (a crescent's centroid is off its centre)
    for name in ("something spiralling inwards", "something spiralling outwards"):
        radius = []
        for index in range(4):
            xy = _track(name, index, big)
            d = np.linalg.norm(xy - xy.mean(axis=0), axis=1)
            radius.append(d[-3:].mean() - d[:3].mean())
        assert (np.array(radius) < 0).all() if name.endswith("inwards") else (np.array(radius) > 0).all()


def test_every_class_draws_a_visible_object_on_a_patterned_background():
    for name in DOODLE_CLASSES:
        clip = render(name, 0, CFG)
        assert clip.object_mask.sum(axis=(1, 2)).max() > 20, name
    for kind in DOODLE_BACKGROUNDS:
        bg = pattern(np.random.default_rng(0), 64, kind)
        assert bg.shape == (64, 64, 3) and bg.std() > 0.05, kind


def test_doodle_data_set_files_and_resume(tmp_path):
    cfg = SynthConfig(style="doodle", size=32, frames=4, videos_per_class=2)
    res = synth_dataset(tmp_path / "d", cfg)
    meta = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert meta["config"]["style"] == "doodle" and meta["classes"] == list(DOODLE_CLASSES)
    assert meta["descriptions"]["something blinking"] == DOODLE_CLASSES["something blinking"].description
    assert len(res.videos) == 30 and sum(len(v) for v in res.splits.values()) == 15
    assert synth_dataset(tmp_path / "d", cfg).videos == res.videos  # resumes
    with pytest.raises(InputError, match="other settings"):
        synth_dataset(tmp_path / "d", SynthConfig(size=32, frames=4, videos_per_class=2))
    default = synth_dataset(tmp_path / "m", SynthConfig(size=32, frames=4, videos_per_class=1,
                                                         classes=tuple(CLASSES)[:3]))
    assert "style" not in json.loads((default.out_dir / "synth.json").read_text())["config"]  # as before styles


def test_synth_cli_style(tmp_path):
    code, stdout, _ = invoke(["synth", "--style", "doodle", "--list-classes"])
    assert code == 0 and len(stdout.strip().splitlines()) == 15 and "something blinking" in stdout
    code, _, stderr = invoke(["synth", str(tmp_path / "x"), "--style", "doodle", "--objects", "default"])
    assert code == 2 and "motion classes only" in stderr and "Traceback" not in stderr
    code, stdout, stderr = invoke(["synth", str(tmp_path / "y"), "--style", "doodle", "--size", "32", "--frames", "4",
                                   "--videos-per-class", "1", "--no-progress"])
    assert code == 0, stderr
    assert "15 classes" in stdout


def test_each_class_draws_its_actor_in_its_own_hue():
    from cachekit.synth.doodle import DOODLE_HUES
    forward = [c for c, spec in DOODLE_CLASSES.items() if spec.reverse_of is None]
    for name, spec in DOODLE_CLASSES.items():
        hue = DOODLE_HUES[forward.index(spec.reverse_of or name) % len(DOODLE_HUES)]
        clip = render(name, 0, SynthConfig(style="doodle", size=64, frames=8, clutter="low"))
        inside = clip.object_mask > 0.99  # [T, H, W]
        rgb = clip.frames[inside].astype(float) / 255  # [n, 3]: fill and dark outline
        bright = rgb[rgb.max(axis=1) > 0.5]
        h = np.array([_hue(p) for p in bright])
        assert np.median(np.abs((h - hue + 0.5) % 1.0 - 0.5)) < 0.04, name


def _hue(rgb: np.ndarray) -> float:
    import colorsys

    return colorsys.rgb_to_hsv(*rgb)[0]


def test_doodle_clips_decode_to_their_frames_and_differ_from_the_default_style(tmp_path):
    """What extraction reads: each written doodle mp4 decodes (the real decoder) to the frames its
    renderer drew, within the codec's error, and no default-style clip of the same size is as near."""
    import csv

    from cachekit.video import decode_at

    cfg = SynthConfig(style="doodle", size=64, frames=8, videos_per_class=1)
    default_cfg = SynthConfig(size=64, frames=8, videos_per_class=1)
    doodle = synth_dataset(tmp_path / "d", cfg)
    default = [render_clip(name, 0, default_cfg).astype(float) for name in tuple(CLASSES)[:10]]
    with open(doodle.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    for row in rows[::4]:
        frames = decode_at(doodle.out_dir / row["path"], np.arange(8)).astype(float)  # [T, H, W, 3]
        assert frames.shape == (8, 64, 64, 3)
        codec = np.abs(frames - render_clip(row["label"], 0, cfg)).mean()
        assert codec < 6, row["label"]
        assert min(np.abs(frames - d).mean() for d in default) > 3 * codec, row["label"]

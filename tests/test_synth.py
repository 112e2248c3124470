"""The synthetic action benchmark: determinism, time reversal, files, challenges, real motion."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from cachekit.errors import InputError
from cachekit.synth import (
    CHALLENGES,
    CLASSES,
    CLIP_CHALLENGES,
    REVERSAL_PAIRS,
    SynthConfig,
    clip_challenge,
    render,
    render_clip,
    slugify,
    split_classes,
    synth_dataset,
    write_mp4,
)

SMALL = SynthConfig(size=64, frames=16, videos_per_class=2)

# Six classes with two reversal pairs: enough for >= 2 val and test classes.
FILE_CLASSES = (
    "moving something from left to right",
    "moving something from right to left",
    "something appearing",
    "something disappearing",
    "something falling",
    "something staying still",
)


def _decode_pyav(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = SynthConfig(
        classes=FILE_CLASSES, size=64, frames=16, videos_per_class=2, challenge="mixed"
    )
    out = tmp_path_factory.mktemp("synth")
    return cfg, synth_dataset(out, cfg)


# ------------------------------------------------------------------ classes and config


def test_class_list_has_motion_classes_and_the_required_reversal_pairs():
    assert len(CLASSES) >= 16
    assert len({slugify(c) for c in CLASSES}) == len(CLASSES)
    pairs = set(REVERSAL_PAIRS)
    for pair in [
        ("moving something from left to right", "moving something from right to left"),
        ("something appearing", "something disappearing"),
        ("something approaching the camera", "something moving away from the camera"),
        ("rotating something clockwise", "rotating something counterclockwise"),
        ("something growing", "something shrinking"),
    ]:
        assert pair in pairs
    reversed_names = [b for _, b in REVERSAL_PAIRS]
    assert len(set(reversed_names)) == len(reversed_names)
    assert all(CLASSES[a].reverse_of is None for a, _ in REVERSAL_PAIRS)


def test_slugify():
    assert slugify("moving something from left to right") == "moving_something_from_left_to_right"
    assert slugify("  Pushing [Something], so it slides ") == "pushing_something_so_it_slides"
    with pytest.raises(InputError):
        slugify("--")


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 63},
        {"size": 8},
        {"frames": 1},
        {"videos_per_class": 0},
        {"seed": -1},
        {"challenge": "fog"},
        {"classes": ("moving something sideways",)},
        {"classes": ("something falling", "something falling")},
        {"splits": (0.5, 0.5, 0.5)},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(InputError):
        SynthConfig(**bad)


def test_config_round_trips_through_json():
    cfg = SynthConfig(classes=FILE_CLASSES, size=32, challenge="dark", splits=(0.5, 0.25, 0.25))
    assert SynthConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg


def test_unknown_class_is_an_input_error():
    with pytest.raises(InputError, match="unknown synthetic class"):
        render_clip("juggling", 0, SMALL)


# ------------------------------------------------------------------ determinism


def test_render_is_deterministic_and_seeded():
    name = "pushing something so it slides"
    for challenge in CHALLENGES:
        cfg = SynthConfig(size=64, frames=16, challenge=challenge)
        a, b = render_clip(name, 3, cfg), render_clip(name, 3, cfg)
        assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b), challenge
        reseeded = SynthConfig(size=64, frames=16, challenge=challenge, seed=1)
        other_seed = render_clip(name, 3, reseeded)
        assert not np.array_equal(a, other_seed)
        assert not np.array_equal(a, render_clip(name, 4, cfg))


def test_clips_do_not_depend_on_the_chosen_class_subset():
    subset = SynthConfig(
        classes=("something falling", "something rising", "something growing"), size=64, frames=16
    )
    name = "something rising"
    assert np.array_equal(render_clip(name, 1, subset), render_clip(name, 1, SMALL))


def test_mp4_bytes_and_decoded_frames_are_deterministic(tmp_path):
    frames = render_clip("something bouncing", 0, SMALL)
    a = write_mp4(tmp_path / "a.mp4", frames, fps=16)
    b = write_mp4(tmp_path / "b.mp4", render_clip("something bouncing", 0, SMALL), fps=16)
    assert a.read_bytes() == b.read_bytes()
    first, second = _decode_pyav(a), _decode_pyav(a)
    assert np.array_equal(first, second)
    assert first.shape == frames.shape
    # crf 18 (and yuv420p chroma at 64 px): close to the rendered frames
    mse = ((first.astype(np.float64) - frames) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 22
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []  # no temporary left


class _FailingFrames:
    """Frames that raise part-way through, like a run killed mid-video."""

    def __init__(self, frames: np.ndarray, fail_at: int):
        self.shape, self._frames, self._fail_at = frames.shape, frames, fail_at

    def __iter__(self):
        for i, frame in enumerate(self._frames):
            if i == self._fail_at:
                raise RuntimeError("interrupted")
            yield frame


def test_interrupted_write_leaves_no_file(tmp_path):
    frames = render_clip("something shaking", 0, SMALL)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_mp4(tmp_path / "clip.mp4", _FailingFrames(frames, fail_at=5), fps=16)
    assert list(tmp_path.iterdir()) == []


def test_write_mp4_rejects_odd_sizes(tmp_path):
    with pytest.raises(InputError):
        write_mp4(tmp_path / "odd.mp4", np.zeros((4, 33, 32, 3), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ time reversal


@pytest.mark.parametrize("challenge", ["none", "mixed"])
def test_reversed_class_is_its_partner_played_backwards(challenge):
    cfg = SynthConfig(size=64, frames=16, challenge=challenge)
    for forward, backward in REVERSAL_PAIRS:
        for index in (0, 1):
            f, b = render(forward, index, cfg), render(backward, index, cfg)
            assert np.array_equal(b.frames, f.frames[::-1]), (forward, index)
            assert np.array_equal(b.object_mask, f.object_mask[::-1])
            assert b.challenge == f.challenge == clip_challenge(backward, index, cfg)
            # and it is not a static clip, so the order matters
            assert not np.array_equal(f.frames[0], f.frames[-1])


# ------------------------------------------------------------------ motion


def _centroids(name, cfg, index):
    c = render(name, index, cfg).centroids()  # [T, 2]
    assert not np.isnan(c).any(), name
    return c


def test_acting_object_moves_as_the_class_says():
    cfg = SynthConfig(size=64, frames=16)
    for index in range(3):
        x = _centroids("moving something from left to right", cfg, index)[:, 0]
        assert np.all(np.diff(x) > 0) and x[-1] - x[0] > 0.3 * cfg.size
        x = _centroids("moving something from right to left", cfg, index)[:, 0]
        assert np.all(np.diff(x) < 0)
        y = _centroids("moving something up", cfg, index)[:, 1]
        assert np.all(np.diff(y) < 0) and y[0] - y[-1] > 0.3 * cfg.size
        y = _centroids("something falling", cfg, index)[:, 1]
        assert np.all(np.diff(y) >= -1e-6) and y[-1] - y[0] > 0.3 * cfg.size
        speed = np.diff(y)
        assert speed[:3].mean() < 0.5 * speed.max()  # accelerates
        c = _centroids("something staying still", cfg, index)
        assert np.ptp(c, axis=0).max() < 1e-3

        area = render("something growing", index, cfg).object_mask.sum(axis=(1, 2))
        assert np.all(np.diff(area) > 0) and area[-1] > 4 * area[0]
        area = render("something approaching the camera", index, cfg).object_mask.sum(axis=(1, 2))
        assert np.all(np.diff(area) > 0)
        area = render("something appearing", index, cfg).object_mask.sum(axis=(1, 2))
        assert area[0] < 1e-3 and area[-1] > 20


def _marker_angles(clip) -> np.ndarray:
    """[T] angle (image coordinates, y down) of the marker dot around the object's centre: the
    marker is the set of inner object pixels far in colour from the object's median colour."""
    centre = clip.centroids()[0]
    frames = clip.frames.astype(np.float32)
    inside = clip.object_mask > 0.99  # [T, H, W]
    for _ in range(2):  # erode past the dark outline
        inside[:, 1:-1, 1:-1] &= (
            inside[:, :-2, 1:-1] & inside[:, 2:, 1:-1] & inside[:, 1:-1, :-2] & inside[:, 1:-1, 2:]
        )
    angles = []
    for t in range(len(frames)):
        px = frames[t][inside[t]]  # [P, 3]
        far = np.abs(px - np.median(px, axis=0)).sum(axis=1) > 150
        ys, xs = np.nonzero(inside[t])
        angles.append(np.arctan2(ys[far].mean() - centre[1], xs[far].mean() - centre[0]))
    return np.array(angles)


def test_rotation_direction_is_visible():
    """The marker turns clockwise on screen for the clockwise class, the other way for its pair."""
    cfg = SynthConfig(size=128, frames=16)
    for index in range(2):
        for name, sign in (
            ("rotating something clockwise", 1),
            ("rotating something counterclockwise", -1),
        ):
            step = sign * np.angle(np.exp(1j * np.diff(_marker_angles(render(name, index, cfg)))))
            assert step.sum() > np.pi / 2 and (step > 0).mean() >= 0.8, (name, step)


def test_every_class_renders_a_visible_object():
    cfg = SynthConfig(size=32, frames=8)
    for name in CLASSES:
        clip = render(name, 0, cfg)
        assert clip.frames.shape == (8, 32, 32, 3)
        assert clip.object_mask.sum(axis=(1, 2)).max() > 5, name


# ------------------------------------------------------------------ challenges


def _high_freq_energy(frames: np.ndarray) -> float:
    f = frames.astype(np.float64).mean(axis=-1)
    return float((np.diff(f, axis=1) ** 2).mean() + (np.diff(f, axis=2) ** 2).mean())


def _best_shifts(frames: np.ndarray, reach: int = 3) -> list[tuple[int, int]]:
    """Integer (dy, dx) that best aligns each frame with the next (central crop, MSE)."""
    f = frames.astype(np.float64).mean(axis=-1)
    h = f.shape[1]
    core = slice(reach + h // 8, h - reach - h // 8)
    out = []
    for a, b in zip(f[:-1], f[1:]):
        errs = {}
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                shifted = b[core.start + dy : core.stop + dy, core.start + dx : core.stop + dx]
                errs[(dy, dx)] = ((a[core, core] - shifted) ** 2).mean()
        out.append(min(errs, key=errs.get))
    return out


@pytest.mark.parametrize("index", [0, 1])
def test_challenges_degrade_in_the_expected_direction(index):
    name = "something staying still"
    base = {"size": 96, "frames": 12}
    clean = render(name, index, SynthConfig(**base))
    plain = clean.frames

    dark = render_clip(name, index, SynthConfig(**base, challenge="dark"))
    assert dark.mean() < 0.3 * plain.mean()
    assert dark.mean() > 0.05 * plain.mean()  # dim, not black
    # sensor noise: a static scene is no longer static
    assert np.abs(np.diff(dark.astype(np.int16), axis=0)).mean() > 0.5

    blur = render_clip(name, index, SynthConfig(**base, challenge="blur"))
    assert _high_freq_energy(blur) < 0.7 * _high_freq_energy(plain)
    assert abs(float(blur.mean()) - float(plain.mean())) < 3

    shake = render_clip(name, index, SynthConfig(**base, challenge="shake"))
    assert all(s == (0, 0) for s in _best_shifts(plain))
    moved = [s for s in _best_shifts(shake) if s != (0, 0)]
    assert len(moved) >= 3  # of 11 frame pairs
    # the scene (not just the object) moves: background pixels change frame to frame
    background = clean.object_mask.max(axis=0) < 0.01  # [H, W]
    assert np.abs(np.diff(shake.astype(np.int16), axis=0))[:, background].mean() > 1.5

    occ = render_clip(name, index, SynthConfig(**base, challenge="occlusion"))
    changed = np.any(occ != plain, axis=-1).mean(axis=(1, 2))  # [T] fraction of pixels
    assert np.all(changed > 0.03) and np.all(changed < 0.6)


def test_mixed_gives_each_clip_one_named_challenge():
    cfg = SynthConfig(size=32, frames=4, challenge="mixed")
    picks = [clip_challenge("something shaking", i, cfg) for i in range(24)]
    assert set(picks) <= set(CLIP_CHALLENGES) and len(set(picks)) >= 3
    for i in range(4):
        explicit = SynthConfig(size=32, frames=4, challenge=picks[i])
        name = "something shaking"
        assert np.array_equal(render_clip(name, i, cfg), render_clip(name, i, explicit))
    assert clip_challenge("something shaking", 0, SynthConfig(challenge="dark")) == "dark"


def test_scene_is_the_same_under_every_challenge():
    name, base = "moving something up", {"size": 64, "frames": 8}
    masks = [render(name, 2, SynthConfig(**base, challenge=c)).object_mask for c in CHALLENGES]
    assert all(np.array_equal(masks[0], m) for m in masks)


# ------------------------------------------------------------------ splits


def test_split_classes_is_class_disjoint_seeded_and_sized():
    names = list(CLASSES)
    splits = split_classes(names, (0.6, 0.2, 0.2), seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(sum(splits.values(), [])) == sorted(names)
    assert splits == split_classes(names, (0.6, 0.2, 0.2), seed=0)
    assert any(split_classes(names, (0.6, 0.2, 0.2), seed=s) != splits for s in range(1, 5))
    for a, b in REVERSAL_PAIRS:  # pairs kept together
        assert [s for s in splits if a in splits[s]] == [s for s in splits if b in splits[s]]
    for split in ("val", "test"):  # each evaluation split holds a reversal pair
        assert any(set(pair) <= set(splits[split]) for pair in REVERSAL_PAIRS)
    for s in splits.values():  # order of the class list is kept
        assert s == sorted(s, key=names.index)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 9])
def test_split_classes_with_few_classes(n):
    names = list(CLASSES)[:n]
    for keep in (True, False):
        splits = split_classes(names, (0.6, 0.2, 0.2), seed=3, keep_pairs_together=keep)
        least = 2 if n >= 6 else 1
        assert len(splits["train"]) >= 1
        assert len(splits["val"]) >= least and len(splits["test"]) >= least
        assert sorted(sum(splits.values(), [])) == sorted(names)


def test_split_classes_needs_three_classes():
    with pytest.raises(InputError):
        split_classes(list(CLASSES)[:2], (0.6, 0.2, 0.2), seed=0)


# ------------------------------------------------------------------ files


def test_dataset_videos_decode_with_pyav_and_decord(dataset):
    import decord

    cfg, result = dataset
    assert len(result.videos) == len(FILE_CLASSES) * cfg.videos_per_class
    for path in result.videos[:: cfg.videos_per_class]:
        assert path.is_file() and path.suffix == ".mp4"
        frames = _decode_pyav(path)
        assert frames.shape == (cfg.frames, cfg.size, cfg.size, 3)
        reader = decord.VideoReader(str(path))
        assert len(reader) == cfg.frames
        batch = reader.get_batch(list(range(cfg.frames))).asnumpy()
        assert batch.shape == (cfg.frames, cfg.size, cfg.size, 3)
        assert np.abs(batch.astype(np.int16) - frames).mean() < 2  # same pictures
    import av

    with av.open(str(result.videos[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == cfg.fps


def test_dataset_csv_and_split_files(dataset):
    cfg, result = dataset
    root = result.out_dir
    with result.csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label"]
    assert len(rows) == len(result.videos)
    assert {r["label"] for r in rows} == set(FILE_CLASSES)
    assert [root / r["path"] for r in rows] == result.videos
    for r in rows:
        assert Path(r["path"]).parts[:2] == ("videos", slugify(r["label"]))
    assert result.classes == list(FILE_CLASSES)

    # class-disjoint splits that cover every class, >= 2 val/test classes with 6 classes
    split_sets = {s: set(result.splits[s]) for s in ("train", "val", "test")}
    assert set.union(*split_sets.values()) == set(FILE_CLASSES)
    assert sum(map(len, split_sets.values())) == len(FILE_CLASSES)
    assert len(split_sets["val"]) >= 2 and len(split_sets["test"]) >= 2 and split_sets["train"]

    label_of = {r["path"]: r["label"] for r in rows}
    fsar = root / "splits" / "clip_fsar"
    for split in ("train", "val", "test"):
        names = (fsar / f"{split}_classes.txt").read_text().splitlines()
        assert names == result.splits[split]
        seen = set()
        for line in (fsar / f"{split}_few_shot.txt").read_text().splitlines():
            head, rel = line.split("//")
            assert head.startswith(split)
            idx = int(head[len(split) :])
            assert label_of[rel] == names[idx]
            assert (root / rel).is_file()
            seen.add(rel)
        assert len(seen) == len(names) * cfg.videos_per_class

    vifi = root / "splits" / "vifi"
    with (vifi / "labels.csv").open(newline="") as fh:
        labels = list(csv.DictReader(fh))
    assert list(labels[0]) == ["id", "name"]
    assert [int(r["id"]) for r in labels] == list(range(len(FILE_CLASSES)))
    names = [r["name"] for r in labels]
    assert names == list(FILE_CLASSES)
    for split in ("train", "val", "test"):
        lines = (vifi / f"{split}.txt").read_text().splitlines()
        assert len(lines) == len(result.splits[split]) * cfg.videos_per_class
        for line in lines:
            rel, label = line.split(" ")
            assert names[int(label)] == label_of[rel]
            assert label_of[rel] in result.splits[split]

    meta = json.loads((root / "synth.json").read_text())
    assert meta["complete"] is True
    assert SynthConfig(**meta["config"]) == cfg
    assert meta["classes"] == list(FILE_CLASSES)
    assert meta["splits"] == result.splits
    assert sorted(map(tuple, meta["reversal_pairs"])) == sorted(
        p for p in REVERSAL_PAIRS if set(p) <= set(FILE_CLASSES)
    )
    assert set(meta["clip_challenges"].values()) <= set(CLIP_CHALLENGES)


def test_written_video_matches_the_rendered_clip(dataset):
    cfg, result = dataset
    name, index = FILE_CLASSES[1], 1
    path = result.out_dir / "videos" / slugify(name) / f"{slugify(name)}_{index:03d}.mp4"
    decoded = _decode_pyav(path).astype(np.int16)
    rendered = render_clip(name, index, cfg)
    assert np.abs(decoded - rendered).mean() < np.abs(decoded - rendered[::-1]).mean()


def test_rerun_resumes_and_other_settings_are_refused(tmp_path):
    cfg = SynthConfig(classes=FILE_CLASSES[:3], size=32, frames=4, videos_per_class=1)
    first = synth_dataset(tmp_path, cfg, progress=True)
    stamps = [p.stat().st_mtime_ns for p in first.videos]
    first.videos[0].unlink()  # as if killed before this one
    again = synth_dataset(tmp_path, cfg)
    assert again.videos == first.videos and all(p.is_file() for p in again.videos)
    assert [p.stat().st_mtime_ns for p in again.videos[1:]] == stamps[1:]
    with pytest.raises(InputError, match="seed"):
        synth_dataset(tmp_path, SynthConfig(**{**asdict(cfg), "seed": 5}))
    assert not list(tmp_path.rglob("*.partial"))  # no temporary left


@pytest.mark.slow
def test_full_size_clip_renders_and_encodes_fast(tmp_path):
    cfg = SynthConfig()  # 224 x 224, 32 frames
    render_clip("something bouncing", 0, cfg)  # warm up imports
    best = float("inf")
    for i in range(3):
        start = time.perf_counter()
        write_mp4(tmp_path / f"{i}.mp4", render_clip("something bouncing", i, cfg), cfg.fps)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0  # about 0.15 s on an idle core; the bound leaves room for a busy machine


def test_low_clutter_keeps_the_actor_and_drops_background_and_distractors():
    from cachekit.synth import SynthConfig, render

    full = render("something falling", 0, SynthConfig(size=64, frames=8, seed=2))
    low = render("something falling", 0, SynthConfig(size=64, frames=8, seed=2, clutter="low"))
    np.testing.assert_array_equal(full.object_mask, low.object_mask)  # same actor, same motion
    outside = low.object_mask.max(axis=0) == 0
    # a plain grey background outside the actor's path; the full one is textured
    assert np.ptp(low.frames[:, outside]) <= 2 and np.ptp(full.frames[:, outside]) > 20

"""The synthetic action benchmark: determinism, time reversal, files, challenges, real motion, and
its compositional mode (object x motion classes, base-to-novel lists, probe groups)."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from helpers import benchmark_script

from cachekit.errors import InputError
from cachekit.synth import (
    CHALLENGES,
    CLASSES,
    CLIP_CHALLENGES,
    DEFAULT_OBJECTS,
    MOTION_FAMILIES,
    REVERSAL_PAIRS,
    SynthConfig,
    base_novel_compositions,
    base_novel_videos,
    clip_challenge,
    compose,
    composition_classes,
    composition_groups,
    parse_composition,
    render,
    render_clip,
    scene,
    slugify,
    split_classes,
    synth_dataset,
    vocab,
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


def test_mp4_bytes_do_not_depend_on_what_the_process_encoded_before(tmp_path):
    """At the benchmark's 112 px, x264's assembly gave the same 16 frames several different
    encodings within one process, depending on the clips and allocations before them (the
    benchmark's numbers moved by points between two runs of one config). Same frames, same bytes."""
    cfg = SynthConfig(objects=DEFAULT_OBJECTS, size=112, frames=16, seed=0)
    clip = render_clip("a green triangle swinging like a pendulum", 12, cfg)  # 6 encodings in 16 before
    other = render_clip("moving a blue disc from left to right", 4, cfg)
    digests, junk = set(), []
    for k in range(16):
        junk = (junk + [np.random.default_rng(k).bytes(1 << 16)])[-8:]  # churn the heap
        write_mp4(tmp_path / f"other{k}.mp4", other, fps=16)
        digests.add(hashlib.sha256(write_mp4(tmp_path / f"clip{k}.mp4", clip, fps=16).read_bytes()).hexdigest())
    assert len(digests) == 1


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


def test_a_failing_clip_stops_the_clips_not_started_and_a_rerun_resumes(tmp_path, monkeypatch):
    import threading

    import cachekit.synth.dataset as dataset

    cfg = SynthConfig(classes=FILE_CLASSES[:4], size=32, frames=4, videos_per_class=5)  # 20 clips
    real, calls, lock = dataset.write_mp4, [], threading.Lock()

    def failing(path, frames, fps):  # the fourth clip's disk is full
        with lock:
            calls.append(path)
            n = len(calls)
        if n == 4:
            raise OSError("No space left on device")
        return real(path, frames, fps)

    monkeypatch.setattr(dataset, "write_mp4", failing)
    with pytest.raises(OSError, match="No space"):
        synth_dataset(tmp_path, cfg, workers=2)
    # the clips not started were stopped: at most the other thread's clip in hand ran after the failure,
    # however late the caller's thread saw it (under load it used to start three more)
    assert len(calls) <= 4 + 1, len(calls)
    assert not list(tmp_path.rglob("*.partial"))
    monkeypatch.setattr(dataset, "write_mp4", real)
    res = synth_dataset(tmp_path, cfg, workers=2)
    assert len(res.videos) == 20 and all(p.is_file() for p in res.videos)


@pytest.mark.slow
def test_full_size_clip_renders_and_encodes(tmp_path):
    """The default size (224 x 224, 32 frames) writes an H.264 clip that decodes to its frames.
    How long it takes is the synthetic benchmark's business (benchmarks/), never a test's."""
    import av

    cfg = SynthConfig()
    frames = render_clip("something bouncing", 0, cfg)  # [T, H, W, 3]
    write_mp4(tmp_path / "0.mp4", frames, cfg.fps)
    with av.open(str(tmp_path / "0.mp4")) as c:
        stream = c.streams.video[0]
        got = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(got) == cfg.frames and got[0].shape == frames.shape[1:]


def test_low_clutter_keeps_the_actor_and_drops_background_and_distractors():
    from cachekit.synth import SynthConfig, render

    full = render("something falling", 0, SynthConfig(size=64, frames=8, seed=2))
    low = render("something falling", 0, SynthConfig(size=64, frames=8, seed=2, clutter="low"))
    np.testing.assert_array_equal(full.object_mask, low.object_mask)  # same actor, same motion
    outside = low.object_mask.max(axis=0) == 0
    # a plain grey background outside the actor's path; the full one is textured
    assert np.ptp(low.frames[:, outside]) <= 2 and np.ptp(full.frames[:, outside]) > 20


# ------------------------------------------------------------------ compositional classes

THREE = ("red square", "blue disc", "green triangle")


def test_compositional_names_are_object_x_motion_in_object_major_order():
    cfg = SynthConfig(objects=("default",))
    assert cfg.objects == DEFAULT_OBJECTS == tuple(f"{c} {s}" for c, s in vocab.ACTION_OBJECTS)
    names = cfg.class_names
    assert len(names) == len(DEFAULT_OBJECTS) * len(CLASSES) and len(set(names)) == len(names)
    motions = list(CLASSES)
    for k, name in enumerate(names):  # object-major: all motions of an object, then the next
        obj, motion = DEFAULT_OBJECTS[k // len(motions)], motions[k % len(motions)]
        assert name == compose(obj, motion)
        assert parse_composition(name) == (obj, motion) == cfg.resolve(name)
        assert "something" not in name
    for name in ("moving a red square from left to right", "an orange disc falling",
                 "pushing a red square so it slides", "rotating a yellow ring counterclockwise"):
        assert name in names
    assert names.index("an orange disc falling") == 5 * len(motions) + motions.index("something falling")
    assert len({slugify(c) for c in names}) == len(names)
    assert composition_classes(THREE) == SynthConfig(objects=THREE).class_names
    for bad in ("something falling", "a grey disc falling", "a red cube falling", "a red square juggling"):
        with pytest.raises(InputError):
            parse_composition(bad)


def test_compositional_classes_filter_and_validation():
    picked = ("a blue disc falling", "moving a red square up", "moving a red square down")
    cfg = SynthConfig(objects=THREE, classes=picked)
    assert cfg.class_names == picked  # label order as given, as in motion-only mode
    assert cfg.reversal_pairs() == [("moving a red square up", "moving a red square down")]
    assert SynthConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg
    with pytest.raises(InputError, match="compositions of the objects"):
        SynthConfig(objects=THREE, classes=("something falling",))  # a motion-only name
    with pytest.raises(InputError, match="compositions of the objects"):
        SynthConfig(objects=THREE, classes=("an orange disc falling",))  # not one of its objects
    with pytest.raises(InputError, match="unknown synthetic class"):
        render_clip("something falling", 0, SynthConfig(objects=THREE, size=32, frames=2))
    for bad in (("grey disc",), ("red cube",), ("square red",), ("red square", "red square"), (), "red square"):
        with pytest.raises(InputError):
            SynthConfig(objects=bad)


def _hue(rgb: np.ndarray) -> float:
    r, g, b = rgb
    mx, mn = max(rgb), min(rgb)
    if mx == r:
        h = ((g - b) / (mx - mn)) % 6
    elif mx == g:
        h = (b - r) / (mx - mn) + 2
    else:
        h = (r - g) / (mx - mn) + 4
    return h / 6


def _shape_of(mask: np.ndarray) -> str:
    """disc / square / triangle / ring from one frame's coverage [H, W]: a ring's centre is empty;
    the others by area over the circumscribed circle (disc ~1, square 0.64, triangle 0.41)."""
    ys, xs = np.nonzero(mask > 0.5)
    cy, cx = ys.mean(), xs.mean()
    if mask[int(round(cy)), int(round(cx))] < 0.5:
        return "ring"
    r_max = np.hypot(ys - cy, xs - cx).max() + 0.5
    fill = mask.sum() / (np.pi * r_max**2)
    return "disc" if fill > 0.8 else "square" if fill > 0.52 else "triangle"


def test_actor_is_drawn_in_its_class_colour_and_shape():
    chromatic = {c: h for c, (h, _, _) in vocab.COLOURS.items() if h is not None}
    cfg = SynthConfig(objects=("default",), size=128, frames=2)
    colours_seen = {}
    for obj in DEFAULT_OBJECTS:
        colour, shape = obj.split()
        for index in (0, 1):
            clip = render(compose(obj, "something staying still"), index, cfg)
            inside = clip.object_mask[0] > 0.99  # [H, W]
            for _ in range(2):  # erode past the dark outline
                inside[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
            mean = clip.frames[0][inside].astype(np.float64).mean(axis=0) / 255  # [3]
            hue = _hue(mean)
            dist = {c: min(abs(hue - h), 1 - abs(hue - h)) for c, h in chromatic.items()}
            assert min(dist, key=dist.get) == colour, (obj, index, hue)
            assert _shape_of(clip.object_mask[0]) == shape, (obj, index)
            colours_seen.setdefault(obj, []).append(mean)
    # each clip draws its own shade of the colour word
    assert all(not np.allclose(a, b) for a, b in colours_seen.values())
    # and motion-only clips keep drawing random shapes (the classifier can fail)
    shapes = {_shape_of(render("something staying still", i, SynthConfig(size=128, frames=2)).object_mask[0])
              for i in range(12)}
    assert len(shapes) >= 3


def test_compositional_reversal_pairs_and_per_clip_seeds():
    cfg = SynthConfig(objects=THREE[:2], size=48, frames=8, challenge="mixed")
    pairs = cfg.reversal_pairs()
    assert len(pairs) == 2 * len(REVERSAL_PAIRS)
    for forward, backward in pairs:
        assert parse_composition(forward)[0] == parse_composition(backward)[0]  # same object
        assert (parse_composition(forward)[1], parse_composition(backward)[1]) in REVERSAL_PAIRS
        f, b = render(forward, 1, cfg), render(backward, 1, cfg)
        assert np.array_equal(b.frames, f.frames[::-1]) and np.array_equal(b.object_mask, f.object_mask[::-1])
        assert b.challenge == f.challenge == clip_challenge(backward, 1, cfg)
    # every (object, motion, index) has its own clip; the motion is the class's
    up = [render(compose(o, "moving something up"), i, cfg) for o in THREE[:2] for i in (0, 1)]
    for k, a in enumerate(up):
        for other in up[k + 1 :]:
            assert not np.array_equal(a.object_mask, other.object_mask)
        y = a.centroids()[:, 1]
        assert np.all(np.diff(y) < 0)
    assert not np.array_equal(render_clip("a red square falling", 0, cfg), render_clip("something falling", 0, SMALL))


def _saturation(rgb: np.ndarray) -> float:
    return float((rgb.max() - rgb.min()) / max(rgb.max(), 1e-6))


def test_compositional_distractors_are_colourless_and_the_background_stays_textured():
    cfg = SynthConfig(objects=THREE, size=64, frames=4)
    motion_only = SynthConfig(size=64, frames=4)
    sat, sat_motion_only, count = [], [], 0
    for name in ("a red square falling", "moving a blue disc up", "a green triangle staying still"):
        for index in range(4):
            sc = scene(name, index, cfg)
            assert _saturation(sc.actor.colour) > 0.5
            sat += [_saturation(d.colour) for d in sc.distractors]
            count += len(sc.distractors)
            sat_motion_only += [_saturation(d.colour) for d in scene(parse_composition(name)[1], index,
                                                                     motion_only).distractors]
            clip = render(name, index, cfg)
            outside = clip.object_mask.max(axis=0) == 0
            assert np.ptp(clip.frames[:, outside]) > 20  # textured, not plain
    assert count >= 12 and max(sat) <= 0.1
    assert max(sat_motion_only) > 0.2  # motion-only distractors may be coloured: the check can fail
    # the scene is what render draws: same actor coverage
    clip = render("a red square falling", 0, cfg)
    assert clip.object_mask.shape == (4, 64, 64) and scene("a red square falling", 0, cfg).actor.shape == "square"


def test_base_to_novel_holds_out_compositions_whose_parts_are_seen():
    cfg = SynthConfig(objects=("default",))
    split = base_novel_compositions(cfg.class_names, cfg.objects)
    base, novel = split["base"], split["novel"]
    assert sorted(base + novel) == sorted(cfg.class_names) and not set(base) & set(novel)
    assert 0.25 <= len(novel) / len(cfg.class_names) <= 0.4
    family = {m: j for j, fam in enumerate(MOTION_FAMILIES) for m in fam}
    assert sorted(family) == sorted(CLASSES)

    def check(base, novel, pairs):
        base_objects = {parse_composition(c)[0] for c in base}
        base_families = {family[parse_composition(c)[1]] for c in base}
        for c in novel:
            obj, motion = parse_composition(c)
            assert obj in base_objects and family[motion] in base_families, c
        side = {c: "base" for c in base} | {c: "novel" for c in novel}
        for a, b in pairs:
            assert side[a] == side[b], (a, b)

    check(base, novel, cfg.reversal_pairs())
    # every object and every motion class has novel and base compositions
    for obj in cfg.objects:
        assert any(parse_composition(c)[0] == obj for c in novel)
    for motion in CLASSES:
        assert any(parse_composition(c)[1] == motion for c in base)
    # narrower selections keep the guarantees (or hold out nothing)
    rng = np.random.default_rng(0)
    for k in range(20):
        objects = tuple(rng.choice(DEFAULT_OBJECTS, size=int(rng.integers(1, 4)), replace=False))
        all_names = composition_classes(objects)
        chosen = [all_names[i] for i in sorted(rng.choice(len(all_names), size=int(rng.integers(3, len(all_names) + 1)),
                                                          replace=False))]
        got = base_novel_compositions(chosen, objects)
        if got is None:
            continue
        assert got["novel"] and sorted(got["base"] + got["novel"]) == sorted(chosen)
        sub = SynthConfig(objects=objects, classes=tuple(chosen))
        check(got["base"], got["novel"], sub.reversal_pairs())
    assert base_novel_compositions(composition_classes(("red square",)), ("red square",)) is None
    # probe groups keep groups of two classes or more
    picked = ["a red square falling", "a blue disc falling", "moving a red square up", "moving a blue disc down"]
    assert composition_groups(picked) == {
        "motion": {"something falling": ["a red square falling", "a blue disc falling"]},
        "object": {"red square": ["a red square falling", "moving a red square up"],
                   "blue disc": ["a blue disc falling", "moving a blue disc down"]},
    }

    lists = base_novel_videos(split, 5, seed=0)
    assert lists == base_novel_videos(split, 5, seed=0) and lists != base_novel_videos(split, 5, seed=1)
    for c in base:
        train_i = {i for cc, i in lists["train"] if cc == c}
        val_i = {i for cc, i in lists["base_val"] if cc == c}
        assert len(train_i) == 4 and len(val_i) == 1 and train_i | val_i == set(range(5))
    assert {c for c, _ in lists["novel_val"]} == set(novel) and len(lists["novel_val"]) == 5 * len(novel)
    # clip i of a reversed class is clip i of its partner played backwards: a pair holds out the same clips
    for n in (4, 5, 16):
        lists = base_novel_videos(split, n, seed=3)
        held = {}
        for c, i in lists["base_val"]:
            held.setdefault(c, set()).add(i)
        paired = [(a, b) for a, b in cfg.reversal_pairs() if a in base]
        assert paired
        for a, b in paired:
            assert held[a] == held[b], (a, b)


@pytest.fixture(scope="module")
def comp_dataset(tmp_path_factory):
    cfg = SynthConfig(objects=THREE, size=32, frames=4, videos_per_class=3)
    out = tmp_path_factory.mktemp("synth_comp")
    return cfg, synth_dataset(out, cfg)


def _vifi(path: Path) -> list[tuple[str, int]]:
    return [(rel, int(label)) for rel, label in (line.split(" ") for line in path.read_text().splitlines())]


def test_compositional_dataset_writes_b2n_lists_groups_and_metadata(comp_dataset):
    cfg, res = comp_dataset
    root = res.out_dir
    with res.csv.open(newline="") as fh:
        label_of = {r["path"]: r["label"] for r in csv.DictReader(fh)}
    assert res.classes == list(composition_classes(THREE)) and set(label_of.values()) == set(res.classes)

    # class-disjoint CLIP-FSAR split keeps each object's reversal pairs together
    side = {c: s for s, names in res.splits.items() for c in names}
    assert sorted(side) == sorted(res.classes)
    for a, b in cfg.reversal_pairs():
        assert side[a] == side[b]

    b2n = root / "splits" / "b2n"
    with (b2n / "labels.csv").open(newline="") as fh:
        names = [r["name"] for r in csv.DictReader(fh)]
    assert names == res.classes
    lists = {s: _vifi(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")}
    classes = {}
    for s, lines in lists.items():
        for rel, label in lines:
            assert names[label] == label_of[rel] and (root / rel).is_file()
        classes[s] = {names[label] for _, label in lines}
    assert sorted(r for lines in lists.values() for r, _ in lines) == sorted(label_of)  # each clip once
    assert classes["novel_val"] == set(res.b2n["novel"]) and classes["train"] == set(res.b2n["base"])
    assert not classes["novel_val"] & classes["train"]  # novel compositions unseen in training
    assert classes["base_val"] == classes["train"]
    seen_objects = {parse_composition(c)[0] for c in classes["train"]}
    seen_motions = {parse_composition(c)[1] for c in classes["train"]}
    for c in classes["novel_val"]:
        obj, motion = parse_composition(c)
        assert obj in seen_objects and motion in seen_motions
    for a, b in cfg.reversal_pairs():
        assert (a in classes["novel_val"]) == (b in classes["novel_val"])

    groups = root / "splits" / "groups"
    files = sorted(p.name for p in groups.glob("*.txt"))
    assert files == sorted([f"motion_{slugify(m)}.txt" for m in CLASSES] + [f"object_{slugify(o)}.txt" for o in THREE])
    for motion in CLASSES:
        got = {rel for rel, _ in _vifi(groups / f"motion_{slugify(motion)}.txt")}
        want = {rel for rel, label in label_of.items() if parse_composition(label)[1] == motion}
        assert got == want and len(got) == len(THREE) * cfg.videos_per_class
    for obj in THREE:
        lines = _vifi(groups / f"object_{slugify(obj)}.txt")
        assert {names[label] for _, label in lines} == {compose(obj, m) for m in CLASSES}
        assert all(label_of[rel] == names[label] for rel, label in lines)
        assert len(lines) == len(CLASSES) * cfg.videos_per_class

    meta = json.loads((root / "synth.json").read_text())
    assert SynthConfig(**meta["config"]) == cfg and meta["objects"] == list(THREE)
    assert meta["compositions"]["a blue disc falling"] == ["blue disc", "something falling"]
    assert meta["b2n"]["base"] == res.b2n["base"] and meta["b2n"]["novel"] == res.b2n["novel"]
    assert meta["groups"] == {kind: {name: {"file": f"splits/groups/{kind}_{slugify(name)}.txt", "classes": members}
                                     for name, members in by_name.items()} for kind, by_name in res.groups.items()}
    assert meta["descriptions"]["a blue disc falling"].startswith("A blue disc drops")
    assert [tuple(p) for p in meta["reversal_pairs"]] == cfg.reversal_pairs()


def test_compositional_dataset_bytes_are_deterministic(tmp_path):
    from helpers import tree_digest

    picked = ("a red square falling", "a blue disc falling", "moving a red square up", "moving a red square down")
    cfg = SynthConfig(objects=THREE[:2], classes=picked, size=32, frames=4, videos_per_class=2, challenge="mixed")
    # drawn and encoded on one thread, then on three at once: the same files, in the same order
    a, b = synth_dataset(tmp_path / "a", cfg, workers=1), synth_dataset(tmp_path / "b", cfg, workers=3)
    assert a.splits == b.splits and a.b2n == b.b2n and [p.relative_to(tmp_path / "a") for p in a.videos] == [
        p.relative_to(tmp_path / "b") for p in b.videos]
    da, db = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert da == db and any(k.startswith("splits/b2n/") for k in da) and any(k.startswith("splits/groups/") for k in da)
    other = synth_dataset(tmp_path / "c", SynthConfig(**{**asdict(cfg), "seed": 1}))
    assert tree_digest(tmp_path / "c")[next(k for k in da if k.endswith(".mp4"))] != da[next(k for k in da
                                                                                          if k.endswith(".mp4"))]
    assert other.classes == a.classes


def test_motion_only_data_set_has_no_compositional_files(dataset):
    _, result = dataset
    assert result.b2n is None and result.groups is None
    assert not (result.out_dir / "splits" / "b2n").exists() and not (result.out_dir / "splits" / "groups").exists()
    meta = json.loads((result.out_dir / "synth.json").read_text())
    assert "objects" not in meta and "objects" not in meta["config"]  # synth.json as before objects existed


def test_b2n_and_group_lists_evaluate_end_to_end(comp_dataset, tiny_cfg, tmp_path):
    """Real extraction of the lists, then the base2novel protocol and a --split-file probe."""
    from cachekit.encoder import EncoderConfig
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig

    cfg, res = comp_dataset
    root = res.out_dir
    ecfg = ExtractConfig(encoder=EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"),
                         sampler=SamplerConfig(frames=4), workers=1)
    b2n = root / "splits" / "b2n"
    store = str(tmp_path / "b2n.zarr")
    extract(collect_inputs([str(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")],
                           video_root=str(root), class_names=str(b2n / "labels.csv")), store, ecfg, progress=False)
    r = evaluate(store, EvalConfig(protocol="base2novel", method="zeroshot"))
    assert r.extra["base_classes"] == len(res.b2n["base"]) and r.extra["novel_classes"] == len(res.b2n["novel"])
    assert r.extra["novel_videos"] == len(res.b2n["novel"]) * cfg.videos_per_class

    fsar = root / "splits" / "clip_fsar"
    store = str(tmp_path / "fsar.zarr")
    extract(collect_inputs([str(fsar / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                           video_root=str(root), class_names=str(fsar)), store, ecfg, progress=False)
    for kind, name in (("motion", "something falling"), ("object", "blue disc")):
        group = root / "splits" / "groups" / f"{kind}_{slugify(name)}.txt"
        r = evaluate(store, EvalConfig(protocol="zeroshot", method="zeroshot", split_file=str(group),
                                       video_root=str(root)))
        assert set(r.class_names) == set(res.groups[kind][name])
        assert r.videos == len(res.groups[kind][name]) * cfg.videos_per_class


def test_synth_cli_objects(tmp_path):
    from helpers import invoke

    code, out, _ = invoke(["synth", "--objects", "red square,blue disc", "--list-classes"])
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 * len(CLASSES) and lines[0].startswith("moving a red square from left to right")
    assert "time-reversal of: moving a red square from left to right" in lines[1]
    code, out, _ = invoke(["synth", "--list-classes"])
    assert code == 0 and out.splitlines()[0].startswith("moving something from left to right")
    code, out, err = invoke(["synth", str(tmp_path / "x"), "--objects", "grey disc"])
    assert code == 2 and (out + err).count("\n") == 1 and "grey disc" in out + err
    assert not (tmp_path / "x").exists()
    code, out, _ = invoke(["synth", str(tmp_path / "d"), "--objects", "default", "--classes",
                           "a red square falling,an orange disc falling,moving a blue disc up", "--size", "32",
                           "--frames", "2", "--videos-per-class", "1", "--no-progress", "--workers", "2"])
    assert code == 0 and "wrote 3 clips of 3 classes" in out
    meta = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert meta["config"]["objects"] == list(DEFAULT_OBJECTS) and "workers" not in meta["config"]
    code, out, err = invoke(["synth", str(tmp_path / "w"), "--workers", "0"])
    assert code == 2 and "--workers" in out + err and not (tmp_path / "w").exists()


def test_one_object_has_no_novel_compositions(tmp_path, caplog):
    picked = ("a red square falling", "a red square rising", "a red square bouncing")
    cfg = SynthConfig(objects=("red square",), classes=picked, size=32, frames=2, videos_per_class=1)
    with caplog.at_level("WARNING", logger="cachekit.synth.dataset"):
        res = synth_dataset(tmp_path, cfg)
    assert res.b2n is None and not (tmp_path / "splits" / "b2n").exists()
    assert "no splits/b2n" in caplog.text
    assert res.groups == {"motion": {}, "object": {"red square": list(picked)}}
    assert json.loads((tmp_path / "synth.json").read_text())["b2n"] is None
    assert sorted(p.name for p in (tmp_path / "splits" / "groups").iterdir()) == ["labels.csv", "object_red_square.txt"]


def test_no_held_out_clip_of_any_split_is_a_training_clip_forwards_or_backwards(tmp_path):
    """Every split file the benchmark writes (base-to-novel lists, CLIP-FSAR, ViFi-CLIP), compared on
    decoded frames: no held-out clip equals a training clip of its layout, as is or played backwards
    (issue 23: a reversed class's clip i is its partner's clip i reversed, and base-to-novel held out
    different indices of the two classes). The check itself finds a twin planted in a copy."""
    import shutil

    from helpers import held_out_twins

    cfg = SynthConfig(objects=DEFAULT_OBJECTS[:3], videos_per_class=4, frames=8, size=32, splits=(0.5, 0.25, 0.25))
    data = tmp_path / "data"
    res = synth_dataset(data, cfg)
    assert res.b2n is not None and cfg.reversal_pairs()
    assert held_out_twins(data) == []
    assert json.loads((data / "synth.json").read_text())["reversal_pairs_apart"] == []
    # the benchmark's own size (6 objects, 60 / 30 / 30 classes): its class split keeps every pair whole too
    full = SynthConfig(objects=DEFAULT_OBJECTS, splits=(0.5, 0.25, 0.25), seed=0)
    side = {c: s for s, names in split_classes(list(full.class_names), full.splits, full.seed, True,
                                               full.reversal_pairs()).items() for c in names}
    assert len(full.reversal_pairs()) == 36 and all(side[a] == side[b] for a, b in full.reversal_pairs())

    # plant one, as the lists were before: a base_val clip whose time-reversed twin trains
    planted = tmp_path / "planted"
    shutil.copytree(data / "splits", planted / "splits")
    (planted / "videos").symlink_to(data / "videos")
    train = (planted / "splits" / "b2n" / "train.txt").read_text().splitlines()
    first, second = next((a, b) for a, b in cfg.reversal_pairs() if a in res.b2n["base"])
    i = next(int(r.rsplit("_", 1)[1][:3]) for r, _ in (ln.split(" ") for ln in train) if f"/{slugify(first)}_" in r)
    twin = f"videos/{slugify(second)}/{slugify(second)}_{i:03d}.mp4"
    (planted / "splits" / "b2n" / "train.txt").write_text("".join(ln + "\n" for ln in train if not ln.startswith(twin)))
    (planted / "splits" / "b2n" / "base_val.txt").write_text(f"{twin} 0\n")
    found = held_out_twins(planted)
    source = f"videos/{slugify(first)}/{slugify(first)}_{i:03d}.mp4"
    assert {(f[0], f[1], f[2]) for f in found} == {("b2n/base_val", twin, source)}
    assert min(found, key=lambda f: f[4])[3] == "backwards"  # (the small object: forwards is close too)


def test_a_reversal_pair_split_across_training_is_recorded_and_warned(tmp_path, caplog):
    cfg = SynthConfig(classes=FILE_CLASSES + ("something rising", "something bouncing"), size=32, frames=2,
                      videos_per_class=1, keep_pairs_together=False, seed=1)
    with caplog.at_level("WARNING", logger="cachekit.synth.dataset"):
        res = synth_dataset(tmp_path, cfg)
    side = {c: s for s, names in res.splits.items() for c in names}
    apart = [[a, b] for a, b in cfg.reversal_pairs() if side[a] != side[b] and "train" in (side[a], side[b])]
    assert apart, "seed 1 should split a pair; pick another seed"
    assert json.loads((tmp_path / "synth.json").read_text())["reversal_pairs_apart"] == apart
    assert "played backwards" in caplog.text


def test_an_offset_latin_square_splits_the_base_compositions_again():
    """``offset`` 1 of the rule picks another third of the compositions: inside the base of
    offset 0 it gives the selection split of benchmarks/b2n_select.py, each pseudo-novel
    composition's object and motion family seen in pseudo-base, reversal pairs on one side."""
    cfg = SynthConfig(objects=DEFAULT_OBJECTS)
    split = base_novel_compositions(cfg.class_names, cfg.objects)
    again = base_novel_compositions(split["base"], cfg.objects, offset=1)
    assert sorted(again["base"] + again["novel"]) == sorted(split["base"])
    assert again["novel"] and not set(again["novel"]) & set(split["novel"])
    assert 0.3 <= len(again["novel"]) / len(split["base"]) <= 0.6
    family = {m: j for j, fam in enumerate(MOTION_FAMILIES) for m in fam}
    seen = {(parse_composition(c)[0], None) for c in again["base"]} | {
        (None, family[parse_composition(c)[1]]) for c in again["base"]}
    for c in again["novel"]:
        obj, motion = parse_composition(c)
        assert (obj, None) in seen and (None, family[motion]) in seen, c
    side = {c: "base" for c in again["base"]} | {c: "novel" for c in again["novel"]}
    for a, b in cfg.reversal_pairs():
        if a in side:
            assert side[a] == side[b], (a, b)


def test_the_benchmark_selection_settles_the_fewest_clips_that_beat_frozen_and_the_best_epochs():
    b2n_select = benchmark_script("b2n_select")
    settle, qualifies = b2n_select.settle, b2n_select.qualifies

    def cell(hm, novel=10.0, ci=2.0):
        return {"hm": [hm, ci], "novel": [novel, ci], "base": [hm, ci]}

    frozen = {8: cell(10.0, 10.0), 16: cell(10.0, 10.0)}
    ev, mask, ez = "EV-CLIP context prompts (from cache)", "EV-CLIP mask prompts", "EZ-CLIP from block 4"
    measured = {
        8: {ev: {25: cell(12.0, 13.0), 50: cell(12.5, 13.5)}, mask: {4: cell(9.0)}, ez: {6: cell(11.0, 12.0)}},
        16: {ev: {25: cell(20.0, 18.0), 50: cell(20.0, 19.0), 100: cell(15.0, 16.0)}, mask: {4: cell(9.0), 8: cell(10.0)},
             ez: {6: cell(14.0, 15.0), 12: cell(21.0, 20.0)}},
    }
    # at 8 no row clears frozen's interval on novel (13.5 - 2 < 10 + 2); at 16 one does
    assert settle(measured, frozen) == (16, {ev: 25, mask: 8, ez: 12}, {"EV-CLIP": ev, "EZ-CLIP": ez})
    assert not qualifies(measured[8], frozen[8]) and qualifies(measured[16], frozen[16])
    measured[8][ez][6] = cell(11.0, 14.5)  # now 8 clips do: the fewest wins, each row at its best harmonic mean
    assert settle(measured, frozen) == (8, {ev: 50, mask: 4, ez: 6}, {"EV-CLIP": ev, "EZ-CLIP": ez})
    assert qualifies(measured[8], frozen[8])  # so select() measures no more counts after 8
    assert settle({8: measured[8]}, frozen) == settle(measured, frozen)  # ... and settles the same without them
    cells = {"Frozen CLIP zero-shot (no training)": frozen[8], f"{ez} @6": measured[8][ez][6], f"{ev} @25": cell(1.0)}
    assert b2n_select.cells_by_epochs(cells) == (frozen[8], {ez: {6: measured[8][ez][6]}, ev: {25: cell(1.0)}})
    none = {16: {ev: {25: cell(9.0)}, mask: {4: cell(12.0)}, ez: {6: cell(8.0)}}}
    assert settle(none, {16: cell(10.0)}) == (16, {ev: 25, mask: 4, ez: 6}, {"EV-CLIP": mask, "EZ-CLIP": ez})


def test_the_benchmark_selection_set_reads_no_test_clip_and_no_novel_composition(tmp_path):
    """benchmarks/b2n_select.py settles the base-to-novel choices on a set of its own (issue 23):
    only the benchmark's base compositions, clips drawn with another seed (none equals a clip of
    the benchmark), and pseudo base-to-novel lists in which no held-out clip is a training clip,
    forwards or backwards."""
    import dataclasses

    from helpers import decode_all_pyav, held_out_twins

    b2n_select = benchmark_script("b2n_select")
    full = SynthConfig(objects=DEFAULT_OBJECTS[:3], videos_per_class=4, frames=8, size=32,
                       splits=(0.5, 0.25, 0.25), seed=0)
    test_split = base_novel_compositions(full.class_names, full.objects)
    data, split = b2n_select.selection_data(tmp_path / "sel", full, seed=b2n_select.SELECTION_SEED)
    meta = json.loads((data / "synth.json").read_text())
    assert meta["config"]["seed"] == b2n_select.SELECTION_SEED != full.seed
    assert sorted(meta["classes"]) == sorted(test_split["base"])
    assert sorted(split["base"] + split["novel"]) == sorted(test_split["base"]) and split["novel"]
    lists = {name: (data / "splits" / "b2n" / f"{name}.txt").read_text().splitlines()
             for name in ("train", "base_val", "novel_val")}
    labels = [ln.split(",", 1)[1] for ln in (data / "splits" / "b2n" / "labels.csv").read_text().splitlines()[1:]]
    named = {name: {labels[int(ln.rsplit(" ", 1)[1])] for ln in lines} for name, lines in lists.items()}
    assert named["novel_val"] == set(split["novel"]) and named["train"] == named["base_val"] == set(split["base"])
    assert held_out_twins(data) == []

    # none of its clips is a clip of the benchmark (same class, same index, seed 0)
    c = split["base"][0]
    bench_dir = tmp_path / "bench"
    synth_dataset(bench_dir, dataclasses.replace(full, classes=tuple(split["base"][:3])))
    rel = f"videos/{slugify(c)}/{slugify(c)}_000.mp4"
    ours, theirs = decode_all_pyav(data / rel).astype(np.int16), decode_all_pyav(bench_dir / rel).astype(np.int16)
    assert np.abs(ours - theirs).mean() > 3 and np.abs(ours[::-1] - theirs).mean() > 3


def test_synth_cli_splits_give_five_way_val_and_test(tmp_path):
    """The README's few-shot session draws 5-way episodes on val and test: --splits makes that possible."""
    from helpers import invoke

    code, out, err = invoke(["synth", str(tmp_path / "s"), "--splits", "0.5,0.25,0.25", "--size", "32", "--frames",
                             "2", "--videos-per-class", "1", "--no-progress"])
    assert code == 0, err
    assert "split train: 10 classes" in out and "split val: 5 classes" in out and "split test: 5 classes" in out
    for bad in ("0.5,x", "0.5,0.6,0.25"):
        code, out, err = invoke(["synth", str(tmp_path / "b"), "--splits", bad])
        assert code == 2 and ("--splits" in out + err or "splits must be" in out + err), (bad, out, err)
        assert not (tmp_path / "b").exists()

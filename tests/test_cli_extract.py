"""``clipcache extract`` / ``clipcache info`` end to end: real files, real decoders, real stores.

Most commands run in this process through click's runner (the import of torch + open_clip
would cost ~5 s per subprocess); the kill test and the offline-weights test run the real
entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from cachekit.cache import FeatureCache
from cachekit.extract import text_key
from cachekit.templates import SINGLE
from helpers import (
    ROOT,
    build_tiny_model,
    cli_command,
    cli_env,
    decode_pyav_at,
    invoke,
    record_hashes,
    run_cli,
    synth_frames,
    tree_digest,
    write_h264,
)
from clipcache.stores import open_store


@pytest.fixture(scope="module")
def model_args(tiny_cfg, tiny_weights) -> list[str]:
    return ["--model", tiny_cfg, "--pretrained", str(tiny_weights)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cli-clips")
    return [write_h264(d / f"c{i}.mp4", synth_frames(10 + i, 16 + 2 * i, 96, 128)) for i in range(4)]


def extract(model_args, *args) -> tuple[int, str, str]:
    return invoke(["extract", *map(str, args), *model_args, "--no-progress"])


def info(store) -> dict:
    rc, out, err = invoke(["info", str(store), "--json"])
    assert rc == 0, err
    return json.loads(out)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------
# resume


def test_resume_skips_complete_videos_and_leaves_the_store_unchanged(model_args, clips, tmp_path):
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, *clips[:3], "--store", store, "--frames", "4")
    assert rc == 0, err
    assert "3 extracted, 0 already cached, 0 failed" in out
    hashes, files = record_hashes(store), tree_digest(store)
    rc, out, err = extract(model_args, *clips[:3], "--store", store, "--frames", "4")
    assert rc == 0, err
    assert "0 extracted, 3 already cached, 0 failed" in out
    assert record_hashes(store) == hashes
    assert tree_digest(store) == files  # byte for byte (the writer lock file aside)
    rc, out, err = extract(model_args, *clips, "--store", store, "--frames", "4")
    assert rc == 0 and "1 extracted, 3 already cached" in out
    after = record_hashes(store)
    assert len(after) == 4 and {k: after[k] for k in hashes} == hashes


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(model_args, tmp_path):
    """SIGKILL ``clipcache extract`` once its first videos are committed, resume, compare."""
    d = tmp_path / "videos"
    rows = ["path,label"]
    for i in range(12):
        write_h264(d / f"v{i:02d}.mp4", synth_frames(100 + i, 24, 120, 160))
        rows.append(f"v{i:02d}.mp4,{'waving' if i % 2 else 'clapping'}")
    (d / "list.csv").write_text("\n".join(rows) + "\n")
    killed, reference = tmp_path / "killed.zarr", tmp_path / "reference.zarr"
    args = ["extract", d / "list.csv", "--store", killed, *model_args, "--frames", "8", "--no-progress",
            "--commit-every", "2"]
    proc = subprocess.Popen(cli_command(args), cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    commits = killed / "meta" / "log" / "videos"  # <segment>/<seq>.json: the batch commit records
    try:
        while proc.poll() is None:  # a hang is pytest-timeout's to catch, not a wall-clock guess
            if commits.is_dir() and any(True for _ in commits.glob("*/[0-9]*.json")):
                break
            time.sleep(0.005)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert running, f"extract ended before it could be killed: {err.decode()[-500:]}"
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = record_hashes(killed)
    assert 1 <= len(done_at_kill) < 12
    with open_store(killed, "r") as s:  # whatever is visible is complete
        assert s.verify("videos") == (len(done_at_kill), [])
        assert s.keys("text") == []  # text is encoded after the videos: not reached

    rc, out, err = extract(model_args, d / "list.csv", "--store", killed, "--frames", "8")
    assert rc == 0, err  # the dead writer's lock went with it
    assert f"{12 - len(done_at_kill)} extracted, {len(done_at_kill)} already cached, 0 failed" in out
    rc, out, err = extract(model_args, d / "list.csv", "--store", reference, "--frames", "8")
    assert rc == 0, err

    got, want = record_hashes(killed), record_hashes(reference)
    assert sorted(got) == sorted(want) and len(want) == 12
    assert got == want  # every array of every video: identical sha256
    assert {k: got[k] for k in done_at_kill} == done_at_kill  # committed entries never rewritten
    assert record_hashes(killed, "text") == record_hashes(reference, "text")
    assert len(record_hashes(reference, "text")) == 2


# ------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_are_recorded_and_the_good_ones_extracted(model_args, clips, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = [clips[0], clips[1]]
    data = clips[2].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    frames = synth_frames(7, 30, 96, 128)
    with av.open(str(d / "faststart.mp4"), "w", options={"movflags": "faststart"}) as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 128, 96, "yuv420p"
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    fs = (d / "faststart.mp4").read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(fs[: int(len(fs) * 0.6)])  # index intact, data cut
    (d / "faststart.mp4").unlink()
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    write_h264(d / "short.mp4", synth_frames(8, 3, 96, 128))
    (d / "x.mp4").mkdir()
    bad = {
        "truncated.mp4": "could not decode",
        "truncated_faststart.mp4": "",
        "empty.mp4": "empty file",
        "notes.mp4": "could not decode",
        "short.mp4": "3 decodable frames, fewer than the 8",
        "x.mp4": "is a directory",
    }
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, *good, *(d / n for n in bad), "--store", store, "--frames", "8")
    assert rc == 1
    assert f"2 extracted, 0 already cached, {len(bad)} failed" in out  # the summary
    failed_lines = [ln for ln in err.splitlines() if ln.startswith("failed: ")]
    assert len(failed_lines) == len(bad), err
    assert "Traceback" not in err
    doc = info(store)
    assert doc["videos"] == 2 and doc["failed"] == len(bad)
    reasons = {Path(p).name: r for p, r in doc["failed_videos"].items()}
    assert sorted(reasons) == sorted(bad)
    for name, why in bad.items():
        assert name in reasons[name] and why in reasons[name], reasons[name]
        assert "\n" not in reasons[name]
    with FeatureCache(store) as cache:
        assert sorted(Path(p).name for p in cache.paths) == sorted(p.name for p in good)
    # a re-run skips what failed before (unless --retry-failed) and keeps what succeeded
    rc, out, err = extract(model_args, *good, *(d / n for n in bad), "--store", store, "--frames", "8")
    assert f"0 extracted, 2 already cached, 0 failed, {len(bad)} skipped (failed before)" in out
    rc, out, err = extract(model_args, d / "empty.mp4", "--store", store, "--frames", "8", "--retry-failed")
    assert rc == 1 and "1 failed" in out
    assert info(store)["failed"] == len(bad)


@pytest.mark.parametrize("args,needle", [
    (["does/not/exist.mp4"], "does/not/exist.mp4"),
    (["{clip}", "--model", "ViT-B-99"], "ViT-B-99"),
    (["{clip}", "--tokens-at", "99"], "99"),
    (["{clip}", "--tokens-at", "six"], "six"),
    (["{clip}", "--templates", "no-such-templates.txt"], "no-such-templates.txt"),
])
def test_user_errors_exit_2_with_one_line_and_no_store(model_args, clips, tmp_path, args, needle):
    store = tmp_path / "s.zarr"
    args = [a.format(clip=clips[0]) for a in args]
    weights = [] if "--model" in args else model_args  # ViT-B-99: fails before any weights
    rc, out, err = invoke(["extract", *args, "--store", str(store), *weights, "--no-progress"])
    assert rc == 2
    assert needle in one_error_line(err)
    assert not store.exists()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_store_with_another_key_is_refused_and_unchanged(model_args, clips, tmp_path, suffix):
    store = tmp_path / f"s{suffix}"
    rc, out, err = extract(model_args, clips[0], "--store", store, "--frames", "4")
    assert rc == 0, err
    before = {p.name: tree_digest(p) for p in tmp_path.iterdir()}
    rc, out, err = extract(model_args, clips[1], "--store", store, "--frames", "6")
    assert rc == 2
    line = one_error_line(err)
    assert "frames" in line and "store has 4, asked 6" in line
    assert {p.name: tree_digest(p) for p in tmp_path.iterdir()} == before
    assert info(store)["videos"] == 1


# ------------------------------------------------------------------------------------------
# inputs


def test_csv_with_labels(model_args, clips, tmp_path):
    (tmp_path / "list.csv").write_text(f"path,label\n{clips[0]},jumping jacks\n{clips[1]},archery\n")
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, tmp_path / "list.csv", "--store", store, "--frames", "4",
                           "--tokens-at", "1,2")
    assert rc == 0, err
    doc = info(store)
    assert set(doc) >= {"videos", "failed", "cache_key", "arrays"}
    assert doc["cache_key"]["tokens_at"] == [1, 2]
    assert doc["arrays"]["tokens_1"] == doc["arrays"]["tokens_2"] == [2, 1, 4, 50, 64]  # [.., N+1, W]
    assert doc["videos"] == 2 and doc["failed"] == 0 and doc["classes"] == 2
    assert isinstance(doc["cache_key"], dict) and doc["cache_key"]["frames"] == 4
    assert doc["arrays"]["emb"] == [2, 1, 4, 64]  # [videos, views, T, D']
    assert doc["arrays"]["frame_idx"] == [2, 1, 4]
    assert doc["arrays"]["text"] == [2, 1, 64]  # [classes, P, D']
    with FeatureCache(store) as cache:
        assert cache.classes == ["archery", "jumping jacks"]
        by_path = dict(zip((Path(p).name for p in cache.paths), cache.labels.tolist()))
        assert by_path == {clips[0].name: 1, clips[1].name: 0}


def test_folder_with_class_subfolders(model_args, clips, tmp_path):
    root = tmp_path / "data"
    for cls, clip in (("playing_violin", clips[0]), ("playing_violin", clips[1]), ("archery", clips[2])):
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / clip.name).write_bytes(clip.read_bytes())
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, root, "--store", store, "--frames", "4")
    assert rc == 0, err
    with FeatureCache(store) as cache:
        labels = {Path(p).name: cache.classes[i] for p, i in zip(cache.paths, cache.labels)}
    assert labels == {clips[0].name: "playing violin", clips[1].name: "playing violin",
                      clips[2].name: "archery"}


def test_clip_fsar_split_with_video_root_and_a_missing_video(model_args, clips, tmp_path):
    root = tmp_path / "root"
    for rel, clip in (("videos/a/x.mp4", clips[0]), ("videos/b/y.mp4", clips[1])):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(clip.read_bytes())
    split = tmp_path / "trainlist.txt"
    split.write_text("train0//videos/a/x.mp4\ntrain1//videos/b/y.mp4\ntrain1//videos/b/gone.mp4\n")
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, split, "--video-root", root, "--store", store, "--frames", "4")
    assert rc == 0, err
    assert "note: split 'train': 1 listed videos not found" in out
    doc = info(store)
    assert doc["videos"] == 2
    assert doc["splits"] == {"train": {"videos": 2, "missing": 1}}
    with FeatureCache(store) as cache:
        assert cache.classes == ["a", "b"]
        assert cache.splits()["train"].missing == 1


def test_vifi_split_with_labels_csv(model_args, clips, tmp_path):
    root = tmp_path / "root"
    for rel, clip in (("archery/v1.mp4", clips[0]), ("bowling/v2.mp4", clips[1]), ("bowling/v3.mp4", clips[2])):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(clip.read_bytes())
    (tmp_path / "labels.csv").write_text("id,name\n0,archery\n1,bowling\n")
    split = tmp_path / "test_split1.txt"
    split.write_text("archery/v1.mp4 0\nbowling/v2.mp4 1\nbowling/v3.mp4 1\n")
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, split, "--video-root", root, "--class-names", tmp_path / "labels.csv",
                           "--store", store, "--frames", "4")
    assert rc == 0, err
    doc = info(store)
    assert doc["videos"] == 3 and doc["splits"] == {"test": {"videos": 3, "missing": 0}}
    with FeatureCache(store) as cache:
        labels = sorted((Path(p).name, cache.classes[i]) for p, i in zip(cache.paths, cache.labels))
        assert labels == [("v1.mp4", "archery"), ("v2.mp4", "bowling"), ("v3.mp4", "bowling")]
        assert cache.text().shape == (2, len(SINGLE), 64)
    with open_store(store, "r") as s:
        assert s.has("text", text_key("bowling", SINGLE))


# ------------------------------------------------------------------------------------------
# weights


def test_safetensors_file_gives_the_in_memory_models_outputs(model_args, tiny_encoder, clips, tmp_path):
    store = tmp_path / "s.zarr"
    # an exact comparison pins the CPU: --device auto picks CUDA with fp16 autocast where a GPU is
    rc, out, err = extract(model_args, clips[3], "--store", store, "--frames", "4", "--device", "cpu")
    assert rc == 0, err
    model = build_tiny_model(seed=0)
    with FeatureCache(store) as cache:
        emb = cache.emb()[0]  # [T, D']
        frames = decode_pyav_at(clips[3], cache.frame_indices()[0])
        assert cache.key["weights"] == Path(model_args[3]).name
    with torch.no_grad():
        want = model.encode_image(tiny_encoder.preprocess(frames)).numpy()
    assert np.abs(emb - want).max() <= 1e-6


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_is_refused(clips, tiny_cfg, tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4))), str(path))
    store = tmp_path / "s.zarr"
    rc, out, err = invoke(["extract", clips[0], "--store", store, "--model", tiny_cfg,
                           "--pretrained", path, "--no-progress"])
    assert rc == 2
    assert "TorchScript" in one_error_line(err)
    assert not store.exists()


@pytest.mark.slow
def test_offline_tag_without_cache_real_entry_point(clips, tmp_path):
    """``--model ViT-B-32 --pretrained openai``, offline, empty HF_HOME: exit 2, one line, no store."""
    home = tmp_path / "hf-home"
    home.mkdir()
    store = tmp_path / "s.zarr"
    rc, out, err = run_cli(["extract", clips[0], "--store", store, "--model", "ViT-B-32",
                            "--pretrained", "openai", "--no-progress"],
                           env=cli_env(HF_HOME=str(home), HF_HUB_OFFLINE="1"), timeout=120)
    assert rc == 2, err
    line = one_error_line(err)
    for way in ("--pretrained /path/to/weights.safetensors", "local-dir:", "Hugging Face cache"):
        assert way in line
    assert not store.exists()
    assert not any(home.rglob("*.safetensors")) and not any(home.rglob("*.bin"))


def test_a_rerun_with_other_class_names_says_cached_videos_keep_theirs(tmp_path, model_args):
    """Labels are part of a video's commit: a re-run with corrected names changes nothing, and says so."""
    for i, c in enumerate(("Archery", "Cycling")):
        write_h264(tmp_path / "own" / c / "a.mp4", synth_frames(30 + i, 6, 32, 32))
    store = tmp_path / "s.zarr"
    first, second = tmp_path / "n1.txt", tmp_path / "n2.csv"
    first.write_text("archery\ncycling\n")
    second.write_text("id,name\nArchery,shooting arrows\nCycling,riding a bike\n")
    rc, out, err = extract(model_args, tmp_path / "own", "--class-names", first, "--store", store, "--frames", "2")
    assert rc == 0, err
    rc, out, err = extract(model_args, tmp_path / "own", "--class-names", second, "--store", store, "--frames", "2")
    assert rc == 0, err
    assert "2 cached videos keep the class they were extracted with" in out + err and "'shooting arrows'" in out + err
    assert sorted(info(store)["class_ids"]) == ["archery", "cycling"]
    rc, out, err = extract(model_args, tmp_path / "own", "--class-names", first, "--store", store, "--frames", "2")
    assert "keep the class" not in out + err  # the same names: nothing to say


def test_a_rerun_with_another_fps_says_cached_frame_folders_keep_theirs(tmp_path, model_args):
    from datasets_helpers import make_frame_folders

    lay = make_frame_folders(tmp_path / "frames", per_class=1)
    store = tmp_path / "s.zarr"
    rc, out, err = extract(model_args, lay.lists["folder"], "--fps", "25", "--store", store, "--frames", "2")
    assert rc == 0, err
    rc, out, err = extract(model_args, lay.lists["folder"], "--fps", "10", "--store", store, "--frames", "2")
    assert rc == 0 and "2 cached frame folders keep the --fps they were extracted with, not 10" in out + err
    with open_store(store) as st:
        assert {r["fps"] for r in st.records("videos").values()} == {25.0}

"""The three commands as typed (issue 22): ``train``, ``eval``, ``index`` and ``query --run`` add the
arrays their method reads that the store lacks to that same store, once, for the videos they read,
equal to what ``extract`` would have written; ``--no-extend`` (and files gone) refuse in one line
with the message that names the ``extract`` command. And ``extract DIR; train --method M; query
clip --run R`` answers for every registered method with its default options."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cachekit.methods import METHODS
from datasets_helpers import make_ucf101
from helpers import invoke, record_hashes, synth_frames, write_h264
from clipcache.stores import open_store

BUDGET = ["--episodes", "4", "--val-episodes", "4", "--epochs", "1", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def deep_cfg():
    from helpers import ROOT

    return str(ROOT / "tests" / "assets" / "tiny-clip-deep.json")  # 12 blocks: EV-CLIP's default z_block 6


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, deep_cfg):
    """A UCF101 miniature (train 24 / test 8 videos of 4 classes) extracted without any tokens."""
    root = tmp_path_factory.mktemp("ucf")
    lay = make_ucf101(root)
    store = root / "s.zarr"
    rc, out, err = invoke(["extract", lay.lists["folder"], "--video-root", lay.video_root, "--store", store,
                           "--model", deep_cfg, "--pretrained", "random", "--frames", "4", "--no-progress"])
    assert rc == 0, err
    return lay, store


def copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


def tokens_of(store, block: int) -> dict[str, str]:
    return {k: v[f"tokens_{block}"] for k, v in record_hashes(store).items() if f"tokens_{block}" in v}


def test_train_adds_the_tokens_it_reads_for_its_videos_once_equal_to_extract(ucf, deep_cfg, tmp_path):
    lay, base = ucf
    store = copy_store(base, tmp_path / "s.zarr")
    rc, out, err = invoke(["train", "--method", "ev_clip", "--store", store, "--out", tmp_path / "run", *BUDGET])
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "adding" in ln]
    assert len(lines) == 1 and "block 6 of 24 videos" in lines[0] and "once" in lines[0], err
    assert out.splitlines()[0].startswith("coverage train: 24 listed, 24 present (100.0%), 0 failed to decode, 24 used")
    got = tokens_of(store, 6)
    assert len(got) == 24  # the training videos only: the 8 test videos are not read by train
    with open_store(store) as s:
        assert s.attrs["cache_key"]["tokens_at"] == []  # not every video has them yet
    # what extract --tokens-at 6 writes for the same videos, bit for bit
    ref = tmp_path / "ref.zarr"
    rc, _, err = invoke(["extract", lay.lists["folder"], "--video-root", lay.video_root, "--store", ref,
                         "--model", deep_cfg, "--pretrained", "random", "--frames", "4", "--tokens-at", "6",
                         "--no-progress"])
    assert rc == 0, err
    want = tokens_of(ref, 6)
    assert got == {k: want[k] for k in got}
    # eval reads the test videos: they are added now, and then the key lists the block
    rc, out, err = invoke(["eval", "--store", store, "--run", tmp_path / "run", "--no-progress"])
    assert rc == 0, err
    assert "block 6 of 8 videos" in err and out.splitlines()[0].startswith("coverage train:")
    assert "coverage test: 8 listed, 8 present (100.0%), 0 failed to decode, 8 evaluated" in out
    assert tokens_of(store, 6) == want
    with open_store(store) as s:
        assert s.attrs["cache_key"]["tokens_at"] == [6]
    rc, out, err = invoke(["eval", "--store", store, "--run", tmp_path / "run", "--no-progress"])
    assert rc == 0 and "adding" not in err  # once


def test_no_extend_and_gone_files_refuse_with_the_extract_command(ucf, deep_cfg, tmp_path):
    lay, base = ucf
    store = copy_store(base, tmp_path / "s.zarr")
    before = record_hashes(store)
    rc, out, err = invoke(["train", "--method", "ev_clip", "--store", store, "--out", tmp_path / "r1", *BUDGET,
                           "--no-extend"])
    assert rc == 2 and err.count("\n") == 1 and "tokens at block 6 are not cached" in err
    assert f"clipcache extract --store {store} --tokens-at 6" in err and "--no-extend" in err
    # the videos' files moved away: the same one-line answer, saying why
    moved = tmp_path / "moved"
    shutil.move(str(lay.video_root), moved)
    try:
        rc, out, err = invoke(["train", "--method", "ev_clip", "--store", store, "--out", tmp_path / "r2", *BUDGET])
    finally:
        shutil.move(str(moved), lay.video_root)
    assert rc == 2 and err.count("\n") == 1 and "clipcache extract --store" in err and "not where the store says" in err
    assert record_hashes(store) == before


def test_another_writer_at_work_does_not_stop_the_extension(ucf, tmp_path):
    """Stores take many writers at once: the command extends as its own writer, beside a job
    that holds its own lease, and that job's commits still land."""
    lay, base = ucf
    store = copy_store(base, tmp_path / "s.zarr")
    with open_store(store, "a", writer="other-job") as other:  # a writer job holds its own lease
        rc, out, err = invoke(["train", "--method", "ev_clip", "--store", store, "--out", tmp_path / "r", *BUDGET])
        assert rc == 0, err
        other.put_json("notes", "from-the-other-job", {"ok": True})
    assert len(tokens_of(store, 6)) == 24  # the training videos, as without the other writer
    with open_store(store) as s:
        assert s.get_json("notes", "from-the-other-job") == {"ok": True}


def test_eval_adds_missing_class_text(tmp_path, tiny_cfg):
    vids = tmp_path / "v"
    for i, c in enumerate(["jump", "jump", "wave", "wave"]):
        write_h264(vids / c / f"{i}.mp4", synth_frames(i, 8, 32, 32))
    store = tmp_path / "s.zarr"
    assert invoke(["extract", vids, "--store", store, "--model", tiny_cfg, "--pretrained", "random", "--frames", "2",
                   "--no-progress"])[0] == 0
    with open_store(store, "a") as s:  # as if the text of one class had never been encoded
        key = next(k for k, r in s.records("text").items() if r["name"] == "wave")
        s._uncommit("text", key)  # what verify --repair does to a damaged entry
    rc, out, err = invoke(["eval", "--store", store, "--protocol", "allway", "--no-extend"])
    assert rc == 2 and "no text embeddings for class 'wave'" in err and err.count("\n") == 1
    rc, out, err = invoke(["eval", "--store", store, "--protocol", "allway", "--json"])
    assert rc == 0 and "the text of 1 classes" in err, err
    assert json.loads(out.splitlines()[0])["coverage"]["all"]["used"] == 4


# Methods that train under all-way protocols by default and need no token block: a small store of
# the 4-block model keeps their backbone passes cheap. Every other method (and any new one) gets the
# episodic store: 16 classes (5 validation, 5 test, 6 training) of 6 clips (5-way 1-shot training
# episodes with 5 queries need 6 clips per class), with the 12-block model (EV-CLIP reads block 6).
SMALL_STORE_METHODS = {"zeroshot", "linear_probe", "ez_clip"}


@pytest.fixture(scope="module")
def method_stores(tmp_path_factory, deep_cfg, tiny_cfg):
    root = tmp_path_factory.mktemp("three")
    write_h264(root / "clip.mp4", synth_frames(4242, 8, 32, 32))
    made = {}

    def store(small: bool):
        if small not in made:
            classes, per, cfg = (4, 3, tiny_cfg) if small else (16, 6, deep_cfg)
            videos = root / f"videos_{classes}"
            for c in range(classes):
                for i in range(per):
                    write_h264(videos / f"action_{c:02d}" / f"{i}.mp4", synth_frames(100 * c + i, 8, 32, 32))
            path = root / f"s{classes}.zarr"
            rc, out, err = invoke(["extract", videos, "--store", path, "--model", cfg, "--pretrained", "random",
                                   "--frames", "2", "--no-progress"])
            assert rc == 0, err
            made[small] = path
        return made[small]

    return root, store


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_extract_train_query_for_every_method_with_its_defaults(method_stores, method, tmp_path):
    root, stores = method_stores
    store = stores(method in SMALL_STORE_METHODS)
    run = tmp_path / "run"
    rc, out, err = invoke(["train", "--method", method, "--store", store, "--out", run, *BUDGET])
    assert rc == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    rc, out, err = invoke(["query", root / "clip.mp4", "--run", run, "--top-k", "3", "--json"])
    assert rc == 0, err
    top = json.loads(out.splitlines()[0])["top"]
    assert len(top) == 3 and all(t["label"].startswith("action ") for t in top)
    assert os.path.isdir(run / "index")

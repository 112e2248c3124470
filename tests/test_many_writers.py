"""Many writers into one store at once (reliability.md §7.6): ``extract --shard I/N`` processes
started together give exactly one process's store, also when one of them is killed with SIGKILL
and run again; the status view per shard; ``--retry-failed`` per shard; two writers committing
the same videos resolve to one copy, ``verify`` reports the other and ``gc`` removes it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from cachekit.synth import SynthConfig, synth_dataset
from helpers import TINY_CFG, cli_command, cli_env, invoke, record_hashes
from clipcache.stores import open_store

COMMON = ["--model", str(TINY_CFG), "--pretrained", "random", "--frames", "4", "--tokens-at", "1",
          "--no-progress"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something appearing"),
                                   videos_per_class=4, frames=12, size=64, seed=5))
    return out


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> tuple[dict, dict]:
    """Record hashes (videos, text) of one uninterrupted single-process extraction."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    rc, out, err = invoke(["extract", str(clips / "videos.csv"), "--store", str(store), *COMMON])  # in this process
    assert rc == 0, err
    return record_hashes(store), record_hashes(store, "text")


def _start_shards(clips: Path, store: Path, n: int, extra: list[str] = ()) -> list[subprocess.Popen]:
    return [subprocess.Popen(cli_command(["extract", "videos.csv", "--store", str(store), *COMMON,
                                          "--shard", f"{i}/{n}", *extra]),
                             cwd=clips, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(n)]


def _assert_equal_to(store: Path, reference: tuple[dict, dict]) -> None:
    assert (record_hashes(store), record_hashes(store, "text")) == reference
    rc, out, err = invoke(["verify", str(store)])
    assert rc == 0 and "bad=0" in out, (out, err)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_three_shards_started_together_equal_one_process(clips, reference, tmp_path, suffix):
    store = tmp_path / f"s{suffix}"
    procs = _start_shards(clips, store, 3)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert sum(int(o.split(" extracted")[0].rsplit(" ", 1)[1]) for o, _ in outs) == 12
    _assert_equal_to(store, reference)
    if suffix == ".h5":  # the last shard to close published every shard's part
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.lock"]
    rc, out, err = invoke(["info", str(store), "--inputs", clips / "videos.csv", "--shards", "3", "--json"])
    assert rc == 0, err
    st = json.loads(out)
    assert st["totals"] == {"inputs": 12, "done": 12, "failed": 0, "pending": 0}
    assert sum(s["inputs"] for s in st["shards"]) == 12 and all(s["inputs"] for s in st["shards"])


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_kill_9_of_one_shard_the_others_go_on_and_its_rerun_resumes(clips, reference, tmp_path, suffix):
    store = tmp_path / f"s{suffix}"
    procs = _start_shards(clips, store, 3, ["--commit-every", "1"])
    victim = procs[1]
    # the commit records (HDF5: beside the published file, until the last writer publishes)
    seg_dir = (store if suffix == ".zarr" else tmp_path / "s.h5.parts") / "meta" / "log" / "videos"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if seg_dir.is_dir() and any(d.name.startswith("shard-1-of-3.") and any(d.glob("[0-9]*.json"))
                                    for d in seg_dir.iterdir()):
            break  # shard 1 committed its first video: kill it mid-run
        time.sleep(0.005)
    assert victim.poll() is None, "shard 1 finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    for p in (procs[0], procs[2]):  # the others go on and finish
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    with open_store(store) as s:  # what is visible is complete
        n = len(s.keys("videos"))
        assert s.verify("videos") == (n, [])
    rc, out, err = invoke(["info", str(store), "--inputs", clips / "videos.csv", "--shards", "3", "--json"])
    before = json.loads(out)["shards"][1]
    assert before["done"] >= 1 and before["done"] + before["pending"] == before["inputs"]
    rc, out, err = invoke(["extract", clips / "videos.csv", "--store", str(store), *COMMON, "--shard", "1/3",
                           "--commit-every", "1"])  # the same command again (in this process: quicker)
    assert rc == 0, err
    assert f"{before['done']} already cached" in out
    _assert_equal_to(store, reference)
    if suffix == ".h5":  # the rerun, closing alone, published the killed shard's part with the others
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.lock"]


def test_status_per_shard_and_retry_failed(clips, tmp_path, tiny_cfg):
    """A broken input is reported as failed in its shard; fixed and retried, it is done."""
    vids = tmp_path / "vids"
    shutil.copytree(clips / "videos", vids)
    broken = vids / "something_rising" / "broken.mp4"
    broken.write_bytes(b"not a video")
    store = tmp_path / "s.zarr"
    args = ["extract", str(vids), "--store", str(store), "--model", tiny_cfg, "--pretrained", "random",
            "--frames", "4", "--no-progress"]
    from cachekit.shards import shard_of_path

    mine = shard_of_path(str(broken), 2)
    rc, out, err = invoke([*args, "--shard", f"{mine}/2"])
    assert rc == 1 and "broken.mp4" in err  # one input failed: exit 1
    rc, out, err = invoke(["info", str(store), "--inputs", str(vids), "--shards", "2", "--json"])
    st = json.loads(out)
    assert st["shards"][mine]["failed"] == 1 and st["shards"][mine]["pending"] == 0
    assert st["shards"][1 - mine]["done"] == 0 and st["shards"][1 - mine]["pending"] == st["shards"][1 - mine]["inputs"]
    rc, out, err = invoke([*args, "--shard", f"{mine}/2", "--status"])
    assert rc == 0 and out.startswith(f"shard {mine}/2: ") and "1 failed, 0 pending" in out
    shutil.copyfile(next((vids / "something_falling").glob("*.mp4")), broken)  # fixed, same path
    broken.write_bytes(broken.read_bytes() + b"\0")  # new bytes: a new video, not a duplicate
    rc, out, err = invoke([*args, "--shard", f"{mine}/2"])
    assert rc == 1 and "1 skipped (failed before)" in out  # without --retry-failed: still skipped
    rc, out, err = invoke([*args, "--shard", f"{mine}/2", "--retry-failed"])
    assert rc == 0, err
    rc, out, err = invoke(["info", str(store), "--inputs", str(vids), "--shards", "2", "--json"])
    st = json.loads(out)
    assert st["shards"][mine]["failed"] == 0 and st["shards"][mine]["done"] == st["shards"][mine]["inputs"]
    with open_store(store) as s:
        assert s.json_keys("failed") == []


def test_two_writers_of_the_same_videos_one_copy_verify_reports_gc_removes(clips, tmp_path, tiny_cfg):
    """Two writers that both commit the same videos (overlapping shares, or a writer that listed
    the store before the other committed): readers take one copy by a fixed rule, verify reports
    the others, gc drops them."""
    store = tmp_path / "s.zarr"
    args = ["extract", str(clips / "videos" / "something_falling"), "--store", str(store), "--model", tiny_cfg,
            "--pretrained", "random", "--frames", "4", "--no-progress"]
    assert invoke([*args, "--writer", "b-second"])[0] == 0
    first = record_hashes(store)
    with open_store(store) as s:
        entries = [(k, s.read("videos", k), {f: v for f, v in r.items() if f not in ("arrays", "loc", "layout_version")})
                   for k, r in s.records("videos").items()]
    reader = open_store(store)  # opened before: its index names b-second's copies
    keys = [k for k, _, _ in entries]
    assert all(reader.read("videos", k)["emb"].any() for k in keys)
    with open_store(store, "a", writer="a-first") as s:  # the same videos, committed again
        s.commit_many("videos", entries)
    with open_store(store) as s:
        dups = s.duplicates("videos")
        assert len(dups) == 4 and all(rec.startswith("b-second.") for _, rec in dups)
        winners = {r["loc"]["emb"][0].split(".")[0] for r in s.records("videos").values()}
        assert winners == {"a-first"}  # the copy whose record name sorts first: a-first.* < b-second.*
    assert record_hashes(store) == first  # both copies hold the same bytes
    rc, out, err = invoke(["verify", str(store)])
    assert rc == 0 and "duplicates=4" in out and "verify --gc" in err and err.startswith("4 videos were committed")
    rc, out, err = invoke(["verify", str(store), "--gc"])
    assert rc == 0 and "removed=" in out
    with open_store(store) as s:
        assert s.duplicates("videos") == [] and s.verify("videos") == (4, [])
    # the reader opened before gc removed b-second's copies reads the visible copies, not zeros
    assert all(np.array_equal(reader.read("videos", k)["emb"], a["emb"]) for k, a, _ in entries)
    assert np.array_equal(reader.read_column("videos", "emb", keys), np.stack([a["emb"] for _, a, _ in entries]))
    reader.close()
    assert not any(d.name.startswith("b-second.") for d in (store / "seg" / "videos").iterdir())
    assert record_hashes(store) == first
    assert "4 already cached" in invoke([*args, "--writer", "c-third"])[1]  # resumes: all cached

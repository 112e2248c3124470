"""Split documents written by many writers (reliability.md 7.6): no writer's entries are lost
when writers finish together, shares merge in every report, and a store holds one fold of a
data set."""

from __future__ import annotations

import json
import threading

import pytest

from cachekit.coverage import coverage_lines, store_coverage
from cachekit.inputs import InputSet, VideoItem
from cachekit.splitdocs import COMPACT_AT, read_splits, record_splits
from clipcache.stores import open_store
from datasets_helpers import make_ucf101
from helpers import invoke


def _inputs(paths: list[str], split: str = "train", missing: list[str] | None = None) -> InputSet:
    out = InputSet(items=[VideoItem(p, "wave", split) for p in paths])
    if missing:
        out.missing[split] = missing
    return out


@pytest.mark.parametrize("backend", ["zarr", "h5"])
def test_writers_finishing_together_lose_no_split_entries(tmp_path, backend):
    """Eight writers record their splits at once, many times over (a read-merge-write of one shared
    document lost entries here); compaction keeps the documents few and every entry."""
    store = open_store(str(tmp_path / f"s.{backend}"), "a", attrs={})
    writers, rounds = 8, 6
    barrier = threading.Barrier(writers)

    def write(w: int) -> None:
        for r in range(rounds):
            barrier.wait()
            paths = [f"/v/{w}-{r}-{i}.mp4" for i in range(3)]
            record_splits(store, _inputs(paths, missing=[f"/gone/{w}-{r}.mp4"]), {p: f"k{w}{r}{p[-5]}" for p in paths},
                          writer=None if w % 2 else f"w{w}")  # plain runs (no id) and shards

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_splits(store)["train"]
    assert len(got["videos"]) == writers * rounds * 3
    assert len(got["missing"]) == writers * rounds
    assert len(store.json_keys("splits")) <= COMPACT_AT + writers
    store.close()


def test_shares_merge_in_coverage_and_a_found_video_is_no_longer_missing(tmp_path):
    with open_store(str(tmp_path / "s.zarr"), "a", attrs={}) as store:
        record_splits(store, _inputs(["/v/a.mp4"], missing=["/v/b.mp4"]), {"/v/a.mp4": "ka"}, writer="shard-0-of-2")
        record_splits(store, _inputs(["/v/b.mp4", "/v/c.mp4"]), {"/v/b.mp4": "kb", "/v/c.mp4": None},
                      writer="shard-1-of-2")
        store.put_json("failed", "kb", {"vkey": "kb", "path": "/v/b.mp4", "reason": "no frames"})
        cov = store_coverage(store, keys=["ka"])
    assert list(cov) == ["train"]  # one line per split, not one per writer's document
    # c could not be read (no key: not present), b failed to decode; neither is "not extracted yet"
    assert cov["train"] == {"listed": 3, "present": 2, "failed": 2, "pending": 0, "used": 1}
    with open_store(str(tmp_path / "s.zarr"), "a") as store:
        store.delete_json("failed", "kb")  # e.g. extract --retry-failed under way, or verify --repair
        cov = store_coverage(store, keys=["ka"])
    assert cov["train"] == {"listed": 3, "present": 2, "failed": 1, "pending": 1, "used": 1}
    assert coverage_lines(cov) == ["coverage train: 3 listed, 2 present (66.7%), 1 failed to decode, "
                                   "1 not extracted yet, 1 used"]
    with open_store(str(tmp_path / "n.zarr"), "a", attrs={}) as store:  # no split documents (loose files)
        store.put_json("failed", "x", {"vkey": None, "path": "/v/gone.mp4", "reason": "cannot read"})
        store.put_json("failed", "y", {"vkey": "ky", "path": "/v/bad.mp4", "reason": "no frames"})
        assert store_coverage(store, keys=["ka"])["all"] == {"listed": 3, "present": 2, "failed": 2, "pending": 0,
                                                             "used": 1}


def test_a_second_fold_into_one_store_is_refused_and_changes_nothing(tmp_path, tiny_cfg):
    lay = make_ucf101(tmp_path / "ucf")
    store = tmp_path / "ucf.zarr"
    common = ["--video-root", lay.video_root, "--store", store, "--model", tiny_cfg, "--pretrained", "random",
              "--frames", "2", "--no-progress"]
    rc, out, err = invoke(["extract", lay.lists["folder"], "--fold", "1", *common, "--json"])
    assert rc == 0, err
    before = json.loads(invoke(["info", store, "--json"])[1])
    rc, out, err = invoke(["extract", lay.lists["folder"], "--fold", "2", *common])
    assert rc == 2 and "holds ucf101 fold 1; these inputs are fold 2" in err and err.count("\n") == 1, err
    after = json.loads(invoke(["info", store, "--json"])[1])
    assert after["coverage"] == before["coverage"] and after["videos"] == before["videos"]
    rc, out, err = invoke(["extract", lay.lists["folder"], "--fold", "1", *common])  # the same fold again: fine
    assert rc == 0, err
    # info --inputs reads the inputs as extract did: --fold and --format are taken too
    status = ["info", store, "--inputs", lay.lists["folder"], "--video-root", lay.video_root, "--json"]
    totals = json.loads(invoke([*status, "--fold", "1", "--format", "ucf101"])[1])["totals"]
    assert totals["pending"] == 0 and totals["done"] == totals["inputs"] > 0, totals
    rc, out, err = invoke([*status, "--fold", "4"])
    assert rc == 2 and "fold 4" in err, err

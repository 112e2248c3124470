"""Crash and I/O-error sweeps over every write of an extraction (reliability.md T3, T4).

Every store write of a small Zarr extraction is numbered; for each point p the run is stopped
there (a crash: nothing after it is written) or fails there with ENOSPC, and then the same
extraction is run again. Checked each time: nothing half-written is visible before the re-run
(every committed entry verifies), and the re-run ends with exactly the reference content.
"""

from __future__ import annotations

import errno

import pytest
import zarr

import clipcache.stores.base
from cachekit.extract import ExtractConfig, extract
from cachekit.inputs import InputSet, VideoItem
from cachekit.video import SamplerConfig
from helpers import invoke, record_hashes, synth_frames, write_h264
from clipcache.stores import open_store


class Crash(BaseException):
    """Stands for the process dying at a write: not an Exception, so no handler swallows it."""


class WriteCounter:
    """Numbers every store write (zarr chunk/metadata sets, segment rows written in place, and
    commit/document files)."""

    def __init__(self, monkeypatch, fail_at: int | None = None, error: type | None = None):
        self.n, self.fail_at, self.error = 0, fail_at, error
        orig_set = zarr.storage.LocalStore.set
        orig_atomic = clipcache.stores.base.atomic_write_bytes

        async def set_(store, key, value, *a, **kw):
            self.hit(key)
            return await orig_set(store, key, value, *a, **kw)

        def atomic(path, data, durable=True):
            self.hit(str(path))
            return orig_atomic(path, data, durable)

        orig_at = clipcache.stores.base.write_rows_at

        def at(path, offset, data, size):
            if self.n + 1 == self.fail_at and self.error is Crash:  # dies mid-write: half the rows' bytes land
                half = memoryview(data).cast("B")
                orig_at(path, offset, half[:len(half) // 2], size)
            self.hit(str(path))
            return orig_at(path, offset, data, size)

        monkeypatch.setattr(zarr.storage.LocalStore, "set", set_)
        monkeypatch.setattr(clipcache.stores.base, "atomic_write_bytes", atomic)
        monkeypatch.setattr(clipcache.stores.base, "write_rows_at", at)

    def hit(self, what: str) -> None:
        self.n += 1
        if self.n == self.fail_at:
            if self.error is OSError:
                raise OSError(errno.ENOSPC, "No space left on device", what)
            raise Crash(what)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    return [write_h264(d / "a" / f"{i}.mp4", synth_frames(i, 10, 48, 64)) for i in range(2)]


def _run(enc, videos, store):
    items = InputSet(items=[VideoItem(str(p), "a") for p in videos])
    # one video per batch commit: the sweep covers creating the segment's arrays and appending to them
    cfg = ExtractConfig(sampler=SamplerConfig(frames=4), tokens_at=(1,), workers=1, commit_every=1)
    return extract(items, str(store), cfg, progress=False, enc=enc)


@pytest.mark.slow
@pytest.mark.parametrize("error", [Crash, OSError], ids=["crash", "enospc"])
def test_stop_at_every_write_then_rerun_equals_reference(tiny_encoder, videos, tmp_path, monkeypatch, error):
    _run(tiny_encoder, videos, tmp_path / "ref.zarr")
    reference = (record_hashes(tmp_path / "ref.zarr"), record_hashes(tmp_path / "ref.zarr", "text"))
    with monkeypatch.context() as mp:
        counter = WriteCounter(mp)
        _run(tiny_encoder, videos, tmp_path / "count.zarr")
    points = counter.n
    assert points >= 20  # segment arrays, their resizes, batch commit records, text
    half_visible = mismatched = 0
    for p in range(1, points + 1):
        store = tmp_path / f"p{p}.zarr"
        with monkeypatch.context() as mp:
            WriteCounter(mp, fail_at=p, error=error)
            with pytest.raises(error):
                _run(tiny_encoder, videos, store)
        if (store / "zarr.json").exists():
            with open_store(store) as s:  # what a reader sees right after the failure
                checked, bad = s.verify("videos")
                half_visible += len(bad)
        _run(tiny_encoder, videos, store)  # the same command again
        mismatched += (record_hashes(store), record_hashes(store, "text")) != reference
    assert (half_visible, mismatched) == (0, 0), f"points={points}"


@pytest.mark.slow
def test_disk_full_is_one_line_and_exit_2(tiny_cfg, videos, tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    WriteCounter(monkeypatch, fail_at=8, error=OSError)
    rc, out, err = invoke(["extract", *map(str, videos), "--store", str(store), "--model", tiny_cfg,
                           "--pretrained", "random", "--frames", "4", "--no-progress"])
    assert rc == 2 and err.startswith("error:") and "No space left on device" in err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("where", ["copy", "publish"])
def test_hdf5_crash_during_merge_loses_nothing(tmp_path, monkeypatch, where):
    """A writer dying while it merges its part into STORE.h5 (copying, or at the rename that
    publishes) leaves the old file or the parts, never a torn STORE.h5; the next writer
    publishes everything and removes the stale temp file (reliability.md T9)."""
    import numpy as np

    import clipcache.stores.hdf5_store as h5s

    path = tmp_path / "s.h5"
    attrs = {"cache_key": {"k": 1}}
    with open_store(path, "a", attrs=attrs) as s:  # a published file with one entry
        s.commit("videos", "k0", {"emb": np.zeros((1, 2, 3), np.float32)}, {})
    published = path.read_bytes()
    s = open_store(path, "a")
    for i in range(1, 4):
        s.commit("videos", f"k{i}", {"emb": np.full((1, 2, 3), i, np.float32)}, {})
    with monkeypatch.context() as mp:
        if where == "publish":
            def crash(*a, **kw):
                raise Crash("os.replace")

            mp.setattr(h5s.os, "replace", crash)  # the merge's first rename is its publish
        else:
            def crash_copy(self, *a, **kw):
                raise Crash("copy")

            import h5py

            mp.setattr(h5py.Group, "copy", crash_copy)
        with pytest.raises(Crash):
            s.close()
    assert path.read_bytes() == published  # never torn: still the old file
    with open_store(path) as r:  # readers already see the committed part entries
        assert r.keys("videos") == ["k0", "k1", "k2", "k3"]
        assert r.verify("videos") == (4, [])
    with open_store(path, "a"):  # the next writer publishes them
        pass
    assert not list(tmp_path.glob("s.h5.tmp-*")) and not (tmp_path / "s.h5.parts").exists()
    with open_store(path) as r:
        assert r.keys("videos") == ["k0", "k1", "k2", "k3"]
        assert float(r.read("videos", "k3")["emb"].max()) == 3.0

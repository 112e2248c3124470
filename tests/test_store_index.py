"""The compacted index of commit records (stores/log.py): opening a store reads index parts, not
one record per commit; parts stay exact under many writers, drops and crashes; a lost part costs
only time. Real Zarr stores (local and memory://); the part sizes are made small to exercise the
merges quickly."""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import pytest

import clipcache.stores.log as slog
from clipcache.stores import open_store
from helpers import entry_arrays

ATTRS = {"cache_key": {"k": 1}}


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(slog, "PART_EVERY", 4)
    monkeypatch.setattr(slog, "PART_MERGE", 3)


@pytest.fixture(params=["local", "memory"])
def path(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "s.zarr")
        return
    import fsspec

    url = f"memory://index-{uuid.uuid4().hex}/s.zarr"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(root.rsplit("/", 1)[0], recursive=True)


class Reads:
    """Counts single commit records and index parts read while opening a store."""

    def __init__(self, monkeypatch):
        self.records = self.parts = 0
        rec, part = slog.CommitLog.record_doc, slog.PartReader.__init__

        def record_doc(log, segment, seq):
            doc = rec(log, segment, seq)
            self.records += doc is not None
            return doc

        def part_init(reader, *a, **kw):
            self.parts += 1
            return part(reader, *a, **kw)

        monkeypatch.setattr(slog.CommitLog, "record_doc", record_doc)
        monkeypatch.setattr(slog.PartReader, "__init__", part_init)


def _write(path, writer, keys, close=True):
    s = open_store(path, "a", attrs=ATTRS, writer=writer)
    for k in keys:
        s.commit("videos", f"{k:04d}", entry_arrays(k), {"k": k})
    if close:
        s.close()
    return s


def test_opening_reads_parts_not_one_record_per_commit(small_parts, path, monkeypatch):
    _write(path, "w", range(30))  # 30 records: parts of 4, merged by 3 into 12, a final part
    reads = Reads(monkeypatch)
    with open_store(path) as s:
        assert s.keys("videos") == [f"{k:04d}" for k in range(30)]
        assert s.verify("videos") == (30, [])
        assert s.record("videos", "0029")["k"] == 29
    assert reads.records == 0 and 1 <= reads.parts <= 5, (reads.records, reads.parts)


def test_a_crashed_writer_costs_at_most_a_part_of_single_records(small_parts, path, monkeypatch):
    s = _write(path, "w", range(11), close=False)  # never closed: no final part (as after kill -9)
    reads = Reads(monkeypatch)
    with open_store(path) as r:
        assert r.keys("videos") == [f"{k:04d}" for k in range(11)]
    assert reads.records == 11 % 4  # the records after the last part
    s._writers.clear()  # the "crashed" writer never seals
    s._lease.release()


def test_many_writers_parts_and_drops_stay_exact(small_parts, path):
    """Two writers interleave (each compacting its own records), one uncommits an entry of the
    other (a drop, compacted later into its own part): readers see exactly the live entries."""
    a = open_store(path, "a", attrs=ATTRS, writer="a")
    b = open_store(path, "a", writer="b")
    for i in range(20):
        (a if i % 2 else b).commit("videos", f"{i:04d}", entry_arrays(i), {"k": i})
    a._uncommit("videos", "0004")  # b's entry, dropped by a's record
    for i in range(20, 30):
        a.commit("videos", f"{i:04d}", entry_arrays(i), {"k": i})
    for s in (a, b):
        s.close()
    want = [f"{i:04d}" for i in range(30) if i != 4]
    with open_store(path) as s:
        assert s.keys("videos") == want and s.verify("videos") == (29, [])
        assert np.array_equal(s.read_column("videos", "emb", want),
                              np.stack([entry_arrays(int(k))["emb"] for k in want]))
    with open_store(path, "a", writer="b") as s:  # the redo of the dropped entry
        s.commit("videos", "0004", entry_arrays(4), {"k": 4})
    with open_store(path) as s:
        assert s.keys("videos") == [f"{i:04d}" for i in range(30)] and s.duplicates("videos") == []


def test_a_lost_part_costs_only_time(small_parts, path):
    _write(path, "w", range(13))
    with open_store(path) as s:
        before = s.records("videos")
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    parts = f"{root}/{slog.PARTS}/videos"
    assert fs.ls(parts)
    fs.rm(parts, recursive=True)
    with open_store(path) as s:
        assert s.records("videos") == before


def test_records_and_parts_agree_field_by_field(small_parts, path):
    """A record read from a part equals the one read from its single record file."""
    s = _write(path, "w", range(6), close=False)
    with open_store(path) as r:  # records 4, 5 single; 0-3 from a part
        from_mixed = r.records("videos")
    s.close()
    with open_store(path) as r:  # everything from parts
        assert r.records("videos") == from_mixed
        assert r.field("videos", "k") == list(range(6))
        assert r.array_shapes("videos")["emb"] == [(2, 4, 8)] * 6


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "int32", "int64", "uint8", "bool"])
def test_segment_array_metadata_is_what_zarr_writes(dtype):
    """The writer writes segment arrays' zarr.json and chunk files itself: the same bytes zarr
    writes (read back through zarr in every contract test)."""
    import json

    import zarr

    from clipcache.stores.zarr_store import CAPACITY, _array_meta

    mem = zarr.storage.MemoryStore()
    zarr.create_array(mem, name="a", shape=(CAPACITY, 3, 2), chunks=(7, 3, 2), dtype=dtype, fill_value=0,
                      compressors=None)
    assert json.loads(_array_meta((3, 2), np.dtype(dtype).str, 7)) == json.loads(mem._store_dict["a/zarr.json"].to_bytes())


def test_read_column_sparse_across_many_chunks(path):
    """Keys spread thinly over many chunks of a segment (big rows: 8 rows per 1 MB chunk) read
    chunk by chunk, whatever the array's nominal capacity (zarr's orthogonal indexing would size
    work by it)."""
    with open_store(path, "a", attrs=ATTRS, writer="w") as s:
        for b in range(0, 120, 40):
            s.commit_many("videos", [(f"{i:04d}", {"big": np.full((1 << 15,), i, np.float32)}, {})
                                     for i in range(b, b + 40)])
    with open_store(path) as s:
        for keys in ([f"{i:04d}" for i in range(0, 120, 11)], [f"{i:04d}" for i in (117, 3, 64, 3)]):
            col = s.read_column("videos", "big", keys)
            assert col.shape == (len(keys), 1 << 15)
            assert np.array_equal(col[:, 0], [int(k) for k in keys]) and np.array_equal(col[:, -1], col[:, 0])


def test_read_column_of_most_rows_reads_in_bounded_pieces(path, monkeypatch):
    """Most rows of a span, out of order, with repeats (a training run's train and val videos of
    a big store): read in pieces of about SPAN_BYTES (here two chunks), each row where asked."""
    import clipcache.stores.zarr_store as zs

    with open_store(path, "a", attrs=ATTRS, writer="w") as s:
        s.commit_many("videos", [(f"{i:04d}", {"big": np.full((1 << 15,), i, np.float32)}, {}) for i in range(120)])
    spans = []
    read_rows = zs.ZarrStore._read_rows

    def spy(self, group, apath, z, lo, hi, out):
        spans.append(hi - lo)
        return read_rows(self, group, apath, z, lo, hi, out)

    monkeypatch.setattr(zs, "SPAN_BYTES", 2 << 20)  # 16 rows of 128 KiB
    monkeypatch.setattr(zs.ZarrStore, "_read_rows", spy)
    want = [i for i in range(119, -1, -1) if i % 5] + [7, 7]
    with open_store(path) as s:
        col = s.read_column("videos", "big", [f"{i:04d}" for i in want])
    assert np.array_equal(col[:, 0], want) and np.array_equal(col[:, -1], col[:, 0])
    assert len(spans) >= 120 // 16 and max(spans) <= 16, spans


def test_verify_reads_columns_and_judges_each_entry(monkeypatch, tmp_path):
    """verify reads each array in blocks (a few read_column calls, not one read per entry), still
    names exactly the bad entries: a changed row among good ones, a block cut by a small
    VERIFY_BLOCK, and a lost segment array (its block unreadable: checked entry by entry)."""
    import shutil

    import clipcache.stores.logstore as logstore

    path = str(tmp_path / "v.zarr")
    _write(path, "a", range(0, 20))
    _write(path, "b", range(20, 30))  # a second writer: its own segments
    monkeypatch.setattr(logstore, "VERIFY_BLOCK", 1000)  # several blocks per array
    reads = {"column": 0, "entry": 0}
    from clipcache.stores.zarr_store import ZarrStore

    col, one = ZarrStore.read_column, ZarrStore.read

    def read_column(self, *a, **k):
        reads["column"] += 1
        return col(self, *a, **k)

    whole = Counter()  # key -> times read whole

    def read(self, group, key, *a, **k):
        reads["entry"] += 1
        whole[key] += 1
        return one(self, group, key, *a, **k)

    monkeypatch.setattr(ZarrStore, "read_column", read_column)
    monkeypatch.setattr(ZarrStore, "read", read)
    with open_store(path) as s:
        assert s.verify("videos") == (30, [])
        assert reads["entry"] == 0 and 4 <= reads["column"] < 30 * 4, reads
        apath, row = s.locate("videos", "0007", "emb")
        lost, _ = s.locate("videos", "0025", "tokens")
    import zarr

    z = zarr.open_array(zarr.storage.LocalStore(path), path=f"seg/videos/{apath}", mode="r+")
    z[row, 0, 0, 0] = z[row, 0, 0, 0] + 1  # decodes fine, another value
    shutil.rmtree(tmp_path / "v.zarr" / "seg" / "videos" / lost)  # writer b's tokens are gone
    with open_store(path) as s:
        reads["entry"] = 0
        assert s.verify("videos") == (30, ["0007", *[f"{k:04d}" for k in range(20, 30)]])
        assert 10 <= reads["entry"] < 30, reads  # writer b's unreadable blocks, entry by entry
    emb, _ = s.locate("videos", "0025", "emb")
    shutil.rmtree(tmp_path / "v.zarr" / "seg" / "videos" / emb)  # and its embeddings: two arrays unreadable
    with open_store(path) as s:
        whole.clear()
        assert s.verify("videos") == (30, ["0007", *[f"{k:04d}" for k in range(20, 30)]])
    assert {f"{k:04d}" for k in range(20, 30)} <= set(whole), whole  # the unreadable blocks' entries ...
    assert max(whole.values()) == 1, whole  # ... each read whole once, not once per unreadable array

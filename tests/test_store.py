"""The feature-store contract (reliability.md §7, style.md practice 8), run against both backends.

One test class, subclassed per backend: Zarr (``x.zarr``), HDF5 (``x.h5``) and Zarr at an fsspec URL
(``memory://``, the in-memory file system that stands in for s3:// or gs://). Real files, real
zarr and h5py, real processes for locking and crashes; nothing is mocked except, inside a child
process only, the commit-record write that the child dies at.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, entry_arrays
from clipcache.stores import (
    LAYOUT_VERSION,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreReadOnly,
    array_sha256,
    open_store,
    store_exists,
)

ATTRS = {"cache_key": {"model": "tiny", "frames": 4}, "model_info": {"width": 8}}
TESTS = Path(__file__).resolve().parent


def key(i: int) -> str:
    return f"{i:04d}"


def assert_same_arrays(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for n, a in want.items():
        assert got[n].dtype == a.dtype, n
        assert got[n].shape == a.shape, n
        assert np.array_equal(got[n], a), n


def child(code: str, *args: str, **popen) -> subprocess.Popen:
    """A Python child process that imports ``stores`` and the test helpers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_child(code: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    p = child(code, *args)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def test_an_archive_url_is_refused_in_one_line(tmp_path):
    """zip:// and tar:// cannot replace a file atomically or hold per-writer files (reliability 7.8)."""
    for url in (f"zip://{tmp_path}/s.zip", "tar://x.zarr"):
        for call in (lambda: open_store(url, "a", attrs=ATTRS), lambda: open_store(url), lambda: store_exists(url)):
            with pytest.raises(StoreError, match="cannot live inside an archive"):
                call()


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path):
    """A write that fails half way (a full disk) removes its temp file: nothing is left to hold the space."""
    from clipcache.stores.base import atomic_write_bytes

    target = tmp_path / "run" / "model.safetensors"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]  # fails in the write, the temp file made
    assert [p.name for p in target.parent.iterdir()] == ["model.safetensors"] and target.read_bytes() == b"old"


class StoreContract:
    """Every backend must pass these. Subclasses set ``suffix`` and how to corrupt bytes on disk.

    ``not_applicable`` maps a contract test that cannot apply to a backend to the reason; that
    test is skipped for that backend alone, with the reason, and every other one runs.
    """

    suffix = ""
    not_applicable: dict[str, str] = {}

    @pytest.fixture(autouse=True)
    def _applicable(self, request):
        reason = self.not_applicable.get(request.node.originalname)
        if reason:
            pytest.skip(reason)

    @pytest.fixture
    def path(self, tmp_path) -> str:
        return str(tmp_path / f"x{self.suffix}")

    def corrupt(self, path: str, key: str, name: str) -> None:
        """Overwrite the on-disk bytes of one committed array (store closed)."""
        raise NotImplementedError

    def write(self, path: str, n: int, start: int = 0, **kw) -> dict[str, dict]:
        want = {}
        with open_store(path, "a", attrs=ATTRS) as s:
            for i in range(start, start + n):
                want[key(i)] = entry_arrays(i, **kw)
                s.commit("videos", key(i), want[key(i)], {"i": i})
        return want

    # --------------------------------------------------------------------- round trip
    def test_round_trip_bit_identical_with_sha256_records(self, path):
        arrays = entry_arrays(7)
        with open_store(path, "a", attrs=ATTRS) as s:
            rec = s.commit("videos", "k7", arrays, {"path": "/v/7.mp4", "label": "jump"})
            assert s.has("videos", "k7") and not s.has("videos", "k8")
            assert_same_arrays(s.read("videos", "k7"), arrays)  # the writer reads its own entry
        assert store_exists(path)
        with open_store(path, "r") as s:
            assert_same_arrays(s.read("videos", "k7"), arrays)
            assert s.read("videos", "k7", ["emb"]).keys() == {"emb"}
            got = s.record("videos", "k7")
            # backends may add bookkeeping (HDF5: which part file, dropped when published)
            assert {k: v for k, v in got.items() if k in rec} == {k: rec[k] for k in got if k in rec}
            assert got["arrays"] == rec["arrays"]
            assert got["path"] == "/v/7.mp4" and got["label"] == "jump"
            assert got["layout_version"] == LAYOUT_VERSION
            for n, a in arrays.items():
                assert got["arrays"][n] == {"shape": list(a.shape), "dtype": a.dtype.str,
                                            "sha256": array_sha256(a)}
            with pytest.raises(StoreError, match="no array"):
                s.read("videos", "k7", ["nope"])
            with pytest.raises(StoreError, match="not in store"):
                s.read("videos", "k8")

    def test_keys_sorted_and_per_group(self, path):
        with open_store(path, "a", attrs=ATTRS) as s:
            for k in ("c", "a", "b"):
                s.commit("videos", k, entry_arrays(ord(k)), {})
            s.commit("text", "z", {"emb": np.ones((3, 8), np.float32)}, {"name": "z"})
            assert s.keys("videos") == ["a", "b", "c"]
        with open_store(path, "r") as s:
            assert s.keys("videos") == ["a", "b", "c"]
            assert s.keys("text") == ["z"]
            assert s.keys("nothing") == []
            assert sorted(s.records("videos")) == ["a", "b", "c"]

    # --------------------------------------------------------------------- modes, attrs
    def test_read_only_refuses_writes(self, path):
        self.write(path, 1)
        with open_store(path, "r") as s:
            with pytest.raises(StoreReadOnly):
                s.commit("videos", key(5), entry_arrays(5), {})
            with pytest.raises(StoreReadOnly):
                s.put_json("failed", "x", {"reason": "r"})
            with pytest.raises(StoreReadOnly):
                s.delete_json("failed", "x")
            with pytest.raises(StoreReadOnly):
                s.finalize()
        with open_store(path, "r") as s:
            assert s.keys("videos") == [key(0)]

    def test_open_errors(self, path, tmp_path):
        with pytest.raises(StoreNotFound):
            open_store(path, "r")
        assert not store_exists(path)
        with pytest.raises(StoreError, match="mode"):
            open_store(path, "w")
        with pytest.raises(StoreError, match="attrs"):
            open_store(path, "r", attrs=ATTRS)
        with pytest.raises(StoreNotFound):  # no attrs: nothing to create the store with
            open_store(path, "a")
        assert not store_exists(path)

    def test_reopen_persists_and_appends(self, path):
        want = self.write(path, 2)
        with open_store(path, "a", attrs=ATTRS) as s:
            s.put_json("failed", "bad1", {"reason": "truncated"})
        want.update(self.write(path, 1, start=2))
        with open_store(path, "r") as s:
            assert s.keys("videos") == sorted(want)
            for k, a in want.items():
                assert_same_arrays(s.read("videos", k), a)
            assert s.get_json("failed", "bad1") == {"reason": "truncated"}

    def test_attrs_written_once_at_creation(self, path):
        with open_store(path, "a", attrs=ATTRS) as s:
            assert s.attrs == {"layout_version": LAYOUT_VERSION, **ATTRS}
        with open_store(path, "a", attrs={"cache_key": {"other": 1}}) as s:  # existing: not replaced
            assert s.attrs["cache_key"] == ATTRS["cache_key"]
        with open_store(path, "r") as s:
            assert s.attrs == {"layout_version": LAYOUT_VERSION, **ATTRS}
            s.attrs["cache_key"] = "mutated copy"
            assert s.attrs["cache_key"] == ATTRS["cache_key"]

    def test_attr_updates_of_writers_open_together_are_both_kept(self, path):
        """Two runs extending one store at once (--tokens-at and --pixels): each update is made
        from the attributes as stored then, so neither loses the other's (the key said only one)."""
        a, b = open_store(path, "a", attrs=ATTRS, writer="wa"), open_store(path, "a", attrs=ATTRS, writer="wb")
        try:  # both opened before either update: their attrs are as at open
            a.update_attrs(lambda cur: {**cur, "cache_key": {**cur["cache_key"], "tokens_at": [1]}})
            b.update_attrs(lambda cur: {**cur, "cache_key": {**cur["cache_key"], "pixels": True}})
        finally:
            a.close()
            b.close()
        with open_store(path, "r") as s:
            assert s.attrs["cache_key"] == {**ATTRS["cache_key"], "tokens_at": [1], "pixels": True}
            assert s.attrs["layout_version"] == LAYOUT_VERSION

    # --------------------------------------------------------------------- json documents
    def test_json_documents(self, path):
        with open_store(path, "a", attrs=ATTRS) as s:
            assert s.get_json("failed", "a") is None
            s.put_json("failed", "b", {"reason": "empty file", "n": [1, 2]})
            s.put_json("failed", "a", {"reason": "truncated"})
            s.put_json("splits", "train", {"videos": {}, "missing": ["x.mp4"]})
            assert s.json_keys("failed") == ["a", "b"]
            s.put_json("failed", "a", {"reason": "replaced"})
            assert s.get_json("failed", "a") == {"reason": "replaced"}
            s.delete_json("failed", "b")
            s.delete_json("failed", "never-there")  # no error
            assert s.json_keys("failed") == ["a"]
            with pytest.raises(StoreError, match="invalid entry key"):
                s.put_json("failed", "a/b", {})
            assert s.keys("failed") == []  # documents are not entries
        with open_store(path, "r") as s:
            assert s.json_items("failed") == {"a": {"reason": "replaced"}}
            assert s.get_json("splits", "train") == {"videos": {}, "missing": ["x.mp4"]}
            assert s.json_keys("nothing") == []

    # --------------------------------------------------------------------- verify
    def test_verify_finds_corrupted_entry_and_repair_uncommits_it(self, path):
        want = self.write(path, 3)
        with open_store(path, "r") as s:
            assert s.verify("videos") == (3, [])
        self.corrupt(path, key(1), "emb")
        with open_store(path, "r") as s:
            checked, bad = s.verify("videos")
            assert (checked, bad) == (3, [key(1)])
            assert_same_arrays(s.read("videos", key(0)), want[key(0)])
        with open_store(path, "a", attrs=ATTRS) as s:
            assert s.verify("videos", repair=True) == (3, [key(1)])
            assert s.keys("videos") == [key(0), key(2)]
        with open_store(path, "r") as s:
            assert s.keys("videos") == [key(0), key(2)]
            assert not s.has("videos", key(1))
        self.write(path, 1, start=1)  # the writer redoes it
        with open_store(path, "r") as s:
            assert s.verify("videos") == (3, [])
            assert_same_arrays(s.read("videos", key(1)), want[key(1)])

    def test_verify_checks_the_arrays_read_gives_of_a_packed_store(self, path):
        """A store whose creator packs its videos (as extract does): the bytes :meth:`read`
        returns are hashed too, not only the column :meth:`read_column` reads (HDF5 keeps both,
        apart); a damaged entry is bad, ``read_verified`` refuses it, ``--repair`` uncommits it."""
        want = {key(i): entry_arrays(i) for i in range(3)}
        with open_store(path, "a", attrs=ATTRS, packable=("videos",)) as s:
            s.commit_many("videos", [(k, a, {}) for k, a in want.items()])
        self.corrupt(path, key(1), "emb")
        with open_store(path, "r") as s:
            assert not np.array_equal(s.read("videos", key(1))["emb"], want[key(1)]["emb"])  # what a reader gets
            assert s.verify("videos") == (3, [key(1)])
            with pytest.raises(StoreCorrupt, match=r"videos/0001 .*emb"):
                s.read_verified("videos", key(1))
            assert_same_arrays(s.read_verified("videos", key(1), ["tokens"]), {"tokens": want[key(1)]["tokens"]})
            assert_same_arrays(s.read_verified("videos", key(0)), want[key(0)])
        with open_store(path, "a") as s:
            assert s.verify("videos", repair=True) == (3, [key(1)])
        with open_store(path, "r") as s:
            assert s.keys("videos") == [key(0), key(2)] and s.verify("videos") == (2, [])
            assert_same_arrays(s.read("videos", key(2)), want[key(2)])

    # --------------------------------------------------------------------- crash safety
    def test_uncommitted_data_is_invisible(self, path):
        """A writer dies (os._exit) after writing a video's arrays, before its commit record."""
        code = """
            import os, sys
            from helpers import entry_arrays
            from clipcache.stores import open_store
            from clipcache.stores.log import SegmentWriter
            s = open_store(sys.argv[1], "a", attrs={"cache_key": {"model": "tiny", "frames": 4},
                                                    "model_info": {"width": 8}})
            s.commit("videos", "0000", entry_arrays(0), {"i": 0})
            def die_before_commit(self, entries, drops=()):
                os._exit(137)  # arrays are written; the record never is
            SegmentWriter.commit = die_before_commit
            s.commit("videos", "0001", entry_arrays(1), {"i": 1})
            print("committed after all")
        """
        rc, out, err = run_child(code, path)
        assert rc == 137, err
        assert "committed after all" not in out
        self.assert_arrays_on_disk(path, "0001")  # the data is there: the test is meaningful
        with open_store(path, "r") as s:
            assert s.keys("videos") == ["0000"]
            assert not s.has("videos", "0001") and s.record("videos", "0001") is None
            with pytest.raises(StoreError):
                s.read("videos", "0001")
            assert_same_arrays(s.read("videos", "0000"), entry_arrays(0))
        with open_store(path, "a", attrs=ATTRS) as s:  # redo the lost video
            assert s.keys("videos") == ["0000"]
            s.commit("videos", "0001", entry_arrays(1), {"i": 1})
        with open_store(path, "r") as s:
            assert s.keys("videos") == ["0000", "0001"]
            assert s.verify("videos") == (2, [])
            assert_same_arrays(s.read("videos", "0001"), entry_arrays(1))

    def assert_arrays_on_disk(self, path: str, key: str) -> None:
        raise NotImplementedError

    def test_a_second_writer_with_the_same_id_is_refused_other_ids_write_along(self, path):
        """Each writer holds only its own lease: the same id twice is refused (one line naming
        the holder), another id writes into the same store at the same time, readers see both."""
        code = """
            import sys
            from helpers import entry_arrays
            from clipcache.stores import StoreLocked, open_store
            try:
                open_store(sys.argv[1], "a", attrs={"cache_key": {}}, writer="w1")
            except StoreLocked as err:
                print("LOCKED", err)
            else:
                print("OPENED")
            with open_store(sys.argv[1], "a", writer="w2") as s:
                s.commit("videos", "0001", entry_arrays(1), {"by": "w2"})
            with open_store(sys.argv[1], "r") as s:  # readers are never blocked
                print("READER", ",".join(s.keys("videos")))
        """
        with open_store(path, "a", attrs=ATTRS, writer="w1") as s:
            s.commit("videos", key(0), entry_arrays(0), {})
            rc, out, err = run_child(code, path)
            assert rc == 0, err
            lines = out.splitlines()
            assert len(lines) == 2, out
            assert lines[0].startswith("LOCKED ") and f"pid {os.getpid()}" in lines[0] and "w1" in lines[0]
            assert lines[1] == f"READER {key(0)},{key(1)}"
            with pytest.raises(StoreLocked) as exc:  # a second handle in this process too
                open_store(path, "a", writer="w1")
            assert "\n" not in str(exc.value)
            assert s.keys("videos") == [key(0), key(1)]  # the writer sees the other writer's entry
            s.commit("videos", key(2), entry_arrays(2), {})
        with open_store(path, "a", writer="w1") as s:  # released on close
            assert s.keys("videos") == [key(0), key(1), key(2)]
        with open_store(path, "r") as s:
            assert s.verify("videos") == (3, [])
            assert s.record("videos", key(1))["by"] == "w2"

    def test_kill_9_mid_write_leaves_only_complete_entries(self, path):
        """SIGKILL a writer that commits 1 MB entries in a loop, twice; reopen; finish; verify."""
        code = """
            import sys
            from helpers import entry_arrays
            from clipcache.stores import open_store
            s = open_store(sys.argv[1], "a", attrs={"cache_key": {"model": "tiny", "frames": 4},
                                                    "model_info": {"width": 8}}, writer="soak")
            i = int(sys.argv[2])
            while True:
                s.commit("videos", f"{i:04d}", entry_arrays(i, blob=1 << 18), {"i": i})
                print(f"{i:04d}", flush=True)
                i += 1
        """
        printed: list[str] = []
        rng = np.random.default_rng(0)
        for _round in range(2):
            start = len(printed) + 1  # +1: the entry in flight at the kill may have committed
            p = child(code, path, str(start))
            try:
                for _ in range(3):  # at least 3 commits in this round
                    line = p.stdout.readline().strip()
                    assert line, p.stderr.read()
                    printed.append(line)
                time.sleep(float(rng.uniform(0, 0.03)))
            finally:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
            assert p.returncode == -signal.SIGKILL
            # lines the child printed (after their commits) while we slept are still in the pipe
            printed += [ln.strip() for ln in p.stdout.read().splitlines() if ln.strip()]
            with open_store(path, "r") as s:
                keys = s.keys("videos")
                assert set(printed) <= set(keys)
                assert len(keys) - len(set(printed)) <= _round + 1  # at most one unprinted per kill
                assert s.verify("videos") == (len(keys), [])
                for k in keys:
                    assert_same_arrays(s.read("videos", k), entry_arrays(int(k), blob=1 << 18))
        with open_store(path, "a", attrs=ATTRS, writer="soak") as s:  # the dead writer's lease is free again
            s.commit("videos", "9999", entry_arrays(9999), {})
            final = s.keys("videos")
        with open_store(path, "r") as s:
            assert s.keys("videos") == final and "9999" in final
            assert s.verify("videos") == (len(final), [])

    # --------------------------------------------------------------------- many writers
    def test_writers_with_their_own_ids_write_at_once(self, path):
        """Three writers hold the store open together and interleave their batches; each
        sees the others' entries, and a reader sees all of them, complete."""
        want = {}
        writers = [open_store(path, "a", attrs=ATTRS, writer=f"w{i}") for i in range(3)]
        try:
            for rnd in range(3):
                for w, s in enumerate(writers):
                    batch = [(key(100 * w + 10 * rnd + j), entry_arrays(100 * w + 10 * rnd + j), {"w": w})
                             for j in range(2)]
                    s.commit_many("videos", batch)
                    want.update({k: a for k, a, _ in batch})
            for s in writers:
                assert s.keys("videos") == sorted(want)
            assert set(writers[0].live_writers()) >= {"w0", "w1", "w2"}
        finally:
            for s in writers:
                s.close()
        with open_store(path, "r") as s:
            assert s.keys("videos") == sorted(want)
            assert s.verify("videos") == (18, []) and s.duplicates("videos") == []
            for k, a in want.items():
                assert_same_arrays(s.read("videos", k), a)
            assert np.array_equal(s.read_column("videos", "emb", sorted(want)),
                                  np.stack([want[k]["emb"] for k in sorted(want)]))

    @pytest.mark.parametrize("order", ["ab", "ba"])
    def test_a_key_committed_by_two_writers_resolves_by_a_fixed_rule(self, path, order):
        """Both copies are valid; readers take the one whose commit record sorts first (writer
        ``a`` here, whichever committed first), duplicates() names the other, gc removes it."""
        both = {"a": open_store(path, "a", attrs=ATTRS, writer="a"), "b": open_store(path, "a", writer="b")}
        try:
            for w in order:
                both[w].commit_many("videos", [(key(1), entry_arrays(1), {"by": w}),
                                               (key(2 if w == "a" else 3), entry_arrays(2 if w == "a" else 3), {"by": w})])
            for s in both.values():
                assert s.record("videos", key(1))["by"] == "a"
            with open_store(path, "r") as s:  # a reader while both writers are alive
                assert s.keys("videos") == [key(1), key(2), key(3)]
                assert s.record("videos", key(1))["by"] == "a"
                (dup,) = s.duplicates("videos")
                assert dup[0] == key(1) and dup[1].startswith("b.")
                assert s.verify("videos") == (3, [])
                assert_same_arrays(s.read("videos", key(1)), entry_arrays(1))
        finally:
            for s in both.values():
                s.close()
        with open_store(path, "r") as s:  # (HDF5: the last writer to close published the winners only)
            assert s.record("videos", key(1))["by"] == "a"
        with open_store(path, "a", writer="maint") as s:
            s.gc()
        with open_store(path, "r") as s:
            assert s.duplicates("videos") == [] and s.record("videos", key(1))["by"] == "a"
            assert s.keys("videos") == [key(1), key(2), key(3)] and s.verify("videos") == (3, [])

    def test_a_killed_writer_loses_only_its_batch_in_flight_others_go_on(self, path):
        """Two writer processes commit in a loop; one is killed with SIGKILL: the other keeps
        committing, and the killed one's rerun (same writer id) takes its lease back and resumes."""
        code = """
            import sys
            from helpers import entry_arrays
            from clipcache.stores import open_store
            s = open_store(sys.argv[1], "a", attrs={"cache_key": {"model": "tiny", "frames": 4},
                                                    "model_info": {"width": 8}}, writer=sys.argv[2])
            start, stop = int(sys.argv[3]), int(sys.argv[4])
            done = set(s.keys("videos"))
            for i in range(start, stop):
                if f"{i:04d}" not in done:
                    s.commit("videos", f"{i:04d}", entry_arrays(i, blob=1 << 16), {"i": i})
                    print(f"{i:04d}", flush=True)
            s.close()
            print("done", flush=True)
        """
        victim = child(code, path, "victim", "0", "400")
        assert victim.stdout.readline().strip() == "0000"  # the victim has committed
        other = child(code, path, "other", "1000", "1040")
        assert other.stdout.readline().strip() == "1000"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        out, err = other.communicate(timeout=120)  # the other writer goes on to the end
        assert other.returncode == 0 and out.splitlines()[-1] == "done", err
        with open_store(path, "r") as s:
            keys = s.keys("videos")
            assert {key(i) for i in range(1000, 1040)} <= set(keys)
            assert s.verify("videos") == (len(keys), [])
        rerun = child(code, path, "victim", "0", "60")  # the same writer id again: resumes
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0 and out.splitlines()[-1] == "done", err
        with open_store(path, "r") as s:
            keys = s.keys("videos")
            assert set(keys) >= {key(i) for i in range(60)} | {key(i) for i in range(1000, 1040)}
            assert s.verify("videos") == (len(keys), []) and s.duplicates("videos") == []
            for k in (key(0), key(59), key(1039)):
                assert_same_arrays(s.read("videos", k), entry_arrays(int(k), blob=1 << 16))

    # --------------------------------------------------------------------- packed columns
    def test_finalize_then_read_column_equals_stacking(self, path):
        open_store(path, "a", attrs=ATTRS, packable=("videos",)).close()  # HDF5 packs this group
        want = self.write(path, 5)
        keys = sorted(want)

        def stacked(s, name, ks):
            return np.stack([s.read("videos", k, [name])[name] for k in ks])

        with open_store(path, "a", attrs=ATTRS) as s:
            s.finalize()
            for name in ("emb", "frame_idx", "tokens", "n"):
                for ks in (keys, keys[1:3], [keys[3], keys[0]], [keys[4]]):
                    col = s.read_column("videos", name, ks)
                    assert col.dtype == want[keys[0]][name].dtype
                    assert np.array_equal(col, stacked(s, name, ks)), (name, ks)
            s.commit("videos", key(5), entry_arrays(5), {})  # packed copy is now stale
            ks = [key(5), *keys]
            assert np.array_equal(s.read_column("videos", "emb", ks), stacked(s, "emb", ks))
            with pytest.raises(StoreError):
                s.read_column("videos", "emb", [])
        with open_store(path, "r") as s:
            ks = s.keys("videos")
            assert len(ks) == 6
            for name in ("emb", "frame_idx"):
                assert np.array_equal(s.read_column("videos", name, ks[::-1]), stacked(s, name, ks[::-1]))


class TestZarrStore(StoreContract):
    suffix = ".zarr"

    def corrupt(self, path, key, name):
        """Flip the bytes of the entry's row inside its chunk (chunks are stored uncompressed)."""
        import zarr

        with open_store(path, "r") as s:
            apath, row = s.locate("videos", key, name)
        z = zarr.open_array(zarr.storage.LocalStore(path), path=f"seg/videos/{apath}", mode="r")
        chunk = Path(path, "seg", "videos", apath, "c", str(row // z.chunks[0]),
                     *["0"] * (z.ndim - 1))
        assert chunk.is_file(), chunk
        data = bytearray(chunk.read_bytes())
        row_bytes = int(np.prod(z.shape[1:])) * z.dtype.itemsize
        start = (row % z.chunks[0]) * row_bytes
        for i in range(start, start + row_bytes, 7):
            data[i] ^= 0xA5
        chunk.write_bytes(bytes(data))

    def assert_arrays_on_disk(self, path, key):
        import zarr

        (arr,) = (Path(path) / "seg" / "videos").glob("*/emb.*")  # the dead writer appended its row 1
        z = zarr.open_array(zarr.storage.LocalStore(path), path=str(arr.relative_to(path)), mode="r")
        assert np.array_equal(z[int(key)], entry_arrays(int(key))["emb"])

    def test_a_damaged_index_part_is_read_from_the_records_it_covers(self, path):
        """Index parts only save time: one cut short (or garbled) is replaced by the commit records
        it covers, where opening the store was a JSONDecodeError traceback."""
        want = self.write(path, 3)
        parts = [p for p in Path(path, "meta", "index").rglob("*") if p.is_file()]
        assert parts
        for i, part in enumerate(parts):
            part.write_bytes(part.read_bytes()[:30] if i % 2 == 0 else b"CCIX" + b"\xff" * 40)
        with open_store(path, "r") as s:
            assert s.keys("videos") == sorted(want)
            for k, a in want.items():
                assert_same_arrays(s.read("videos", k), a)
            assert s.verify("videos") == (3, [])

    def test_a_damaged_chunk_is_one_line_not_a_reshape_traceback(self, path):
        """A chunk file cut short (bytes lost): reading it is a StoreError that says what to run."""
        self.write(path, 2)
        with open_store(path, "r") as s:
            apath, row = s.locate("videos", key(1), "emb")
        for f in [p for p in Path(path, "seg", "videos", apath, "c").rglob("*") if p.is_file()]:
            f.write_bytes(f.read_bytes()[:25])
        with open_store(path, "r") as s:
            for read in (lambda: s.read("videos", key(1)), lambda: s.read_column("videos", "emb", [key(0), key(1)])):
                with pytest.raises(StoreError, match="damaged .*clipcache verify --repair") as err:
                    read()
                assert "\n" not in str(err.value)
            assert s.verify("videos")[1] == [key(0), key(1)]

    def test_valid_but_replaced_data_is_detected(self, path):
        """Data rewritten in place through zarr (decodes fine, other values) fails the sha256."""
        import zarr

        self.write(path, 2)
        with open_store(path, "r") as s:
            apath, row = s.locate("videos", key(1), "emb")
        z = zarr.open_array(zarr.storage.LocalStore(path), path=f"seg/videos/{apath}", mode="r+")
        z[row, 0, 0, 0] = z[row, 0, 0, 0] + 1
        with open_store(path, "r") as s:
            assert s.verify("videos") == (2, [key(1)])

    def test_arrays_written_without_a_record_do_not_exist(self, path):
        import zarr

        self.write(path, 1)
        zarr.create_array(zarr.storage.LocalStore(path), name="seg/videos/ghost/emb.0", data=np.ones((2, 3)))
        with open_store(path, "a", attrs=ATTRS) as s:
            assert s.keys("videos") == [key(0)] and not s.has("videos", "ghost")
            assert s.gc() >= 1  # the writer may delete uncommitted leftovers
            assert not (Path(path) / "seg" / "videos" / "ghost").exists()
            assert s.keys("videos") == [key(0)]
            assert_same_arrays(s.read("videos", key(0)), entry_arrays(0))

    def test_batch_commit_files_grow_with_batches_not_entries(self, path):
        """100 entries in 4 batches: one record per batch, a handful of files per array."""
        with open_store(path, "a", attrs=ATTRS) as s:
            for b in range(4):
                s.commit_many("videos", [(key(i), entry_arrays(i), {"i": i}) for i in range(25 * b, 25 * b + 25)])
            files = s.layout_stats()["files"]
        (seg,) = os.listdir(Path(path) / "meta" / "log" / "videos")
        assert len(os.listdir(Path(path) / "meta" / "log" / "videos" / seg)) == 4
        assert files < 40, files  # not 100 entries x 4 arrays
        with open_store(path, "r") as s:
            assert s.verify("videos") == (100, [])
            ks = s.keys("videos")
            col = s.read_column("videos", "emb", ks[::-3])
            assert np.array_equal(col, np.stack([entry_arrays(int(k))["emb"] for k in ks[::-3]]))

    def test_a_batch_is_visible_whole_or_not_at_all(self, path):
        """A writer killed after its batch's arrays, before the record: none of the batch is seen."""
        code = """
            import os, sys
            from helpers import entry_arrays
            from clipcache.stores import open_store
            from clipcache.stores.log import SegmentWriter
            s = open_store(sys.argv[1], "a", attrs={"cache_key": {}})
            s.commit_many("videos", [(f"{i:04d}", entry_arrays(i), {}) for i in range(3)])
            def die(self, entries, drops=()):
                os._exit(137)
            SegmentWriter.commit = die
            s.commit_many("videos", [(f"{i:04d}", entry_arrays(i), {}) for i in range(3, 6)])
        """
        rc, out, err = run_child(code, path)
        assert rc == 137, err
        with open_store(path, "r") as s:
            assert s.keys("videos") == [key(i) for i in range(3)]
            assert s.verify("videos") == (3, [])
        with open_store(path, "a") as s:  # the resume writes a new segment
            s.commit_many("videos", [(key(i), entry_arrays(i), {}) for i in range(3, 6)])
        with open_store(path, "r") as s:
            assert s.verify("videos") == (6, [])
            for i in range(6):
                assert_same_arrays(s.read("videos", key(i)), entry_arrays(i))

    def test_file_url_is_the_same_local_store(self, path):
        """``file://`` goes to the local store (zarr's LocalStore: atomic chunk writes), not
        fsspec's local FS: the handle names the plain path, and it keeps what only a local store
        keeps (orphan temp files of interrupted writes are collected)."""
        with open_store(f"file://{path}", "a", attrs=ATTRS) as s:
            s.commit("videos", key(0), entry_arrays(0), {})
            assert s.path == path
            orphan = Path(path, "meta", "interrupted.json.partial")
            orphan.write_bytes(b"{")
            assert s.gc() >= 1 and not orphan.exists()
        with open_store(path, "r") as s:
            assert_same_arrays(s.read("videos", key(0)), entry_arrays(0))
        assert not list(Path(path).rglob("*.partial"))


class TestHDF5Store(StoreContract):
    suffix = ".h5"

    def corrupt(self, path, key, name):
        import h5py

        with h5py.File(path, "r") as f:  # the published file (the store is closed)
            ds = f[f"videos/{key}/{name}"]
            offset, size = ds.id.get_offset(), ds.id.get_storage_size()
        assert offset is not None and size > 0
        with open(path, "r+b") as fh:
            fh.seek(offset)
            data = bytearray(fh.read(size))
            for i in range(0, len(data), 7):
                data[i] ^= 0xA5
            fh.seek(offset)
            fh.write(bytes(data))

    def assert_arrays_on_disk(self, path, key):
        import h5py

        parts = sorted(Path(f"{path}.parts", "parts").glob("*.h5"))
        assert parts
        found = False
        for p in parts:
            with h5py.File(p, "r", locking=False) as f:  # videos/<key>/<record seq>/<array>
                found |= f"videos/{key}" in f and any("emb" in g for g in f[f"videos/{key}"].values())
        assert found

    def test_verify_checks_the_packed_column_too(self, path):
        """The packed column is a second copy: damage there alone (each entry's own datasets
        intact) is what read_column gives, so verify names the entry; --repair uncommits it, and
        the next publish packs the column again from the entries left."""
        import h5py

        want = {key(i): entry_arrays(i) for i in range(3)}
        with open_store(path, "a", attrs=ATTRS, packable=("videos",)) as s:
            s.commit_many("videos", [(k, a, {}) for k, a in want.items()])
        assert self.packed(path)["videos"] == ["emb", "frame_idx", "n", "tokens"]
        with h5py.File(path, "r") as f:
            ds = f["packed/videos/emb"]
            row = ds.id.get_storage_size() // ds.shape[0]
            offset = ds.id.get_offset() + 2 * row  # key(2)'s row
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(bytes(b ^ 0xA5 for b in fh.read(8)))
        with open_store(path, "r") as s:
            assert_same_arrays(s.read("videos", key(2)), want[key(2)])
            assert not np.array_equal(s.read_column("videos", "emb", [key(2)])[0], want[key(2)]["emb"])
            assert s.verify("videos") == (3, [key(2)])
        with open_store(path, "a") as s:
            assert s.verify("videos", repair=True) == (3, [key(2)])
        with open_store(path, "r") as s:
            assert s.verify("videos") == (2, [])
            assert np.array_equal(s.read_column("videos", "emb", [key(0), key(1)]),
                                  np.stack([want[key(0)]["emb"], want[key(1)]["emb"]]))

    def test_verify_reads_each_copy_once_a_block_at_a_time(self, path, monkeypatch):
        """Cost: verify reads each entry's datasets and the packed columns a block at a time
        (the packed rows spanned, not the whole column per block), and opens no entry one by one."""
        import clipcache.stores.logstore as logstore
        from clipcache.stores.hdf5_store import HDF5Store

        with open_store(path, "a", attrs=ATTRS, packable=("videos",)) as s:
            s.commit_many("videos", [(key(i), entry_arrays(i), {}) for i in range(12)])
        monkeypatch.setattr(logstore, "VERIFY_BLOCK", 300)  # emb rows are 256 bytes: a block a row; n's 8: one block
        rows, reads = [], []
        packed, one = HDF5Store._packed_rows, HDF5Store.read

        def spy_packed(self, group, name, keys):
            out = packed(self, group, name, keys)
            rows.append((name, 0 if out is None else len(out)))
            return out

        def spy_read(self, *a, **k):
            reads.append(a)
            return one(self, *a, **k)

        monkeypatch.setattr(HDF5Store, "_packed_rows", spy_packed)
        monkeypatch.setattr(HDF5Store, "read", spy_read)
        with open_store(path, "r") as s:
            assert s.verify("videos") == (12, [])
        assert reads == [], reads
        assert [len_ for n, len_ in rows if n == "emb"] == [1] * 12, rows  # a block a row
        assert sum(len_ for _, len_ in rows) == 12 * 4, rows  # each packed row once

    def test_a_batch_the_disk_cannot_hold_is_refused_before_hdf5_writes_it(self, path, monkeypatch):
        """HDF5 cannot recover from a write that fails half way (a full disk crashed the process at
        the next flush): the free space is checked first, and a store without room is not published."""
        import shutil as sh

        from clipcache.stores import hdf5_store

        want = self.write(path, 2)
        room = {"free": 10**12}
        monkeypatch.setattr(hdf5_store.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 0, room["free"]))
        s = open_store(path, "a", writer="w2")
        room["free"] = 1 << 20
        with pytest.raises(OSError, match="MB free") as err:
            s.commit("videos", key(5), entry_arrays(5), {})
        assert err.value.errno == errno.ENOSPC
        s.close()  # no room to publish either: the parts stay, readable
        with open_store(path, "r") as r:
            assert r.keys("videos") == sorted(want) and r.verify("videos") == (2, [])
        room["free"] = 10**12
        with open_store(path, "a", writer="w3") as s:
            s.commit("videos", key(5), entry_arrays(5), {})
        with open_store(path, "r") as r:
            assert r.verify("videos") == (3, [])

    def test_a_dead_writers_unreadable_part_is_redone_not_counted_as_cached(self, path, tmp_path):
        """A crash (or a full disk) can leave a dead writer's part file unreadable: the next writer
        uncommits its entries, so a rerun redoes them. They counted as cached, then the publish
        dropped them, and the run said every video was in the store."""
        w = open_store(path, "a", attrs=ATTRS, writer="w1")
        w.commit_many("videos", [(key(i), entry_arrays(i), {}) for i in range(3)])
        crashed = str(tmp_path / "crashed.h5")  # the same files, without w1's live lease: a dead writer
        shutil.copytree(f"{path}.parts", f"{crashed}.parts")
        w.close()
        (part,) = Path(f"{crashed}.parts", "parts").glob("*.h5")
        part.write_bytes(part.read_bytes()[:5000])
        with open_store(crashed, "a", writer="w2") as s:
            assert s.keys("videos") == []  # nothing the rerun would skip as cached
            s.commit_many("videos", [(key(i), entry_arrays(i), {}) for i in range(3)])  # the rerun redoes them
        with open_store(crashed, "r") as s:
            assert s.keys("videos") == [key(i) for i in range(3)] and s.verify("videos") == (3, [])

    def test_a_reader_opened_before_the_publish_reads_on(self, path):
        """The last writer's close merges the part files into the published file and removes
        them: a reader opened before (train, eval) reads the entries from there, where every
        read failed with 'No such file'."""
        w = open_store(path, "a", attrs=ATTRS, writer="w1")
        want = {key(i): entry_arrays(i) for i in range(3)}
        w.commit_many("videos", [(k, a, {}) for k, a in want.items()])
        r = open_store(path, "r")
        try:
            assert_same_arrays(r.read("videos", key(1)), want[key(1)])
            w.close()
            assert not Path(f"{path}.parts").exists()
            for k, a in want.items():
                assert_same_arrays(r.read("videos", k), a)
            assert np.array_equal(r.read_column("videos", "emb", sorted(want)),
                                  np.stack([want[k]["emb"] for k in sorted(want)]))
            assert r.verify("videos") == (3, [])
        finally:
            w.close()
            r.close()

    def test_published_file_is_never_left_half_written(self, path):
        """Closing publishes by rename: only the final file and no temp files remain."""
        self.write(path, 2)
        names = sorted(p.name for p in Path(path).parent.iterdir())
        assert names == ["x.h5", "x.h5.lock"]

    @staticmethod
    def packed(path) -> dict[str, list[str]]:
        """Group -> the array names packed into columns in the published file."""
        import h5py

        with h5py.File(path, "r") as f:
            return {g: sorted(f["packed"][g]) for g in f["packed"]} if "packed" in f else {}

    def test_packs_the_groups_its_creator_names_and_remembers_them(self, path):
        """The creator names the packable groups; later writers that name none (verify, extend,
        the ranks of a job) publish with the same choice; other groups are never packed."""
        with open_store(path, "a", attrs=ATTRS, packable=("clips",)) as s:
            s.commit("other", key(0), entry_arrays(0), {})
        assert self.packed(path) == {}  # no clips yet
        with open_store(path, "a") as s:
            s.commit("clips", key(0), entry_arrays(0), {})
            s.commit("other", key(1), entry_arrays(1), {})
        assert self.packed(path) == {"clips": ["emb", "frame_idx", "n", "tokens"]}
        with open_store(path, "a") as s:
            s.commit("clips", key(1), entry_arrays(1), {})
        assert self.packed(path) == {"clips": ["emb", "frame_idx", "n", "tokens"]}
        with open_store(path, "r") as s:
            assert np.array_equal(s.read_column("clips", "emb", [key(1), key(0)]),
                                  np.stack([entry_arrays(1)["emb"], entry_arrays(0)["emb"]]))
        plain = str(Path(path).with_name("plain.h5"))
        self.write(plain, 2)  # packable not named: nothing packed, columns read entry by entry
        assert self.packed(plain) == {}
        with open_store(plain, "r") as s:
            assert np.array_equal(s.read_column("videos", "n", [key(1), key(0)]), np.array([1, 0]))

    def test_a_store_written_by_the_code_before_packable_opens_and_packs_as_before(self, tmp_path):
        """tests/assets/hdf5-store-38767d1.h5 was written by clipcache at commit 38767d1 (the
        ``videos`` group packed because the store layer knew that name): 4 ``videos`` entries
        (``entry_arrays(i)``, record ``{"i", "label"}``), one ``text`` entry, one document. It
        reads the same, and a writer that names no packable groups still packs ``videos``."""
        import shutil

        path = str(tmp_path / "old.h5")
        shutil.copy(TESTS / "assets" / "hdf5-store-38767d1.h5", path)
        ks = [key(i) for i in range(4)]
        with open_store(path, "r") as s:
            assert s.attrs == {"layout_version": LAYOUT_VERSION, **ATTRS}
            assert s.keys("videos") == ks and s.keys("text") == ["t0"]
            for i, k in enumerate(ks):
                assert_same_arrays(s.read("videos", k), entry_arrays(i))
                assert s.record("videos", k)["label"] == ("jump" if i % 2 else "wave")
            assert np.array_equal(s.read("text", "t0")["emb"], np.arange(8, dtype=np.float32))
            assert s.get_json("splits", "train") == {"videos": {"a.mp4": ["0000", "wave"]}, "missing": []}
            assert np.array_equal(s.read_column("videos", "tokens", ks[::-1]),
                                  np.stack([entry_arrays(i)["tokens"] for i in range(3, -1, -1)]))
            assert s.verify("videos") == (4, []) and s.verify("text") == (1, [])
        assert self.packed(path) == {"videos": ["emb", "frame_idx", "n", "tokens"]}
        with open_store(path, "a") as s:  # as `verify --repair` or a rank of a job opens it
            s.commit("videos", key(4), entry_arrays(4), {"i": 4})
            s.commit("text", "t1", {"emb": np.ones(8, np.float32)}, {})
        assert self.packed(path) == {"videos": ["emb", "frame_idx", "n", "tokens"]}
        with open_store(path, "r") as s:
            ks = s.keys("videos")
            assert ks == [key(i) for i in range(5)]
            assert np.array_equal(s.read_column("videos", "emb", ks),
                                  np.stack([entry_arrays(i)["emb"] for i in range(5)]))


MEMORY_ONE_PROCESS = ("fsspec's memory:// file system lives inside one process: a child process cannot "
                      "write into (or lock) this store")


class TestMemoryZarrStore(StoreContract):
    """The Zarr store at an fsspec URL (``memory://``): the code path of s3:// and gs:// stores
    (zarr's FsspecStore, records and lease through the same fs). The memory file system is
    process-global, so every test gets its own bucket, removed afterwards."""

    suffix = ".zarr"
    not_applicable = {
        "test_uncommitted_data_is_invisible": MEMORY_ONE_PROCESS,
        "test_a_second_writer_with_the_same_id_is_refused_other_ids_write_along": MEMORY_ONE_PROCESS
        + " (the URL store's lease against a second writer: tests/test_remote_store.py)",
        "test_kill_9_mid_write_leaves_only_complete_entries": MEMORY_ONE_PROCESS,
        "test_a_killed_writer_loses_only_its_batch_in_flight_others_go_on": MEMORY_ONE_PROCESS
        + " (a second process against a real object store: tests/test_s3.py)",
    }

    @pytest.fixture
    def path(self):
        import uuid

        import fsspec

        url = f"memory://contract-{uuid.uuid4().hex}/x{self.suffix}"
        yield url
        fs, root = fsspec.core.url_to_fs(url)
        bucket = root.rsplit("/", 1)[0]
        if fs.exists(bucket):
            fs.rm(bucket, recursive=True)

    def corrupt(self, path, key, name):
        """Flip the bytes of the entry's row inside its chunk object (chunks are stored uncompressed)."""
        import json

        import fsspec

        with open_store(path, "r") as s:
            apath, row = s.locate("videos", key, name)
        fs, root = fsspec.core.url_to_fs(path)
        base = f"{root}/seg/videos/{apath}"
        meta = json.loads(fs.cat_file(f"{base}/zarr.json"))
        shape, chunk0 = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        chunk = "/".join([base, "c", str(row // chunk0), *["0"] * (len(shape) - 1)])
        assert fs.exists(chunk), chunk
        data = bytearray(fs.cat_file(chunk))
        row_bytes = int(np.prod(shape[1:])) * np.dtype(meta["data_type"]).itemsize
        start = (row % chunk0) * row_bytes
        for i in range(start, start + row_bytes, 7):
            data[i] ^= 0xA5
        fs.pipe_file(chunk, bytes(data))

    def test_store_is_in_memory_not_on_disk(self, path, tmp_path):
        """The URL really reaches the memory file system (no local directory named like it)."""
        import fsspec

        self.write(path, 1)
        fs, root = fsspec.core.url_to_fs(path)
        assert type(fs).__name__ == "MemoryFileSystem" and fs.exists(f"{root}/zarr.json")
        assert not Path(root).exists() and not Path(path).exists()
        with open_store(path, "r") as s:
            assert s.keys("videos") == [key(0)]

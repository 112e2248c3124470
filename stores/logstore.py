"""What the backends share: many writers, their commit log, and the index of visible entries.

A writable handle is one *writer*: it holds its own lease (``meta/writers/<id>``), appends its
own segments and commit records (:mod:`.log`), and never touches another writer's. The
store-wide lock is taken only to create the store, change its attributes, or run ``gc``.
Readers never lock. See :mod:`.log` for how a key committed twice resolves, and reliability.md
§7.6 for the design.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from .base import FeatureStore, Files, StoreError, array_sha256
from .leases import StoreLock, WriterLease, check_writer_id, default_writer_id, live_writers
from .log import CommitLog, GroupIndex, Resolved, Rows, SegmentWriter, new_segment, rows_from_docs, segment_writer

log = logging.getLogger(__name__)

#: rows a writer keeps in its in-memory index after its own commits; past this it drops the
#: index and reloads it when asked (a writer's memory must not grow with the store)
PENDING_LIMIT = 65536

#: bytes of one array that :meth:`LogStore.verify` reads at a time
VERIFY_BLOCK = 64 << 20


class LogStore(FeatureStore):
    """Base of the Zarr and HDF5 stores: leases, the commit log and the resolved index."""

    def _init_log(self, files: Files, lock_path=None) -> None:
        self._files = files
        self._logs: dict[str, CommitLog] = {}
        self._index: dict[str, GroupIndex] = {}
        self._writers: dict[str, SegmentWriter] = {}
        self._lock = StoreLock(files, self.path, local_path=lock_path)
        self.writer: str | None = None
        self._lease: WriterLease | None = None

    def _register(self, writer: str | None) -> None:
        """Take this handle's writer lease (the caller holds the store lock)."""
        self.writer = check_writer_id(writer) if writer else default_writer_id()
        lease = WriterLease(self._files, self.writer, f"store {self.path}")
        lease.acquire()
        self._lease = lease

    # ----------------------------------------------------------------- index
    def _log(self, group: str) -> CommitLog:
        lg = self._logs.get(group)
        if lg is None:
            lg = self._logs[group] = CommitLog(self._files, group)
        return lg

    def _base_rows(self, group: str) -> list[Rows]:
        """Entries that live outside the log (HDF5's published file)."""
        return []

    def _group(self, group: str, refresh: bool = False) -> GroupIndex:
        idx = self._index.get(group)
        if idx is None:
            idx = self._index[group] = GroupIndex()
            for rows in self._base_rows(group):
                idx.add(rows)
            refresh = True
        if refresh:
            for rows in self._log(group).scan():
                idx.add(rows)
        return idx

    def _resolved(self, group: str, refresh: bool = True) -> Resolved:
        return self._group(group, refresh).resolved

    def keys(self, group: str) -> list[str]:
        return list(self._resolved(group).key_list())

    def record(self, group: str, key: str) -> dict | None:
        idx = self._group(group)
        rec = idx.lookup(key)
        if rec is None:
            rec = self._group(group, refresh=True).lookup(key)
        return rec

    def records(self, group: str) -> dict[str, dict]:
        r = self._resolved(group)
        return {k: r.record(i) for i, k in enumerate(r.key_list())}

    def _aligned(self, group: str, keys: list[str] | None) -> tuple[Resolved, np.ndarray | None]:
        """The resolved index, and the positions of ``keys`` in it (None: every key, in order)."""
        if keys is None:
            return self._resolved(group), None
        if not keys:
            return self._resolved(group, refresh=False), np.zeros(0, np.int64)
        r = self._resolved(group, refresh=False)
        if len(keys) == len(r) and keys == r.key_list():  # the usual case: every key, as keys() gave them
            return r, None
        return self._locate(group, keys, "")

    def field(self, group: str, name: str, keys: list[str] | None = None) -> list:
        r, pos = self._aligned(group, keys)
        vals = r.field(name)
        return vals if pos is None else [vals[i] for i in pos.tolist()]

    def array_shapes(self, group: str, keys: list[str] | None = None) -> dict[str, list]:
        r, pos = self._aligned(group, keys)
        out = {}
        table = [tuple(s) for s, _d in r.raw.sigs]
        for a, (sig, _path, _row, _src) in r.arrays.items():
            col = sig if pos is None else sig[pos]
            out[a] = [table[s] if s >= 0 else None for s in col.tolist()]
        return out

    def duplicates(self, group: str) -> list[tuple[str, str]]:
        return list(self._resolved(group, refresh=False).duplicates)

    def _column_copies(self, group: str, name: str) -> list[Callable[[list[str]], np.ndarray | None]]:
        """Every stored copy of array ``name`` that a reader can be given, each as a function of
        keys -> their rows ``[n, *shape]`` (None: that copy does not hold these keys), for
        :meth:`_bad_keys` to hash them all. Here one: :meth:`read` and :meth:`read_column` read
        the same segment rows. HDF5 also has the packed columns it publishes."""
        return [lambda keys: self.read_column(group, name, keys)]

    def _bad_keys(self, group: str) -> tuple[int, list[str]]:
        """:meth:`FeatureStore.verify`'s check, column by column: each array's rows of one shape
        and dtype are read in blocks of about :data:`VERIFY_BLOCK` bytes, from every copy of
        :meth:`_column_copies`, and hashed row by row against the index's sha256; an entry is bad
        when any copy differs. Entry by entry, a million videos took longer than 500 s; a block
        that cannot be read is checked entry by entry.

        Cost: every copy of every array is read once (Zarr: the segment rows; HDF5: each entry's
        own datasets, plus the packed columns readers are given, so about twice their bytes)."""
        r = self._resolved(group)
        keys = r.key_list()
        bad = np.zeros(len(keys), bool)
        whole: set[int] = set()  # entries already checked whole (every array): once, not once per array
        for name, (sig, _path, _row, src) in r.arrays.items():
            sha = r.raw.sha(name)  # [raw rows, 32] uint8
            copies = self._column_copies(group, name)
            for s in np.unique(sig[sig >= 0]).tolist():
                idx = np.flatnonzero(sig == s)
                shape, dtype = r.raw.sigs[s]
                step = max(1, VERIFY_BLOCK // max(1, np.dtype(dtype).itemsize * int(np.prod(shape))))
                for a in range(0, idx.size, step):
                    blk = idx[a:a + step].tolist()
                    for copy in copies:
                        try:
                            col = copy([keys[i] for i in blk])  # [n, *shape]
                        except Exception:  # noqa: BLE001 - unreadable here: each entry decides for itself
                            for i in set(blk) - whole:
                                whole.add(i)
                                bad[i] |= not self._entry_ok(group, keys[i])
                            break  # _entry_ok checked every copy of these entries
                        if col is None:
                            continue
                        for j, i in enumerate(blk):
                            bad[i] |= array_sha256(col[j]) != sha[src[i]].tobytes().hex()
        return len(keys), [keys[i] for i in np.flatnonzero(bad).tolist()]

    def _locate(self, group: str, keys: list[str], name: str) -> tuple[Resolved, np.ndarray]:
        """The resolved index and the positions of ``keys`` in it (every key must be there)."""
        if not keys:
            raise StoreError(f"no entries to read {group}/{name} from")
        r = self._resolved(group, refresh=False)
        pos = r.find(keys)
        if (pos < 0).any():
            r = self._resolved(group)
            pos = r.find(keys)
        if (pos < 0).any():
            raise StoreError(f"{group}/{keys[int(np.flatnonzero(pos < 0)[0])]} is not in store {self.path}")
        return r, pos

    # ----------------------------------------------------------------- writing
    def _segment_writer(self, group: str) -> SegmentWriter:
        sw = self._writers.get(group)
        if sw is None:
            sw = self._writers[group] = SegmentWriter(self._log(group), new_segment(self.writer), self.writer)
        return sw

    def _commit_entries(self, group: str, sw: SegmentWriter, entries: dict[str, dict],
                        drops: list[tuple[str, str]] = ()) -> str:
        """Write the record of ``entries`` (the commit point), and keep the in-memory index current."""
        if self._lease is not None:
            self._lease.check()
        name = sw.commit(entries, list(drops))
        idx = self._index.get(group)
        if idx is not None:
            if idx.rows + len(entries) > PENDING_LIMIT and idx.rows > PENDING_LIMIT // 2:
                self._index.pop(group)  # reloaded from the log when next asked
                self._logs.pop(group, None)
            else:
                doc = {"entries": entries, "drops": [list(d) for d in drops]}
                idx.add(rows_from_docs([(name, doc)]))
                self._log(group).next_seq[sw.segment] = sw.seq
        return name

    def _uncommit(self, group: str, key: str) -> None:
        """Drop every live copy of ``key`` (and its extensions): a record of drops, so that a
        rerun of the writer redoes the entry from scratch."""
        self._check_writable()
        copies = self._resolved(group).copies(key)
        if copies:
            self._commit_entries(group, self._segment_writer(group), {}, [(key, n) for n in copies])

    def drop_duplicates(self, group: str, live: set[str]) -> int:
        """Drop the losing copies of keys committed twice, except those of live writers."""
        self._check_writable()
        dups = [(k, n) for k, n in self.duplicates(group) if segment_writer(n.split("/", 1)[0]) not in live]
        if dups:
            self._commit_entries(group, self._segment_writer(group), {}, dups)
        return len(dups)

    def live_writers(self) -> dict[str, dict]:
        """Writer id -> who holds it, for every writer of this store alive now (this one too)."""
        return live_writers(self._files)

    def _close_writers(self) -> None:
        """Seal this writer's segments (final index parts), then let its lease go."""
        try:
            for sw in self._writers.values():
                sw.close()
        finally:
            self._writers = {}
            if self._lease is not None:
                self._lease.release()
                self._lease = None


def entry_doc(rec: dict, loc: dict[str, Any], extends: bool) -> dict:
    out = dict(rec)
    out["loc"] = loc
    if extends:
        out["extends"] = True
    return out


def groups_of(files: Files, *dirs: str) -> list[str]:
    """Group names found under any of ``dirs`` (log, segments, legacy records)."""
    out: set[str] = set()
    for d in dirs:
        out.update(n for n in files.list(d) if not n.endswith(".json"))
    return sorted(out)

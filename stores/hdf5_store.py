"""HDF5 backend (a store path ending ``.h5``): write-once part files, published by atomic rename.

A killed HDF5 writer can leave its whole file unreadable (``reliability.md`` §0), so the
published file ``STORE.h5`` is never opened for writing. Each writer session writes its entries
into its own part file ``STORE.h5.parts/parts/<segment>.h5`` (flushed once per batch), then the
batch's commit record as a JSON file outside HDF5 (the log of :mod:`.log`, under
``STORE.h5.parts/meta``). Readers see the published entries plus every committed part entry.

Many writers at once: each holds its own lease and writes its own part and records, as with
Zarr. Publishing (merging the published file and every committed part entry into
``STORE.h5.tmp-<id>``, fsync, rename over ``STORE.h5``, then removing the parts) happens when a
writer closes and no other writer is alive, under the store lock (``STORE.h5.lock``); until then
the parts stay and readers read them. After a crash the parts stay too, and the next writer to
close alone publishes them.

Publishing also stacks the small arrays of each *packable* group into one dataset per array name
(``packed/<group>/<name>``), which :meth:`HDF5Store.read_column` reads in one go (the rows asked
for spanned). The packed column is a second copy beside each entry's own datasets (what
:meth:`HDF5Store.read` returns), so ``verify`` hashes both against the record. Which groups are
packable is the creator's choice (``open_store(..., packable=...)``), recorded in the store
(``meta/packable.json`` of the work dir, ``"packable"`` of the published metadata); a store
published before it was recorded keeps packing the groups it has packed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .base import (
    LAYOUT_VERSION,
    Files,
    JsonDir,
    StoreError,
    StoreFormatError,
    StoreNotFound,
    array_sha256,
    build_record,
    fsync_path,
)
from .log import rows_from_docs, segment_writer
from .logstore import LogStore, entry_doc

log = logging.getLogger(__name__)

_META = "_clipcache"
_PACK_MAX_ITEM_BYTES = 1 << 20
#: part files open for writing in this process, by path: HDF5 refuses to open a file a second
#: time in the process that writes it, so readers here read through the writer's handle
_WRITING: dict[str, Any] = {}


def _h5():
    import h5py

    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        log.warning("HDF5_USE_FILE_LOCKING=FALSE is set: HDF5 cannot detect a second writer")
    return h5py


# HDF5 cannot recover from a write that fails half way (a full disk: the next flush of that file can
# crash the process), so a writer checks the free space first: a batch needs its bytes twice over
# plus this much for HDF5's own metadata, and publishing needs the parts' and the published file's.
_HEADROOM = 8 << 20


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < need + _HEADROOM:
        raise OSError(errno.ENOSPC, f"{free / 2**20:.1f} MB free in {folder}, {what} needs "
                      f"{(need + _HEADROOM) / 2**20:.1f} MB (HDF5 cannot recover from a write that fails half way)")


# HDF5 has no concurrent reader without SWMR: a part file another process is flushing can fail to
# read, and one just merged into the published file is gone. Such a read is tried again, after the
# store's state is re-read, this many times (0.01 s, then doubling) before its error counts.
_READ_TRIES = 6


class HDF5Store(LogStore):
    def __init__(self, path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
                 shared: bool = False, writer: str | None = None, packable: Sequence[str] | None = None):
        super().__init__(path, mode)
        self._file = Path(path)
        self._work = Path(f"{path}.parts")
        self._init_log(Files(self._work), lock_path=Path(f"{path}.lock"))
        self._published: dict = {"attrs": None, "commits": {}, "docs": {}}
        self._parts: dict[str, Any] = {}  # this writer's open part files, per segment
        self._packed_pos: dict[str, tuple[list, dict[str, int]]] = {}  # group -> (packed keys, key -> row)
        self._docs = JsonDir(self._work / "meta" / "docs")
        if mode == "a":
            if not self._file.exists() and not self._work_ready and attrs is None:
                raise StoreNotFound(f"no clipcache store at {path}")
            if shared and not self._file.exists() and not self._work_ready:
                raise StoreNotFound(f"no clipcache store at {path} (a shared writer never creates one)")
            self._lock.acquire()
            try:
                self._load(attrs, packable)
                if not self._work_ready:
                    self._start_work_dir()
                elif JsonDir(self._work).get("meta", "packable") is None:  # a work dir of older code
                    JsonDir(self._work).put("meta", "packable", list(self.packable))
                self._register(writer)
            finally:
                self._lock.release()
            self._drop_unreadable_parts()
        else:
            self._load(None, None)
        self._stamp = self._published_stamp()

    def _drop_unreadable_parts(self) -> None:
        """A dead writer's part file that does not open (cut short by a crash or a full disk): its
        entries are uncommitted as this writer starts, so that it redoes them. Otherwise they
        counted as cached and were then dropped when the store was published (reliability 7.5)."""
        parts = self._work / "parts"
        if not parts.exists():
            return
        live = set(self.live_writers())
        bad = set()
        for p in parts.glob("*.h5"):
            if segment_writer(p.stem) in live or str(p) in _WRITING:
                continue
            try:
                with _h5().File(p, "r", locking=False):
                    pass
            except OSError as err:
                log.warning("store %s: part %s cannot be read (%s); its entries are redone", self.path, p.name, err)
                bad.add(p.stem)
        for group in self._groups() if bad else ():
            drops = self._resolved(group).copies_where(lambda src: src in bad)
            if drops:
                self._commit_entries(group, self._segment_writer(group), {}, drops)

    def _published_stamp(self) -> tuple | None:
        try:
            st = self._file.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _changing(self) -> bool:
        """Whether a failed read of part files may be transient: another writer is live, or a
        reader's store was published since it was opened (then its state is read again)."""
        stamp = self._published_stamp()
        if self.mode == "r" and stamp != self._stamp:
            self._stamp = stamp
            self._load(None, None)
            self._index, self._logs, self._packed_pos = {}, {}, {}
            return True
        return bool(set(self.live_writers()) - {self.writer})

    def _retrying(self, read):
        """``read()``, tried again where another process may be writing or publishing the parts."""
        for attempt in range(_READ_TRIES):
            try:
                return read()
            except (OSError, KeyError, StoreError) as err:
                io = isinstance(err, (OSError, KeyError)) or isinstance(err.__cause__, (OSError, KeyError))
                if not io or attempt == _READ_TRIES - 1 or not self._changing():
                    raise
                time.sleep(0.01 * 2 ** attempt)

    def _load(self, attrs: dict | None, packable: Sequence[str] | None) -> None:
        h5py = _h5()
        if self._file.exists():
            try:
                with h5py.File(self._file, "r") as f:
                    if _META not in f:
                        raise StoreFormatError(f"{self.path} is an HDF5 file but not a clipcache store")
                    self._published = json.loads(f[_META][()].decode())
            except OSError as err:
                raise StoreFormatError(f"cannot read HDF5 store {self.path}: {err}") from err
        work_attrs = JsonDir(self._work).get("meta", "attrs")
        attrs_now = work_attrs or self._published["attrs"]
        if attrs_now is None:
            if self.mode == "r" or attrs is None:
                raise StoreNotFound(f"no clipcache store at {self.path}")
            attrs_now = {"layout_version": LAYOUT_VERSION, **attrs}
        if attrs_now.get("layout_version") in (1, 2):  # the published HDF5 layout did not change
            attrs_now = {**attrs_now, "layout_version": LAYOUT_VERSION}
        if attrs_now.get("layout_version") != LAYOUT_VERSION:
            raise StoreFormatError(
                f"store {self.path} has clipcache layout version {attrs_now.get('layout_version')}, "
                f"this clipcache reads version {LAYOUT_VERSION}; re-extract into a new store"
            )
        self._attrs = attrs_now
        recorded = JsonDir(self._work).get("meta", "packable") if work_attrs else None
        if recorded is None:
            recorded = self._published.get("packable")
        if recorded is None:  # new, or written before stores recorded it: the opener's word, else what it packed
            recorded = packable if packable is not None else sorted(self._published.get("packed", {}))
        self.packable = tuple(recorded)

    def _start_work_dir(self) -> None:
        """Seed the work dir with the published documents; it becomes authoritative until merged."""
        for group, items in self._published["docs"].items():
            for key, obj in items.items():
                self._docs.put(group, key, obj)
        (self._work / "parts").mkdir(parents=True, exist_ok=True)
        JsonDir(self._work).put("meta", "packable", list(self.packable))
        JsonDir(self._work).put("meta", "attrs", self._attrs)  # written last: marks the dir ready

    @property
    def _work_ready(self) -> bool:
        return (self._work / "meta" / "attrs.json").exists()

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def _base_rows(self, group: str):
        """The published entries, as copies named "" (they sort first: published wins)."""
        recs = self._published["commits"].get(group, {})
        if not recs:
            return []
        entries = {k: {**r, "loc": {n: ["", -1] for n in r["arrays"]}} for k, r in recs.items()}
        return [rows_from_docs([("", {"entries": entries})])]

    # ----------------------------------------------------------------- entries
    def _part(self, segment: str):
        f = self._parts.get(segment)
        if f is None:
            (self._work / "parts").mkdir(parents=True, exist_ok=True)
            path = self._work / "parts" / f"{segment}.h5"
            f = self._parts[segment] = _WRITING[str(path)] = _h5().File(path, "w")
        return f

    def _close_parts(self) -> None:
        for f in self._parts.values():
            _WRITING.pop(str(Path(f.filename)), None)
            f.close()
        self._parts = {}

    def commit_many(self, group: str, items: Sequence[tuple[str, Mapping[str, np.ndarray], dict]],
                    extends: bool = False) -> list[dict]:
        """Write a batch of entries into this writer's part file, flush once, then write the
        batch's commit record. Each record's datasets are its own (``<group>/<key>/<seq>/``):
        a committed entry is never modified in place."""
        self._check_writable()
        if not items:
            return []
        if not self._work_ready:
            self._start_work_dir()
        _check_space(self._work, 2 * sum(np.asarray(a).nbytes for _, arrays, _ in items for a in arrays.values()),
                     "a batch")
        sw = self._segment_writer(group)
        part = self._part(sw.segment)
        prepared = []
        for key, arrays, record in items:
            if "/" in key or key.startswith("."):
                raise StoreError(f"invalid entry key {key!r}")
            base = f"{group}/{key}/{sw.seq}"
            if base in part:  # left by a batch whose record was never written (an error)
                del part[base]
            g = part.require_group(base)
            arrays = {n: np.asarray(a, order="C") for n, a in arrays.items()}
            for name, arr in arrays.items():
                g.create_dataset(name, data=arr, track_times=False)
            prepared.append((key, arrays, record))
        part.flush()
        entries, out = {}, []
        for key, arrays, record in prepared:
            rec = build_record(arrays, record)
            out.append(dict(rec))
            entries[key] = entry_doc(rec, {n: [sw.segment, sw.seq] for n in arrays}, extends)
        self._commit_entries(group, sw, entries)  # the commit point of the batch
        return out

    def update_attrs(self, update) -> None:
        self._check_writable()
        self._lock.acquire()
        try:
            if not self._work_ready:
                self._start_work_dir()
            stored = JsonDir(self._work).get("meta", "attrs") or self._attrs  # another writer's change too
            current = {k: v for k, v in stored.items() if k != "layout_version"}
            self._attrs = {**update(current), "layout_version": LAYOUT_VERSION}
            JsonDir(self._work).put("meta", "attrs", self._attrs)
        finally:
            self._lock.release()

    def _dataset(self, files: dict, group: str, key: str, name: str, loc: list):
        """The h5py dataset of one array (``files``: open files by source, reused)."""
        h5py = _h5()
        src, seq = loc
        if src == "":
            if "" not in files:
                files[""] = h5py.File(self._file, "r")
            return files[""][f"{group}/{key}/{name}"]
        part = self._work / "parts" / f"{src}.h5"
        writing = _WRITING.get(str(part))
        if writing is not None:
            return writing[f"{group}/{key}/{seq}/{name}"]
        if src not in files:
            files[src] = h5py.File(part, "r", locking=False)
        return files[src][f"{group}/{key}/{seq}/{name}"]

    def read(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return self._retrying(lambda: self._read(group, key, names))

    def _read(self, group: str, key: str, names: Iterable[str] | None) -> dict[str, np.ndarray]:
        rec = self.record(group, key)
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        names = list(rec["arrays"]) if names is None else list(names)
        for name in names:
            if name not in rec["arrays"]:
                raise StoreError(f"{group}/{key} has no array {name!r} (has {sorted(rec['arrays'])})")
        files: dict = {}
        try:
            return {n: self._dataset(files, group, key, n, rec["loc"][n])[()] for n in names}
        except (OSError, KeyError) as err:
            raise StoreError(f"cannot read {group}/{key} from store {self.path}: {err}") from err
        finally:
            for f in files.values():
                f.close()

    def read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        rows = self._packed_rows(group, name, keys)
        return rows if rows is not None else super().read_column(group, name, keys)

    def _packed_rows(self, group: str, name: str, keys: list[str]) -> np.ndarray | None:
        """Rows of ``keys`` from the packed column ``packed/<group>/<name>`` (the rows spanned,
        one read), or None where :meth:`read_column` gives readers the entries' own datasets
        instead: ``name`` not packed, a key not published, or records past the published file."""
        packed = self._published.get("packed", {}).get(group, {})
        if not keys or name not in packed.get("names", ()) or self._log(group).segments():
            return None
        pos = self._packed_pos.get(group)
        if pos is None or pos[0] is not packed["keys"]:  # built once per published file
            pos = self._packed_pos[group] = (packed["keys"], {k: i for i, k in enumerate(packed["keys"])})
        if not all(k in pos[1] for k in keys):
            return None
        at = np.array([pos[1][k] for k in keys])
        lo, hi = int(at.min()), int(at.max()) + 1
        with _h5().File(self._file, "r") as f:
            data = f[f"packed/{group}/{name}"][lo:hi]
        return data[at - lo]

    def _entry_rows(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        """Array ``name`` of ``keys`` from each entry's own dataset (what :meth:`read` returns),
        stacked; each file is opened once for all of them, not once per entry."""
        return self._retrying(lambda: self._entry_rows_once(group, name, keys))

    def _entry_rows_once(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        r, at = self._locate(group, keys, name)
        sig, path, row, _src = r.arrays.get(name, (np.full(len(r), -1),) * 4)
        files: dict = {}
        try:
            out = []
            for k, i in zip(keys, at.tolist()):
                if sig[i] < 0:
                    raise StoreError(f"{group}/{k} has no array {name!r}")
                out.append(self._dataset(files, group, k, name, [r.raw.paths[path[i]], int(row[i])])[()])
            return np.stack(out)
        finally:
            for f in files.values():
                f.close()

    def _column_copies(self, group: str, name: str):
        """Both copies a reader can be given: each entry's own datasets (:meth:`read`) and, once
        published, the packed column (:meth:`read_column`); they are written apart, so bytes
        damaged in one are not damaged in the other."""
        return [lambda keys: self._entry_rows(group, name, keys),
                lambda keys: self._packed_rows(group, name, keys)]

    def _entry_ok(self, group: str, key: str) -> bool:
        """The entry read back whole, and its rows of the packed columns readers are given."""
        if not super()._entry_ok(group, key):
            return False
        try:
            for name, meta in self.record(group, key)["arrays"].items():
                rows = self._packed_rows(group, name, [key])
                if rows is not None and array_sha256(rows[0]) != meta["sha256"]:
                    return False
        except Exception:  # noqa: BLE001 - any read failure means the entry is bad
            return False
        return True

    # ----------------------------------------------------------------- documents
    def put_json(self, group: str, key: str, obj: Any) -> None:
        self._check_writable()
        self._docs.put(group, key, obj)

    def get_json(self, group: str, key: str) -> Any | None:
        if self._work_ready:
            return self._docs.get(group, key)
        return self._published["docs"].get(group, {}).get(key)

    def json_keys(self, group: str) -> list[str]:
        if self._work_ready:
            return self._docs.keys(group)
        return sorted(self._published["docs"].get(group, {}))

    def delete_json(self, group: str, key: str) -> None:
        self._check_writable()
        self._docs.delete(group, key)

    # ----------------------------------------------------------------- publish
    def _groups(self) -> list[str]:
        found = set(self._published["commits"])
        for d in ("meta/log", "meta/segments", "meta/commits"):
            found.update(n for n in self._files.list(d) if not n.endswith(".json"))
        return sorted(found)

    def _merge(self) -> bool:
        """Write published + committed part entries to a temp file, then rename it into place
        (the caller holds the store lock and is the only live writer)."""
        h5py = _h5()
        self._close_parts()
        parts = sum(p.stat().st_size for p in (self._work / "parts").glob("*.h5")) if (self._work / "parts").exists() else 0
        published = self._file.stat().st_size if self._file.exists() else 0
        try:  # the merged file holds both (and the packed columns again): not enough room, the parts stay
            _check_space(self._file.parent, 2 * (parts + published), "publishing the store")
        except OSError as err:
            log.warning("store %s is not published: %s; its parts stay readable, and the next writer to close "
                        "(or clipcache verify --gc) publishes it", self.path, err.strerror)
            return False
        tmp = self._file.with_name(f"{self._file.name}.tmp-{uuid.uuid4().hex[:8]}")
        for stale in self._file.parent.glob(f"{self._file.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        meta: dict = {"attrs": self._attrs, "commits": {}, "docs": {}, "packed": {}, "packable": list(self.packable)}
        sources: dict = {}
        try:
            with h5py.File(tmp, "w") as out:
                for group in self._groups():
                    kept = {}
                    for key, rec in sorted(self.records(group).items()):
                        loc = rec.pop("loc")
                        try:
                            for name in rec["arrays"]:
                                out.copy(self._dataset(sources, group, key, name, loc[name]), f"{group}/{key}/{name}")
                        except (OSError, KeyError) as err:
                            log.warning("dropping %s/%s: its part file is unreadable (%s)", group, key, err)
                            if f"{group}/{key}" in out:
                                del out[f"{group}/{key}"]
                            continue
                        kept[key] = rec
                    meta["commits"][group] = kept
                    if group in self.packable and kept:
                        meta["packed"][group] = self._pack(out, group, kept)
                for group in self._docs.files.list(""):
                    meta["docs"][group] = self._docs.items(group)
                out.create_dataset(_META, data=json.dumps(meta, sort_keys=True).encode())
        finally:
            for f in sources.values():
                f.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._file)
        fsync_path(self._file.parent)
        self._published = meta
        shutil.rmtree(self._work, ignore_errors=True)
        self._index, self._logs = {}, {}
        return True

    @staticmethod
    def _pack(out, group: str, recs: dict[str, dict]) -> dict:
        keys = sorted(recs)
        names = []
        for name in sorted(set.intersection(*(set(r["arrays"]) for r in recs.values()))):
            shapes = {tuple(recs[k]["arrays"][name]["shape"]) for k in keys}
            dtype = np.dtype(recs[keys[0]]["arrays"][name]["dtype"])
            if len(shapes) != 1 or int(np.prod(next(iter(shapes)))) * dtype.itemsize > _PACK_MAX_ITEM_BYTES:
                continue
            data = np.stack([out[f"{group}/{k}/{name}"][()] for k in keys])
            out.create_dataset(f"packed/{group}/{name}", data=data, track_times=False)
            names.append(name)
        return {"keys": keys, "names": names}

    def _publish_if_alone(self) -> bool:
        """Seal this writer's segments, then merge and publish when no other writer is alive."""
        for sw in self._writers.values():
            sw.close()
        self._writers = {}
        if not self._work.exists():
            return False
        self._lock.acquire()
        try:
            others = set(self.live_writers()) - {self.writer}
            if others:
                log.info("store %s: %d other writers are alive; the last one publishes", self.path, len(others))
                return False
            return self._merge()
        finally:
            self._lock.release()

    def finalize(self) -> None:
        self._check_writable()
        self._publish_if_alone()

    def close(self) -> None:
        try:
            if self.mode == "a" and self._lease is not None:
                self._publish_if_alone()
        finally:
            self._close_parts()
            self._close_writers()

    def gc(self) -> int:
        """Publish when no other writer is alive (losing copies and unreadable parts go with the
        parts); with other writers alive there is nothing to collect yet."""
        self._check_writable()
        return int(self._publish_if_alone())

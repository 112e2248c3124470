"""Zarr v3 backend (the default): per-writer packed segments, one commit record per batch.

Layout (``reliability.md`` §7.4 and §7.6, layout version 3)::

    STORE.zarr/zarr.json                        root group; attrs["clipcache"] = store attributes
    STORE.zarr/seg/<group>/<segment>/<name>.<sig>/  one packed array [rows, *shape] per array name and
                                                shape/dtype signature; one row per entry
    STORE.zarr/meta/log/<group>/<segment>/<seq>.json  batch commit record, written last, atomically
    STORE.zarr/meta/segments/, meta/index/      segments, compacted index parts (:mod:`.log`)
    STORE.zarr/meta/docs/<group>/<key>.json     small JSON documents (failed, splits, ...)
    STORE.zarr/meta/writers/<writer>.lock       each writer's lease (flock; a JSON document remotely)
    STORE.zarr/.lock                            store-wide lock: creation, key changes, gc (flock)

Any number of writers (processes, torchrun ranks, Slurm array tasks, Ray actors, machines sharing
the file system or bucket) write at once. A writer session owns a fresh segment, never shared: it
alone resizes and appends to its arrays (I3), so ``resize`` is safe. A batch is written as: resize
each array, write its rows (whole chunks where the batch fills them), then the batch's commit
record. Rows past the last record (a writer killed mid-batch) are never named by a record and
stay invisible (I1); a resume writes them again into its own new segment. The content-key index
(key -> segment, row) is the union of the commit records, loaded from the compacted index parts
plus the few records after them. The number of files grows with chunks of rows, not with
videos x arrays, and reading one array for many videos is a few sequential chunk reads.

Stores of layout version 2 (records in ``meta/commits``) are read as they are, and upgraded to
version 3 by the first writer; version 1 (one array per video) is refused with the command that
converts it (:func:`clipcache.stores.convert.convert_store`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
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
    build_record,
)
from .base import storage_options as default_storage_options
from .log import LEGACY, LOG, SEGMENTS, segment_writer
from .logstore import LogStore, entry_doc, groups_of

log = logging.getLogger(__name__)

#: target bytes of one chunk of a packed array (rows per chunk follow from the row size)
CHUNK_BYTES = 1 << 20
_MAX_CHUNK_ROWS = 4096
SPAN_BYTES = 64 << 20  # bytes of rows read_column reads at a time when it reads most rows of a span
LEGACY_LAYOUT = 1  # one array per entry and name (clipcache <= layout 1): convert, then read
READABLE = (2, LAYOUT_VERSION)  # 2: the same segments, commit records in meta/commits


def _signature(arr: np.ndarray) -> str:
    return hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode()).hexdigest()[:8]


def chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return int(max(1, min(_MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes)))


def convert_command(path: str) -> str:
    return f"clipcache convert {path} NEW_STORE"


#: rows a segment array is created with: appending never rewrites its ``zarr.json``; rows past
#: the committed ones are never read, and chunks never written cost no file
CAPACITY = 1 << 36


@functools.lru_cache(maxsize=256)
def _array_meta(row_shape: tuple[int, ...], dtype: str, chunk: int) -> bytes:
    """The ``zarr.json`` of a segment array, as zarr writes it: uncompressed (``bytes`` codec,
    little-endian), regular chunks of ``chunk`` rows, fill 0 (tests read it back through zarr)."""
    dt = np.dtype(dtype)
    fill = False if dt.kind == "b" else 0.0 if dt.kind == "f" else 0
    meta = {
        "shape": [CAPACITY, *row_shape], "data_type": dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk, *row_shape]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
        if dt.itemsize > 1 else [{"name": "bytes"}],
        "attributes": {}, "zarr_format": 3, "node_type": "array", "storage_transformers": [],
    }
    return json.dumps(meta, indent=2).encode()


def _storable(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a segment array stores it: numbers in little-endian C order."""
    if arr.dtype.kind not in "biuf":
        raise StoreError(f"arrays of dtype {arr.dtype} cannot be stored (numbers only)")
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.asarray(arr, order="C")  # not ascontiguousarray: it turns a 0-d array into shape (1,)


class _SegmentArray:
    """One packed array of this writer's segment, ``[CAPACITY, *row_shape]``, appended to chunk by
    chunk. A zarr v3 array with the ``bytes`` codec alone stores a chunk as its rows' raw bytes
    (a partial last chunk padded with zeros), so the writer writes chunk files itself and skips
    zarr's per-call cost; readers read it through zarr, or straight from the chunk files
    (:meth:`ZarrStore._read_rows`). Locally the new rows are written in place into their chunk
    file (only rows past the last commit, which no reader looks at: I3); on an object store the
    chunk being filled is put whole, as one object, after each batch."""

    def __init__(self, files: Files, rel: str, row_shape: tuple[int, ...], dtype: np.dtype):
        self.files, self.rel, self.dtype = files, rel, np.dtype(dtype)
        self.chunk = chunk_rows(row_shape, self.dtype)
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.rows = 0
        self._tail = None if files.local else np.zeros((self.chunk, *row_shape), self.dtype)  # the chunk being filled
        self._zeros = "/0" * len(row_shape)
        files.put(f"{rel}/zarr.json", _array_meta(tuple(row_shape), self.dtype.str, self.chunk), durable=False)

    def append(self, data: np.ndarray) -> int:
        """Write rows ``data [n, *row_shape]`` after the last ones; returns the first new row."""
        start, i = self.rows, 0
        while i < len(data):
            ci, off = divmod(self.rows, self.chunk)
            n = min(self.chunk - off, len(data) - i)
            rel = f"{self.rel}/c/{ci}{self._zeros}"
            if self._tail is None:
                rows = np.ascontiguousarray(data[i:i + n])
                if rows.size:
                    self.files.write_at(rel, off * self.row_bytes, rows.reshape(-1).view(np.uint8),
                                        self.chunk * self.row_bytes)
            else:
                self._tail[off:off + n] = data[i:i + n]
                self.files.put(rel, self._tail.tobytes(), durable=False)
                if off + n == self.chunk:
                    self._tail[...] = 0
            i += n
            self.rows += n
        return start


class _CopyGone(StoreError):
    """A committed row's chunk file is missing: gc removed that copy since the reader's index was read."""


class ZarrStore(LogStore):
    def __init__(self, path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
                 shared: bool = False, writer: str | None = None, storage_options: dict | None = None):
        super().__init__(path, mode)
        path = str(path)
        if path.startswith("file://"):  # fsspec's local writes are not atomic: use zarr's LocalStore
            path = path[len("file://"):]
            self.path = path
        self._fs = None
        self._zstore = None  # zarr's store, made when an array is first read (opening needs none)
        self._options = None
        if "://" in path:
            self._open_remote(path, mode, storage_options)
        else:
            self._root = Path(path)
            if mode == "a" and self._root.exists() and not self._root.is_dir():
                raise StoreError(f"{path} exists and is not a directory")
        self._init_log(Files(self._root, self._fs))
        exists = self._files.exists("zarr.json")
        if mode == "r" and not exists:
            raise StoreNotFound(f"no clipcache store at {path}")
        if mode == "a":
            if not exists and attrs is None:
                raise StoreNotFound(f"no clipcache store at {path}")
            if shared and not exists:
                raise StoreNotFound(f"no clipcache store at {path} (a shared writer never creates one)")
            self._lock.acquire()  # store-wide, for milliseconds: create or upgrade, then our lease
            try:
                if not self._files.exists("zarr.json"):
                    self._write_group({"clipcache": {"layout_version": LAYOUT_VERSION, **attrs}})
                self._attrs = self._read_attrs()
                if self._attrs.get("layout_version") != LAYOUT_VERSION:  # 2: new records go to meta/log
                    self._write_attrs({**self._attrs, "layout_version": LAYOUT_VERSION})
                self._register(writer)
            finally:
                self._lock.release()
        else:
            self._attrs = self._read_attrs()
        self._docs = JsonDir(self._meta("docs"), self._fs)
        self._zcache: dict[str, Any] = {}
        self._seg_arrays: dict[str, _SegmentArray] = {}  # this writer's arrays

    def _meta(self, name: str):
        return f"{self._root}/meta/{name}" if self._fs is not None else self._root / "meta" / name

    def _group_meta(self) -> dict:
        """The root group's ``zarr.json`` (read as JSON: no zarr machinery to open a store)."""
        raw = self._files.get("zarr.json")
        try:
            meta = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError as err:
            raise StoreFormatError(f"{self.path}: unreadable zarr.json ({err})") from err
        if not isinstance(meta, dict) or meta.get("node_type") != "group":
            raise StoreFormatError(f"{self.path} is not a Zarr v3 group")
        return meta

    def _write_group(self, attributes: dict) -> None:
        """The root group's ``zarr.json`` as zarr writes it, replaced whole (atomically)."""
        meta = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
        self._files.put("zarr.json", json.dumps(meta, indent=2).encode())

    def _read_attrs(self) -> dict:
        attrs = dict(self._group_meta().get("attributes", {}).get("clipcache") or {})
        if not attrs:
            raise StoreFormatError(f"{self.path} is a Zarr store but not a clipcache store")
        version = attrs.get("layout_version")
        if version == LEGACY_LAYOUT:
            raise StoreFormatError(
                f"store {self.path} has the old one-array-per-video layout (version 1); convert it with "
                f"`{convert_command(self.path)}` and use the new store"
            )
        if version not in READABLE:
            raise StoreFormatError(
                f"store {self.path} has clipcache layout version {version}, "
                f"this clipcache reads version {LAYOUT_VERSION}; re-extract into a new store"
            )
        return attrs

    def _write_attrs(self, full: dict) -> None:
        self._write_group({**self._group_meta().get("attributes", {}), "clipcache": full})
        self._attrs = full

    def _open_remote(self, url: str, mode: str, storage_options: dict | None) -> None:
        """An fsspec URL (s3://, gs://, memory://...): zarr's FsspecStore plus the same fs for records."""
        opts = default_storage_options() if storage_options is None else dict(storage_options)
        try:
            import fsspec
        except ImportError as err:
            raise StoreError(f"{url}: remote stores need fsspec (pip install 'clipcache[remote]')") from err
        try:
            self._fs, self._root = fsspec.core.url_to_fs(url, **opts)
        except (ImportError, ValueError, TypeError) as err:
            raise StoreError(f"{url}: {err} (remote stores: pip install 'clipcache[remote]')") from err
        self._root = self._root.rstrip("/")
        self._options = opts

    @property
    def _store(self):
        """zarr's view of the store (LocalStore, or FsspecStore at a URL), for reading arrays."""
        if self._zstore is None:
            import zarr

            if self._fs is None:
                self._zstore = zarr.storage.LocalStore(self._root, read_only=(self.mode == "r"))
            else:
                self._zstore = zarr.storage.FsspecStore.from_url(self.path, storage_options=self._options or None,
                                                                  read_only=(self.mode == "r"))
        return self._zstore

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def update_attrs(self, update) -> None:
        """Change the store attributes (one atomic ``zarr.json`` write) under the store lock,
        from the ones stored now (see :meth:`FeatureStore.update_attrs`)."""
        self._check_writable()
        self._lock.acquire()
        try:
            current = {k: v for k, v in self._read_attrs().items() if k != "layout_version"}
            self._write_attrs({**update(current), "layout_version": LAYOUT_VERSION})
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- writing
    def commit_many(self, group: str, items: Sequence[tuple[str, Mapping[str, np.ndarray], dict]],
                    extends: bool = False) -> list[dict]:
        """Append a batch of entries to this writer's segment, then write the batch's record.

        ``extends=True`` adds arrays to entries that are already committed (an extended store):
        the entry's other arrays and record fields stay as they are.
        """
        self._check_writable()
        if not items:
            return []
        sw = self._segment_writer(group)
        seg = sw.segment
        prepared = []
        by_array: dict[str, list[np.ndarray]] = {}
        for key, arrays, record in items:
            if "/" in key or key.startswith("."):
                raise StoreError(f"invalid entry key {key!r}")
            arrays = {n: _storable(np.asarray(a)) for n, a in arrays.items()}
            loc = {}
            for name, arr in arrays.items():
                aname = f"{name}.{_signature(arr)}"
                rows = by_array.setdefault(aname, [])
                loc[name] = [f"{seg}/{aname}", len(rows)]  # row within the batch; offset added below
                rows.append(arr)
            prepared.append((key, arrays, record, loc))
        offsets = self._append_all(group, seg, by_array)
        entries, out = {}, []
        for key, arrays, record, loc in prepared:
            rec = build_record(arrays, record)
            out.append(dict(rec))
            for name, (path, row) in loc.items():
                loc[name] = [path, offsets[path.split("/", 1)[1]] + row]
            entries[key] = entry_doc(rec, loc, extends)
        self._commit_entries(group, sw, entries)  # the commit point
        return out

    def _append_all(self, group: str, seg: str, by_array: dict[str, list[np.ndarray]]) -> dict[str, int]:
        """Append each array's rows to this writer's packed arrays; returns each array's first
        new row. Only this writer writes these arrays (I3)."""
        offsets = {}
        for aname, rows in by_array.items():
            data = np.stack(rows)  # [n, *shape]
            key = f"{group}/{seg}/{aname}"
            arr = self._seg_arrays.get(key)
            if arr is None:
                arr = self._seg_arrays[key] = _SegmentArray(self._files, f"seg/{key}", data.shape[1:], data.dtype)
            offsets[aname] = arr.append(data)
        return offsets

    # ----------------------------------------------------------------- reading
    def _array(self, group: str, path: str, need_rows: int):
        import zarr

        z = self._zcache.get(f"{group}/{path}")
        if z is None or z.shape[0] < need_rows:  # opened before a writer appended more rows
            try:
                z = zarr.open_array(self._store, path=f"seg/{group}/{path}", mode="r")
            except (FileNotFoundError, KeyError) as err:
                raise StoreError(f"store {self.path} lost segment array {group}/{path}") from err
            self._zcache[f"{group}/{path}"] = z
        if z.shape[0] < need_rows:
            raise StoreError(f"store {self.path}: segment array {group}/{path} is shorter than its record")
        return z

    def read(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        try:
            return self._read(group, key, names, self.record(group, key))
        except _CopyGone:  # gc removed the copy this reader's index named: the visible copy now
            return self._read(group, key, names, self._group(group, refresh=True).lookup(key))

    def _read(self, group: str, key: str, names: Iterable[str] | None, rec: dict | None) -> dict[str, np.ndarray]:
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        names = list(rec["arrays"]) if names is None else list(names)
        out = {}
        for name in names:
            if name not in rec["arrays"]:
                raise StoreError(f"{group}/{key} has no array {name!r} (has {sorted(rec['arrays'])})")
            path, row = rec["loc"][name]
            z = self._array(group, path, row + 1)
            a = np.empty((1, *z.shape[1:]), dtype=z.dtype)
            self._read_rows(group, path, z, row, row + 1, a)
            out[name] = a[0]
        return out

    def read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        """One array for many entries: per segment array, one contiguous read of the rows spanned
        (or only the chunks needed, when the keys are sparse in it)."""
        try:
            return self._read_column(group, name, keys)
        except _CopyGone:  # gc removed a copy this reader's index named: read the visible copies now
            self._group(group, refresh=True)
            return self._read_column(group, name, keys)

    def _read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        r, where = self._locate(group, keys, name)
        cols = r.arrays.get(name)
        sig = cols[0][where] if cols is not None else np.full(len(keys), -1)
        if (sig < 0).any():
            k = keys[int(np.flatnonzero(sig < 0)[0])]
            rec = r.record(int(where[int(np.flatnonzero(sig < 0)[0])]))
            raise StoreError(f"{group}/{k} has no array {name!r} (has {sorted(rec['arrays'])})")
        sigs = np.unique(sig)
        if len(sigs) > 1:
            raise StoreError(f"{group}/{name} has different shapes across entries; read them one by one")
        shape, dtype = r.raw.sigs[int(sigs[0])]
        out = np.empty((len(keys), *shape), dtype=np.dtype(dtype))
        paths, rows_all = cols[1][where], cols[2][where]
        for pid in np.unique(paths).tolist():
            pos = np.flatnonzero(paths == pid)
            rows = rows_all[pos]
            path = r.raw.paths[pid]
            lo, hi = int(rows.min()), int(rows.max()) + 1
            z = self._array(group, path, hi)
            if hi - lo == len(rows) and np.all(np.diff(rows) == 1) and np.all(np.diff(pos) == 1):
                # the common case: one sequential read, straight into the result
                self._read_rows(group, path, z, lo, hi, out[pos[0]:pos[0] + len(pos)])
            else:
                # dense (most rows of the span): sequential reads of about SPAN_BYTES each, so a
                # read of 800,000 of a million rows holds 64 MB beside the result, not the whole
                # span twice; sparse: each chunk holding some of the rows, read once (its rows spanned)
                c = z.chunks[0]
                dense = hi - lo <= 2 * len(rows) + c
                unit = c * max(1, SPAN_BYTES // max(1, out[:1].nbytes * c)) if dense else c
                order = np.argsort(rows, kind="stable")
                srows, spos = rows[order], pos[order]
                cut = np.flatnonzero(np.diff(srows // unit)) + 1
                for grp in np.split(np.arange(len(srows)), cut):
                    a, b = int(srows[grp[0]]), int(srows[grp[-1]]) + 1
                    span = np.empty((b - a, *out.shape[1:]), dtype=out.dtype)
                    self._read_rows(group, path, z, a, b, span)
                    out[spos[grp]] = span[srows[grp] - a]
        return out

    def _read_rows(self, group: str, path: str, z, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows ``lo:hi`` of a packed array into ``out``. On a local store the chunk files are
        read straight into ``out``: segment arrays are written uncompressed, little-endian, in C
        order (zarr v3's ``bytes`` codec), so a chunk file is its rows' raw bytes and reading a
        column costs about what reading those bytes costs. Anything else goes through zarr."""
        codecs = z.metadata.to_dict().get("codecs", [])
        raw = (self._fs is None and len(codecs) == 1 and codecs[0].get("name") == "bytes"
               and (out.dtype.itemsize == 1 or codecs[0].get("configuration", {}).get("endian") == "little")
               and out.dtype.byteorder in ("=", "<", "|") and np.little_endian and out.flags.c_contiguous)
        if not raw:
            self._zarr_rows(group, path, z, lo, hi, out)
            return
        c = z.chunks[0]
        row_bytes = out[0].nbytes if len(out) else 0
        base = self._root / "seg" / group / path / "c"
        flat = out.reshape(len(out), -1).view(np.uint8) if out.size else out
        tail = ["0"] * (z.ndim - 1)
        for ci in range(lo // c, (hi - 1) // c + 1):
            r0, r1 = max(lo, ci * c), min(hi, (ci + 1) * c)
            dest = memoryview(flat[r0 - lo:r1 - lo]).cast("B")
            try:
                with open(base.joinpath(str(ci), *tail), "rb") as f:
                    f.seek((r0 - ci * c) * row_bytes)
                    got = f.readinto(dest)
            except FileNotFoundError:  # every committed row's chunk file is written: this copy was removed
                raise _CopyGone(f"store {self.path}: {group}/{path} chunk {ci} is gone: the copy was removed "
                                "(verify --gc or --repair) after this reader opened the store") from None
            if got != (r1 - r0) * row_bytes:  # unexpected: let zarr decide
                self._zarr_rows(group, path, z, r0, r1, out[r0 - lo:r1 - lo])

    def _zarr_rows(self, group: str, path: str, z, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows ``lo:hi`` read through zarr; a chunk it cannot decode (damaged bytes) is one line."""
        try:
            out[...] = z[lo:hi]
        except (ValueError, TypeError, RuntimeError) as err:  # zarr's decode errors: a wrong size, bad bytes
            raise StoreError(f"store {self.path}: {group}/{path} rows {lo}-{hi - 1} are damaged ({err}); run "
                             "clipcache verify --repair, then extract again") from err

    # ----------------------------------------------------------------- documents
    def put_json(self, group: str, key: str, obj: Any) -> None:
        self._check_writable()
        self._docs.put(group, key, obj)

    def get_json(self, group: str, key: str) -> Any | None:
        return self._docs.get(group, key)

    def json_keys(self, group: str) -> list[str]:
        return self._docs.keys(group)

    def delete_json(self, group: str, key: str) -> None:
        self._check_writable()
        self._docs.delete(group, key)

    # ----------------------------------------------------------------- maintenance
    def finalize(self) -> None:
        """Nothing to compact: segments are packed, and records compacted, as they are written."""
        self._check_writable()

    def locate(self, group: str, key: str, name: str) -> tuple[str, int]:
        """(segment array path under ``seg/<group>/``, row) of one committed array: for tools
        and tests that look at the bytes on disk."""
        rec = self.record(group, key)
        if rec is None or name not in rec["arrays"]:
            raise StoreError(f"{group}/{key}/{name} is not in store {self.path}")
        path, row = rec["loc"][name]
        return path, int(row)

    def layout_stats(self) -> dict:
        """Files and bytes under the store (local stores): what the benchmark reports."""
        if self._fs is not None:
            return {}
        files = size = 0
        for _dir, _sub, names in os.walk(self._root):
            for n in names:
                files += 1
                size += os.path.getsize(os.path.join(_dir, n))
        return {"files": files, "bytes": size}

    def gc(self) -> int:
        """Remove what no reader can see, leaving live writers' work alone (under the store lock,
        so no writer starts meanwhile): losing copies of keys committed twice (dropped by a
        record), segments no visible entry uses (their remaining copies dropped first), and
        orphan ``*.partial`` files. Returns how many things were removed."""
        self._check_writable()
        self._lock.acquire()
        try:
            live = set(self.live_writers())
            mine = {sw.segment for sw in self._writers.values()}
            removed = 0
            for group in groups_of(self._files, "seg", LOG, SEGMENTS, LEGACY):
                removed += self.drop_duplicates(group, live)
                r = self._resolved(group)
                used = {r.raw.paths[p].split("/", 1)[0]
                        for (_sig, path, _row, _src) in r.arrays.values() for p in np.unique(path).tolist()}
                for seg in self._files.list(f"seg/{group}"):
                    if seg.endswith(".json") or seg in used or seg in mine or segment_writer(seg) in live:
                        continue
                    stale = [(k, n) for k, n in r.copies_in_segment(seg)]
                    if stale:  # copies that lost or were dropped: never visible again, data or not
                        self._commit_entries(group, self._segment_writer(group), {}, stale)
                    self._files.rmtree(f"seg/{group}/{seg}")
                    removed += 1
            if self._fs is None:
                removed += self._remove_partials(live)
            return removed
        finally:
            self._lock.release()

    def _remove_partials(self, live: set[str]) -> int:
        """Orphan temp files of interrupted writes: under dead writers' segments always, anywhere
        else only when no other writer is alive (a live writer's temp file looks the same)."""
        alone = not (live - {self.writer})
        n = 0
        for p in self._root.rglob("*.partial"):
            rel = p.relative_to(self._root).parts
            owner = None
            if len(rel) > 2 and rel[0] == "seg":
                owner = segment_writer(rel[2])
            elif len(rel) > 3 and rel[:2] == ("meta", "log"):
                owner = segment_writer(rel[3])
            if alone or (owner is not None and owner not in live):
                p.unlink(missing_ok=True)
                n += 1
        return n

    def close(self) -> None:
        self._close_writers()

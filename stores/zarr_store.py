"""Zarr v3 backend (the default): per-writer packed segments, one commit record per batch.

Layout (``reliability.md`` §7.4, layout version 2)::

    STORE.zarr/zarr.json                                root group; attrs["clipcache"] = store attributes
    STORE.zarr/seg/<group>/<segment>/<name>.<sig>/      one packed array [rows, *shape] per array name and
                                                        shape/dtype signature; one row per entry
    STORE.zarr/meta/commits/<group>/<segment>-<seq>.json  batch commit record, written last, atomically:
                                                        {key: record with sha256 and row of every array}
    STORE.zarr/meta/docs/<group>/<key>.json             small JSON documents (failed, splits, ...)
    STORE.zarr/.lock                                    writer lock (flock)

A writer (a job, or one torchrun rank) owns a fresh segment, never shared: it alone resizes and
appends to its arrays (I3), so ``resize`` is safe. A batch is written as: resize each array, write
its rows (whole chunks where the batch fills them), then the batch's commit record. Rows past the
last record (a writer killed mid-batch) are never named by a record and stay invisible (I1);
a resume writes them again into its own new segment. The content-key index (key -> segment, row)
is the union of the commit records. The number of files grows with chunks of rows, not with
videos x arrays, and reading one array for many videos is a few sequential chunk reads.

Stores of layout version 1 (one array per video) are refused with the command that converts them
(:func:`clipcache.stores.convert.convert_store`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .base import (
    LAYOUT_VERSION,
    FeatureStore,
    JsonDir,
    LeaseLock,
    StoreError,
    StoreFormatError,
    StoreNotFound,
    WriteLock,
    build_record,
)

log = logging.getLogger(__name__)

#: target bytes of one chunk of a packed array (rows per chunk follow from the row size)
CHUNK_BYTES = 1 << 20
_MAX_CHUNK_ROWS = 4096
LEGACY_LAYOUT = 1  # one array per entry and name (clipcache <= layout 1): convert, then read


def _signature(arr: np.ndarray) -> str:
    return hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode()).hexdigest()[:8]


def chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return int(max(1, min(_MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes)))


def convert_command(path: str) -> str:
    return f"clipcache convert {path} NEW_STORE"


class ZarrStore(FeatureStore):
    def __init__(self, path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
                 shared: bool = False):
        super().__init__(path, mode)
        import zarr

        path = str(path)
        if path.startswith("file://"):  # fsspec's local writes are not atomic: use zarr's LocalStore
            path = path[len("file://"):]
            self.path = path
        self._fs = None
        if "://" in path:
            self._open_remote(path, mode)
            exists = self._fs.exists(f"{self._root}/zarr.json")
            self._lock = LeaseLock(JsonDir(f"{self._root}/meta", self._fs))
        else:
            self._root = Path(path)
            exists = (self._root / "zarr.json").exists()
            if mode == "a" and self._root.exists() and not self._root.is_dir():
                raise StoreError(f"{path} exists and is not a directory")
            self._lock = WriteLock(self._root / ".lock")
        if mode == "r" and not exists:
            raise StoreNotFound(f"no clipcache store at {path}")
        if mode == "a":
            if not exists and attrs is None:
                raise StoreNotFound(f"no clipcache store at {path}")
            if shared and not exists:
                raise StoreNotFound(f"no clipcache store at {path} (a shared writer never creates one)")
            if not shared:
                self._lock.acquire(f"store {path}")
        try:
            if self._fs is None:
                self._store = zarr.storage.LocalStore(self._root, read_only=(mode == "r"))
            if not exists:
                full = {"layout_version": LAYOUT_VERSION, **attrs}
                zarr.open_group(self._store, mode="a", attributes={"clipcache": full},
                                use_consolidated=False)
            group = zarr.open_group(self._store, mode="r", use_consolidated=False)
            self._attrs = dict(group.attrs.get("clipcache") or {})
            if not self._attrs:
                raise StoreFormatError(f"{path} is a Zarr store but not a clipcache store")
            version = self._attrs.get("layout_version")
            if version == LEGACY_LAYOUT:
                raise StoreFormatError(
                    f"store {path} has the old one-array-per-video layout (version 1); convert it with "
                    f"`{convert_command(path)}` and use the new store"
                )
            if version != LAYOUT_VERSION:
                raise StoreFormatError(
                    f"store {path} has clipcache layout version {version}, "
                    f"this clipcache reads version {LAYOUT_VERSION}; re-extract into a new store"
                )
        except BaseException:
            self._lock.release()
            raise
        self._commits = JsonDir(self._meta("commits"), self._fs)
        self._docs = JsonDir(self._meta("docs"), self._fs)
        # content-key index, per group: key -> record (with "loc"), and which record files it holds
        self._index: dict[str, dict[str, dict]] = {}
        self._where: dict[str, dict[str, str]] = {}  # group -> key -> commit-record name
        self._loaded: dict[str, set[str]] = {}
        self._zcache: dict[str, Any] = {}
        # this writer's segments: group -> segment id, array name -> [array, rows], batch counter
        self._segment: dict[str, str] = {}
        self._seg_arrays: dict[str, list] = {}
        self._seq: dict[str, int] = {}

    def _meta(self, name: str):
        return f"{self._root}/meta/{name}" if self._fs is not None else self._root / "meta" / name

    def _open_remote(self, url: str, mode: str) -> None:
        """An fsspec URL (s3://, gs://, memory://...): zarr's FsspecStore plus the same fs for records."""
        try:
            import fsspec
            import zarr
        except ImportError as err:
            raise StoreError(f"{url}: remote stores need fsspec (pip install 'clipcache[remote]')") from err
        try:
            self._fs, self._root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as err:
            raise StoreError(f"{url}: {err} (remote stores: pip install 'clipcache[remote]')") from err
        self._root = self._root.rstrip("/")
        self._store = zarr.storage.FsspecStore.from_url(url, read_only=(mode == "r"))

    def _rmtree(self, rel: str) -> None:
        if self._fs is not None:
            if self._fs.exists(f"{self._root}/{rel}"):
                self._fs.rm(f"{self._root}/{rel}", recursive=True)
        else:
            shutil.rmtree(self._root / rel, ignore_errors=True)

    def _listdir(self, rel: str) -> list[str]:
        try:
            if self._fs is not None:
                return sorted(p.rstrip("/").rsplit("/", 1)[-1]
                              for p in self._fs.ls(f"{self._root}/{rel}", detail=False))
            return sorted(os.listdir(self._root / rel))
        except FileNotFoundError:
            return []

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    def update_attrs(self, attrs: dict) -> None:
        """Replace the store attributes (one atomic ``zarr.json`` write): for an extended key."""
        import zarr

        self._check_writable()
        full = {**attrs, "layout_version": LAYOUT_VERSION}
        group = zarr.open_group(self._store, mode="r+", use_consolidated=False)
        group.attrs.put({**dict(group.attrs), "clipcache": full})
        self._attrs = full

    # ----------------------------------------------------------------- index
    def _refresh(self, group: str) -> dict[str, dict]:
        """Load commit records written since the last look (by this or any other writer)."""
        idx = self._index.setdefault(group, {})
        loaded = self._loaded.setdefault(group, set())
        new = []
        for name in self._commits.keys(group):
            if name in loaded:
                continue
            doc = self._commits.get(group, name)
            loaded.add(name)
            if doc is not None:
                new.append((name, doc))
        for extensions in (False, True):  # entries first, then arrays added to them later
            for name, doc in new:
                for key, rec in sorted(doc.get("entries", {}).items()):
                    if bool(rec.get("extends")) == extensions:
                        self._merge_entry(group, key, rec, name)
        return idx

    def _merge_entry(self, group: str, key: str, rec: dict, source: str) -> None:
        """Add one committed entry to the index. An entry committed again (a redo after
        ``verify --repair``) or an extension record (arrays added later) merges its arrays in."""
        idx, where = self._index.setdefault(group, {}), self._where.setdefault(group, {})
        rec = dict(rec)
        if rec.get("extends"):
            base = idx.get(key)
            if base is None:
                return  # extension of an entry repaired away since: invisible
            base["arrays"] = {**base["arrays"], **rec["arrays"]}
            base["loc"] = {**base["loc"], **rec["loc"]}
            return
        if key in idx:
            return  # the same key twice (never written by clipcache): the first record wins
        idx[key] = dict(rec)
        where[key] = source

    def keys(self, group: str) -> list[str]:
        return sorted(self._refresh(group))

    def record(self, group: str, key: str) -> dict | None:
        idx = self._index.get(group)
        if idx is None or key not in idx:
            idx = self._refresh(group)
        rec = idx.get(key)
        return dict(rec) if rec is not None else None

    def records(self, group: str) -> dict[str, dict]:
        return {k: dict(v) for k, v in sorted(self._refresh(group).items())}

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
        seg = self._segment.get(group)
        if seg is None:
            seg = self._segment[group] = uuid.uuid4().hex[:16]
            self._seq[group] = 0
        prepared = []
        by_array: dict[str, list[np.ndarray]] = {}
        for key, arrays, record in items:
            if "/" in key or key.startswith("."):
                raise StoreError(f"invalid entry key {key!r}")
            arrays = {n: np.asarray(a, order="C") for n, a in arrays.items()}  # keeps 0-d arrays 0-d
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
            rec["loc"] = loc
            if extends:
                rec["extends"] = True
            entries[key] = rec
        name = f"{seg}-{self._seq[group]:06d}"
        self._seq[group] += 1
        self._commits.put(group, name, {"segment": seg, "entries": entries})  # the commit point
        self._loaded.setdefault(group, set()).add(name)
        if group not in self._index:
            self._refresh(group)
        for key, rec in entries.items():
            self._merge_entry(group, key, rec, name)
        if isinstance(self._lock, LeaseLock) and self._lock.held:
            self._lock.refresh()
        return out

    def _append_all(self, group: str, seg: str, by_array: dict[str, list[np.ndarray]]) -> dict[str, int]:
        """Append each array's rows to this writer's packed arrays, all chunk writes of the batch
        in one round of zarr's event loop; returns each array's first new row.

        Arrays grow by doubling their row capacity (a rare ``resize``, done by this writer only);
        rows past the committed ones are never read, and chunks never written cost no file.
        """
        import asyncio

        import zarr
        from zarr.core.sync import sync

        writes, offsets = [], {}
        for aname, rows in by_array.items():
            data = np.stack(rows)  # [n, *shape]
            key = f"{group}/{seg}/{aname}"
            slot = self._seg_arrays.get(key)
            if slot is None:
                z = zarr.create_array(
                    self._store, name=f"seg/{group}/{seg}/{aname}", shape=(max(len(data), 1), *data.shape[1:]),
                    dtype=data.dtype, chunks=(chunk_rows(data.shape[1:], data.dtype), *data.shape[1:]),
                    fill_value=0, compressors=None, overwrite=True,
                )
                slot = self._seg_arrays[key] = [z, 0]
            z, start = slot
            if start + len(data) > z.shape[0]:
                z.resize((max(start + len(data), 2 * z.shape[0]), *data.shape[1:]))
            writes.append((z, slice(start, start + len(data)), data))
            offsets[aname] = start
            slot[1] = start + len(data)

        async def _all():  # the coroutines are made here: a failed create/resize leaves none unawaited
            await asyncio.gather(*(z.async_array.setitem(sel, data) for z, sel, data in writes))

        sync(_all())
        return offsets

    # ----------------------------------------------------------------- reading
    def _array(self, group: str, path: str, need_rows: int):
        import zarr

        own = self._seg_arrays.get(f"{group}/{path}")
        if own is not None:
            return own[0]
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
        rec = self.record(group, key)
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        names = list(rec["arrays"]) if names is None else list(names)
        out = {}
        for name in names:
            if name not in rec["arrays"]:
                raise StoreError(f"{group}/{key} has no array {name!r} (has {sorted(rec['arrays'])})")
            path, row = rec["loc"][name]
            a = np.asarray(self._array(group, path, row + 1)[row:row + 1])
            out[name] = a.reshape(a.shape[1:])
        return out

    def read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        """One array for many entries: per segment array, one contiguous read of the rows spanned
        (or only the chunks needed, when the keys are sparse in it)."""
        if not keys:
            raise StoreError(f"no entries to read {group}/{name} from")
        idx = self._index.get(group) or {}
        if any(k not in idx for k in keys):
            idx = self._refresh(group)
        by_path: dict[str, list[tuple[int, int]]] = {}
        sig = None
        for i, k in enumerate(keys):
            rec = idx.get(k)
            if rec is None:
                raise StoreError(f"{group}/{k} is not in store {self.path}")
            meta = rec["arrays"].get(name)
            if meta is None:
                raise StoreError(f"{group}/{k} has no array {name!r} (has {sorted(rec['arrays'])})")
            if sig is None:
                sig = (meta["shape"], meta["dtype"])
            elif (meta["shape"], meta["dtype"]) != sig:
                raise StoreError(f"{group}/{name} has different shapes across entries; read them one by one")
            path, row = rec["loc"][name]
            by_path.setdefault(path, []).append((i, row))
        out = np.empty((len(keys), *sig[0]), dtype=np.dtype(sig[1]))
        for path, pairs in by_path.items():
            pos = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            lo, hi = int(rows.min()), int(rows.max()) + 1
            z = self._array(group, path, hi)
            if hi - lo == len(rows) and np.all(np.diff(rows) == 1) and np.all(np.diff(pos) == 1):
                # the common case: one sequential read, straight into the result
                self._read_rows(group, path, z, lo, hi, out[pos[0]:pos[0] + len(pos)])
            elif hi - lo <= 2 * len(rows) + z.chunks[0]:
                span = np.empty((hi - lo, *out.shape[1:]), dtype=out.dtype)
                self._read_rows(group, path, z, lo, hi, span)
                out[pos] = span[rows - lo]
            else:  # sparse: only the chunks holding the rows
                uniq, inv = np.unique(rows, return_inverse=True)
                out[pos] = np.asarray(z.get_orthogonal_selection((uniq,)))[inv]
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
            out[...] = z[lo:hi]
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
            except FileNotFoundError:
                got = -1
            if got != (r1 - r0) * row_bytes:  # never written or unexpected: let zarr decide
                out[r0 - lo:r1 - lo] = z[r0:r1]

    def _uncommit(self, group: str, key: str) -> None:
        """Drop one entry from its batch record (rewritten atomically); its rows become garbage."""
        self._check_writable()
        self._refresh(group)
        name = self._where.get(group, {}).get(key)
        if name is None:
            return
        doc = self._commits.get(group, name) or {"entries": {}}
        doc["entries"].pop(key, None)
        if doc["entries"]:
            self._commits.put(group, name, doc)
        else:
            self._commits.delete(group, name)
        # extension records of that key are dropped too: the redo writes every array again
        for other in self._commits.keys(group):
            if other == name:
                continue
            odoc = self._commits.get(group, other)
            if odoc and key in odoc.get("entries", {}) and odoc["entries"][key].get("extends"):
                odoc["entries"].pop(key)
                if odoc["entries"]:
                    self._commits.put(group, other, odoc)
                else:
                    self._commits.delete(group, other)
        self._index.get(group, {}).pop(key, None)
        self._where.get(group, {}).pop(key, None)

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
        """Nothing to compact: segments are packed as they are written."""
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
        """Remove segments no commit record names and orphan ``*.partial`` files (writer only).

        Rows past a segment's last record stay (they sit in chunks shared with committed rows)
        but are never read.
        """
        self._check_writable()
        removed = 0
        for group in self._listdir("seg"):
            if group.endswith(".json"):  # zarr's group metadata
                continue
            self._refresh(group)
            used = {rec["loc"][n][0].split("/", 1)[0] for rec in self._index.get(group, {}).values()
                    for n in rec["loc"]}
            used |= {s for s in self._segment.values()}
            for seg in self._listdir(f"seg/{group}"):
                if seg not in used and not seg.endswith(".json"):
                    self._rmtree(f"seg/{group}/{seg}")
                    removed += 1
        if self._fs is None:
            for p in self._root.rglob("*.partial"):
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        self._lock.release()

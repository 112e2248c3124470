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
(:func:`stores.convert.convert_store`).
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
        where = self._where.setdefault(group, {})
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

    def has(self, group: str, key: str) -> bool:
        return self.record(group, key) is not None

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
        offsets = {aname: self._append(group, seg, aname, rows) for aname, rows in by_array.items()}
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

    def commit(self, group: str, key: str, arrays: Mapping[str, np.ndarray], record: dict) -> dict:
        return self.commit_many(group, [(key, arrays, record)])[0]

    def _append(self, group: str, seg: str, aname: str, rows: list[np.ndarray]) -> int:
        """Append ``rows`` to this writer's packed array; returns the first new row's index."""
        import zarr

        data = np.stack(rows)  # [n, *shape]
        slot = self._seg_arrays.get(f"{group}/{seg}/{aname}")
        if slot is None:
            z = zarr.create_array(
                self._store, name=f"seg/{group}/{seg}/{aname}", shape=data.shape, dtype=data.dtype,
                chunks=(chunk_rows(data.shape[1:], data.dtype), *data.shape[1:]),
                fill_value=0, compressors=None, overwrite=True,
            )
            z[...] = data
            self._seg_arrays[f"{group}/{seg}/{aname}"] = [z, len(data)]
            return 0
        z, start = slot
        z.resize((start + len(data), *data.shape[1:]))  # only this writer ever resizes it (I3)
        z[start:start + len(data)] = data
        slot[1] = start + len(data)
        return start

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
        shape = dtype = None
        for i, k in enumerate(keys):
            rec = idx.get(k)
            if rec is None:
                raise StoreError(f"{group}/{k} is not in store {self.path}")
            meta = rec["arrays"].get(name)
            if meta is None:
                raise StoreError(f"{group}/{k} has no array {name!r} (has {sorted(rec['arrays'])})")
            if shape is None:
                shape, dtype = tuple(meta["shape"]), np.dtype(meta["dtype"])
            elif (tuple(meta["shape"]), np.dtype(meta["dtype"])) != (shape, dtype):
                raise StoreError(f"{group}/{name} has different shapes across entries; read them one by one")
            path, row = rec["loc"][name]
            by_path.setdefault(path, []).append((i, row))
        out = np.empty((len(keys), *shape), dtype=dtype)
        for path, pairs in by_path.items():
            pos = np.array([p for p, _ in pairs], dtype=np.int64)
            rows = np.array([r for _, r in pairs], dtype=np.int64)
            lo, hi = int(rows.min()), int(rows.max()) + 1
            z = self._array(group, path, hi)
            if hi - lo <= 2 * len(rows) + z.chunks[0]:
                out[pos] = np.asarray(z[lo:hi])[rows - lo]
            else:  # sparse: only the chunks holding the rows
                uniq, inv = np.unique(rows, return_inverse=True)
                out[pos] = np.asarray(z.get_orthogonal_selection((uniq,)))[inv]
        return out

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

"""Zarr v3 backend (the default): one small array per entry and name, commit records as files.

Layout::

    STORE.zarr/zarr.json                     root group; attrs["clipcache"] = store attributes
    STORE.zarr/<group>/<key>/<name>/         one array per entry and name, a single chunk
    STORE.zarr/meta/commits/<group>/<key>.json   commit record, written last, atomically
    STORE.zarr/meta/docs/<group>/<key>.json      small JSON documents (failed, splits, ...)
    STORE.zarr/packed/<group>/<gen>/<name>   after finalize: one array for all entries
    STORE.zarr/meta/packed/<group>.json      which keys and which generation the packed arrays hold
    STORE.zarr/.lock                         writer lock (flock)

Reading one entry is one chunk per array; reading one array for all entries is one or a few
chunk reads of the packed copy when it is up to date, else one read per entry.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .base import (
    LeaseLock,
    LAYOUT_VERSION,
    FeatureStore,
    JsonDir,
    StoreError,
    StoreFormatError,
    StoreNotFound,
    WriteLock,
    build_record,
)

log = logging.getLogger(__name__)

_PACK_CHUNK_BYTES = 16 << 20


class ZarrStore(FeatureStore):
    packable = ("videos",)

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
                if attrs is None:
                    raise StoreNotFound(f"no clipcache store at {path}")
                full = {"layout_version": LAYOUT_VERSION, **attrs}
                zarr.open_group(self._store, mode="a", attributes={"clipcache": full},
                                use_consolidated=False)
            group = zarr.open_group(self._store, mode="r", use_consolidated=False)
            self._attrs = dict(group.attrs.get("clipcache") or {})
            if not self._attrs:
                raise StoreFormatError(f"{path} is a Zarr store but not a clipcache store")
            if self._attrs.get("layout_version") != LAYOUT_VERSION:
                raise StoreFormatError(
                    f"store {path} has clipcache layout version {self._attrs.get('layout_version')}, "
                    f"this clipcache reads version {LAYOUT_VERSION}; re-extract into a new store"
                )
        except BaseException:
            self._lock.release()
            raise
        meta = f"{self._root}/meta" if self._fs is not None else self._root / "meta"
        self._commits = JsonDir(f"{meta}/commits" if self._fs is not None else meta / "commits", self._fs)
        self._docs = JsonDir(f"{meta}/docs" if self._fs is not None else meta / "docs", self._fs)
        self._packed_meta = JsonDir(f"{meta}/packed" if self._fs is not None else meta / "packed", self._fs)

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

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    # ----------------------------------------------------------------- entries
    def commit(self, group: str, key: str, arrays: Mapping[str, np.ndarray], record: dict) -> dict:
        import zarr

        self._check_writable()
        arrays = {n: np.asarray(a, order="C") for n, a in arrays.items()}  # keeps 0-d arrays 0-d
        # A leftover of an interrupted attempt (never committed, so never visible) is replaced.
        self._rmtree(f"{group}/{key}")
        for name, arr in arrays.items():
            z = zarr.create_array(
                self._store,
                name=f"{group}/{key}/{name}",
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=arr.shape if arr.ndim else (),
                fill_value=0,
                overwrite=True,
                write_data=True,
            )
            z[...] = arr
        rec = build_record(arrays, record)
        self._commits.put(group, key, rec)  # the commit point
        if isinstance(self._lock, LeaseLock) and self._lock.held:
            self._lock.refresh()
        return rec

    def keys(self, group: str) -> list[str]:
        return self._commits.keys(group)

    def record(self, group: str, key: str) -> dict | None:
        return self._commits.get(group, key)

    def records(self, group: str) -> dict[str, dict]:
        return self._commits.items(group)

    def read(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        import zarr

        rec = self.record(group, key)
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        names = list(rec["arrays"]) if names is None else list(names)
        out = {}
        for name in names:
            if name not in rec["arrays"]:
                raise StoreError(f"{group}/{key} has no array {name!r} (has {sorted(rec['arrays'])})")
            out[name] = np.asarray(zarr.open_array(self._store, path=f"{group}/{key}/{name}", mode="r")[...])
        return out

    def _uncommit(self, group: str, key: str) -> None:
        self._check_writable()
        self._commits.delete(group, key)

    # ----------------------------------------------------------------- packed columns
    def finalize(self) -> None:
        """Pack each small per-video array into one array, for one-read loading of a column."""
        import zarr

        self._check_writable()
        for group in self.packable:
            keys = self.keys(group)
            if not keys:
                continue
            meta = self._packed_meta.get(group, "index") or {}
            if meta.get("keys") == keys:
                continue
            recs = self.records(group)
            names = sorted(set.intersection(*(set(r["arrays"]) for r in recs.values())))
            gen = uuid.uuid4().hex[:12]
            packed = []
            for name in names:
                shapes = {tuple(recs[k]["arrays"][name]["shape"]) for k in keys}
                if len(shapes) != 1:
                    continue
                shape = shapes.pop()
                dtype = np.dtype(recs[keys[0]]["arrays"][name]["dtype"])
                item_bytes = max(1, int(np.prod(shape)) * dtype.itemsize)
                if item_bytes > (1 << 20):  # large arrays (tokens) stay per entry only
                    continue
                rows = max(1, _PACK_CHUNK_BYTES // item_bytes)
                z = zarr.create_array(
                    self._store, name=f"packed/{group}/{gen}/{name}", shape=(len(keys), *shape),
                    dtype=dtype, chunks=(min(rows, len(keys)), *shape), fill_value=0, overwrite=True,
                )
                z[...] = self.read_column(group, name, keys, use_packed=False)
                packed.append(name)
            self._packed_meta.put(group, "index", {"keys": keys, "gen": gen, "names": packed})
            old = meta.get("gen")
            if old:
                self._rmtree(f"packed/{group}/{old}")

    def read_column(self, group: str, name: str, keys: list[str], use_packed: bool = True) -> np.ndarray:
        import zarr

        if use_packed and keys:  # no keys: the base class refuses, as for HDF5
            meta = self._packed_meta.get(group, "index") or {}
            if name in meta.get("names", ()):
                pos = {k: i for i, k in enumerate(meta["keys"])}
                if all(k in pos for k in keys):
                    try:
                        z = zarr.open_array(self._store, path=f"packed/{group}/{meta['gen']}/{name}",
                                            mode="r")
                        idx = np.array([pos[k] for k in keys], dtype=np.int64)
                        if len(idx) and np.all(np.diff(idx) == 1):
                            return z[int(idx[0]): int(idx[-1]) + 1]
                        return z[...][idx]
                    except (FileNotFoundError, KeyError, ValueError) as err:
                        log.debug("packed column %s/%s unreadable (%s); reading entries", group, name, err)
        return super().read_column(group, name, keys)

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

    def gc(self) -> int:
        """Remove uncommitted entry directories and orphan ``*.partial`` files (writer only)."""
        self._check_writable()
        if self._fs is not None:
            return self._gc_remote()
        removed = 0
        for group in ("videos", "text"):
            gdir = self._root / group
            if not gdir.is_dir():
                continue
            committed = set(self.keys(group))
            for d in gdir.iterdir():
                if d.is_dir() and d.name not in committed:
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
        for p in self._root.rglob("*.partial"):
            p.unlink(missing_ok=True)
            removed += 1
        return removed

    def _gc_remote(self) -> int:
        removed = 0
        for group in ("videos", "text"):
            committed = set(self.keys(group))
            try:
                entries = self._fs.ls(f"{self._root}/{group}", detail=True)
            except FileNotFoundError:
                continue
            for e in entries:
                name = e["name"].rstrip("/").rsplit("/", 1)[-1]
                if e["type"] == "directory" and name not in committed:
                    self._fs.rm(e["name"], recursive=True)
                    removed += 1
        return removed

    def close(self) -> None:
        self._lock.release()

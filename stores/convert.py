"""Convert a Zarr store of layout version 1 (one array per entry and name) to the segment layout.

Layout 1, as clipcache wrote it before packed segments::

    OLD.zarr/zarr.json                          attrs["clipcache"]["layout_version"] == 1
    OLD.zarr/<group>/<key>/<name>/              one array per entry and name
    OLD.zarr/meta/commits/<group>/<key>.json    one commit record per entry (sha256 of each array)
    OLD.zarr/meta/docs/<group>/<key>.json       documents (failed, splits, ...)

The conversion reads only committed entries, re-hashes every array against its record (a bad
entry is left out and reported, as ``verify`` would), and writes them in batches into a new
store; the old store is never modified. The cache key is kept, with its layout version updated,
so ``extract`` with the same options resumes the new store.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .base import (
    LAYOUT_VERSION,
    JsonDir,
    StoreError,
    StoreFormatError,
    StoreNotFound,
    array_sha256,
    storage_options,
)
from .zarr_store import LEGACY_LAYOUT

log = logging.getLogger(__name__)


@dataclass
class ConvertReport:
    entries: dict[str, int] = field(default_factory=dict)  # group -> entries converted
    bad: list[str] = field(default_factory=list)  # "group/key" whose arrays did not match the record
    documents: int = 0

    def line(self) -> str:
        counts = " ".join(f"{g}={n}" for g, n in sorted(self.entries.items()))
        return f"converted {counts} documents={self.documents} bad={len(self.bad)}"


class _LegacyReader:
    """Read-only access to a layout-1 store (local path or fsspec URL)."""

    def __init__(self, path: str):
        import zarr

        self.path = path
        fs = None
        if "://" in path and not path.startswith("file://"):
            import fsspec

            opts = storage_options()  # --storage-option / CLIPCACHE_STORAGE_OPTIONS, as every store reads
            fs, root = fsspec.core.url_to_fs(path, **opts)
            root = root.rstrip("/")
            self.store = zarr.storage.FsspecStore.from_url(path, read_only=True, storage_options=opts)
            meta = f"{root}/meta"
            exists = fs.exists(f"{root}/zarr.json")
        else:
            root = path[len("file://"):] if path.startswith("file://") else path
            self.store = zarr.storage.LocalStore(root, read_only=True)
            meta = f"{root}/meta"
            exists = os.path.exists(os.path.join(root, "zarr.json"))
        if not exists:
            if os.path.isfile(root) or path.endswith((".h5", ".hdf5")):
                raise StoreError(f"{path} is an HDF5 store; convert reads Zarr stores of layout 1 (an HDF5 store "
                                 "needs no conversion)")
            raise StoreNotFound(f"no clipcache store at {path}")
        self.attrs = dict(zarr.open_group(self.store, mode="r", use_consolidated=False).attrs.get("clipcache") or {})
        if self.attrs.get("layout_version") != LEGACY_LAYOUT:
            raise StoreFormatError(
                f"{path} is not a clipcache store of layout version {LEGACY_LAYOUT} "
                f"(it has {self.attrs.get('layout_version')!r}); nothing to convert"
            )
        self.commits = JsonDir(f"{meta}/commits", fs)
        self.docs = JsonDir(f"{meta}/docs", fs)
        if fs is None:
            from pathlib import Path

            self.commits, self.docs = JsonDir(Path(meta) / "commits"), JsonDir(Path(meta) / "docs")
        self.fs, self.root = fs, root

    def groups(self, jd: JsonDir) -> list[str]:
        try:
            if self.fs is not None:
                return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(jd.root, detail=False))
            return sorted(p.name for p in jd.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def read(self, group: str, key: str, names) -> dict[str, np.ndarray]:
        import zarr

        return {n: np.asarray(zarr.open_array(self.store, path=f"{group}/{key}/{n}", mode="r")[...])
                for n in names}


def convert_store(src: str, dst: str, batch: int = 64,
                  progress: Callable[[int], None] | None = None,
                  packable: Sequence[str] | None = None) -> ConvertReport:
    """Copy every committed entry and document of every group of the layout-1 store ``src`` into
    a new store ``dst`` (which must not exist yet; ``packable`` as for ``open_store``). Returns
    what was converted."""
    old = _LegacyReader(str(src))
    from . import open_store, store_exists

    if store_exists(dst):
        raise StoreError(f"{dst} already exists; convert into a new path")
    attrs = {k: v for k, v in old.attrs.items() if k != "layout_version"}
    if isinstance(attrs.get("cache_key"), dict) and "layout_version" in attrs["cache_key"]:
        attrs["cache_key"] = {**attrs["cache_key"], "layout_version": LAYOUT_VERSION}
    rep = ConvertReport()
    with open_store(dst, "a", attrs=attrs, packable=packable) as new:
        for group in old.groups(old.commits):
            pending: list = []
            rep.entries[group] = 0
            for key in old.commits.keys(group):
                rec = old.commits.get(group, key)
                if rec is None:
                    continue
                try:
                    arrays = old.read(group, key, list(rec["arrays"]))
                    ok = all(array_sha256(arrays[n]) == m["sha256"] for n, m in rec["arrays"].items())
                except (FileNotFoundError, KeyError, ValueError, OSError):
                    ok = False
                if not ok:
                    rep.bad.append(f"{group}/{key}")
                    log.warning("%s/%s: arrays do not match the record; left out", group, key)
                    continue
                record = {k: v for k, v in rec.items() if k not in ("arrays", "layout_version")}
                pending.append((key, arrays, record))
                if len(pending) >= batch:
                    new.commit_many(group, pending)
                    rep.entries[group] += len(pending)
                    if progress:
                        progress(len(pending))
                    pending = []
            if pending:
                new.commit_many(group, pending)
                rep.entries[group] += len(pending)
                if progress:
                    progress(len(pending))
        for group in old.groups(old.docs):
            for key, doc in old.docs.items(group).items():
                new.put_json(group, key, doc)
                rep.documents += 1
        new.finalize()
    return rep


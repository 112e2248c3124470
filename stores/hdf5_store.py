"""HDF5 backend (a store path ending ``.h5``): write-once parts, published by atomic rename.

A killed HDF5 writer can leave its whole file unreadable (``reliability.md`` §0), so the
published file ``STORE.h5`` is never opened for writing. A writer job writes its entries into
its own part file ``STORE.h5.parts/parts/<run>.h5``, flushing after every entry, then writes the
entry's commit record as a JSON file outside HDF5. Closing the writer merges the published file
and all committed part entries into ``STORE.h5.tmp-<id>``, fsyncs it and renames it over
``STORE.h5``. After a crash the parts stay; readers see their committed entries, and the next
writer merges them.
"""

from __future__ import annotations

import json
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
    StoreError,
    StoreFormatError,
    StoreNotFound,
    WriteLock,
    build_record,
    fsync_path,
)

log = logging.getLogger(__name__)

_META = "_clipcache"
_PACK_MAX_ITEM_BYTES = 1 << 20


def _h5():
    import h5py

    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        log.warning("HDF5_USE_FILE_LOCKING=FALSE is set: HDF5 cannot detect a second writer")
    return h5py


class HDF5Store(FeatureStore):
    packable = ("videos",)

    def __init__(self, path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
                 shared: bool = False):
        super().__init__(path, mode)
        h5py = _h5()
        self._file = Path(path)
        self._work = Path(f"{path}.parts")
        self._lock = WriteLock(Path(f"{path}.lock"))
        self._published: dict = {"attrs": None, "commits": {}, "docs": {}}
        self._part_name: str | None = None
        self._part = None
        self._dirty = False
        self._shared = shared  # a rank of a job whose rank 0 holds the lock, merges and publishes
        if mode == "a" and not shared:
            self._lock.acquire(f"store {path}")
        try:
            if self._file.exists():
                try:
                    with h5py.File(self._file, "r") as f:
                        if _META not in f:
                            raise StoreFormatError(f"{path} is an HDF5 file but not a clipcache store")
                        self._published = json.loads(f[_META][()].decode())
                except OSError as err:
                    raise StoreFormatError(f"cannot read HDF5 store {path}: {err}") from err
            work_attrs = JsonDir(self._work).get("meta", "attrs")
            attrs_now = work_attrs or self._published["attrs"]
            if attrs_now is None:
                if mode == "r" or attrs is None:
                    raise StoreNotFound(f"no clipcache store at {path}")
                attrs_now = {"layout_version": LAYOUT_VERSION, **attrs}
            if attrs_now.get("layout_version") == 1:  # the HDF5 layout did not change in version 2
                attrs_now = {**attrs_now, "layout_version": LAYOUT_VERSION}
            if attrs_now.get("layout_version") != LAYOUT_VERSION:
                raise StoreFormatError(
                    f"store {path} has clipcache layout version {attrs_now.get('layout_version')}, "
                    f"this clipcache reads version {LAYOUT_VERSION}; re-extract into a new store"
                )
            self._attrs = attrs_now
            if mode == "a" and not (self._work / "meta" / "attrs.json").exists():
                self._start_work_dir()
        except BaseException:
            self._lock.release()
            raise
        self._commits = JsonDir(self._work / "meta" / "commits")
        self._gone = JsonDir(self._work / "meta" / "uncommitted")
        self._docs = JsonDir(self._work / "meta" / "docs")

    def _start_work_dir(self) -> None:
        """Seed the work dir with the published documents; it becomes authoritative until merged."""
        docs = JsonDir(self._work / "meta" / "docs")
        for group, items in self._published["docs"].items():
            for key, obj in items.items():
                docs.put(group, key, obj)
        (self._work / "parts").mkdir(parents=True, exist_ok=True)
        JsonDir(self._work).put("meta", "attrs", self._attrs)  # written last: marks the dir ready

    @property
    def _work_ready(self) -> bool:
        return (self._work / "meta" / "attrs.json").exists()

    @property
    def attrs(self) -> dict:
        return dict(self._attrs)

    # ----------------------------------------------------------------- entries
    def commit_many(self, group: str, items: Sequence[tuple[str, Mapping[str, np.ndarray], dict]],
                    extends: bool = False) -> list[dict]:
        """Write a batch of entries into this writer's part file, flush once, then write each
        entry's commit record. An extension rewrites the entry whole (old and new arrays) into
        the part: a committed entry is never modified in place."""
        self._check_writable()
        h5py = _h5()
        if not items:
            return []
        if not self._work_ready:
            self._start_work_dir()
        if self._part is None:
            self._part_name = uuid.uuid4().hex[:16]
            self._part = h5py.File(self._work / "parts" / f"{self._part_name}.h5", "w")
        prepared = []
        for key, arrays, record in items:
            if extends:
                old = self.record(group, key)
                if old is None:
                    raise StoreError(f"{group}/{key} is not in store {self.path}; cannot extend it")
                arrays = {**self.read(group, key), **arrays}
                record = {k: v for k, v in old.items() if k not in ("arrays", "part", "layout_version")}
            path = f"{group}/{key}"
            if path in self._part:
                del self._part[path]
            g = self._part.require_group(path)
            for name, arr in arrays.items():
                g.create_dataset(name, data=np.asarray(arr, order="C"), track_times=False)
            prepared.append((key, arrays, record))
        self._part.flush()
        out = []
        for key, arrays, record in prepared:
            rec = build_record(arrays, record)
            rec["part"] = self._part_name
            self._gone.delete(group, key)
            self._commits.put(group, key, rec)  # the commit point of this entry
            out.append({k: v for k, v in rec.items() if k != "part"})
        self._dirty = True
        return out

    def update_attrs(self, attrs: dict) -> None:
        self._check_writable()
        if not self._work_ready:
            self._start_work_dir()
        self._attrs = {**attrs, "layout_version": LAYOUT_VERSION}
        JsonDir(self._work).put("meta", "attrs", self._attrs)
        self._dirty = True

    def _all_records(self, group: str) -> dict[str, dict]:
        recs = dict(self._published["commits"].get(group, {}))
        if self._work_ready:
            recs.update(self._commits.items(group))
            for k in self._gone.keys(group):
                recs.pop(k, None)
        return recs

    def keys(self, group: str) -> list[str]:
        return sorted(self._all_records(group))

    def record(self, group: str, key: str) -> dict | None:
        if self._work_ready:
            if self._gone.get(group, key) is not None:
                return None
            rec = self._commits.get(group, key)
            if rec is not None:
                return rec
        return self._published["commits"].get(group, {}).get(key)

    def records(self, group: str) -> dict[str, dict]:
        return self._all_records(group)

    def _open_source(self, rec: dict):
        h5py = _h5()
        part = rec.get("part")
        if part is None:
            return h5py.File(self._file, "r")
        if self._part is not None and part == self._part_name:
            return None  # our own open part
        return h5py.File(self._work / "parts" / f"{part}.h5", "r", locking=False)

    def read(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        rec = self.record(group, key)
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        names = list(rec["arrays"]) if names is None else list(names)
        for name in names:
            if name not in rec["arrays"]:
                raise StoreError(f"{group}/{key} has no array {name!r} (has {sorted(rec['arrays'])})")
        try:
            f = self._open_source(rec)
        except OSError as err:
            raise StoreError(f"cannot read {group}/{key} from store {self.path}: {err}") from err
        src = self._part if f is None else f
        try:
            return {n: src[f"{group}/{key}/{n}"][()] for n in names}
        finally:
            if f is not None:
                f.close()

    def read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        packed = self._published.get("packed", {}).get(group, {})
        if name in packed.get("names", ()) and not (self._work_ready and self._commits.keys(group)):
            pos = {k: i for i, k in enumerate(packed["keys"])}
            if all(k in pos for k in keys) and keys:
                with _h5().File(self._file, "r") as f:
                    data = f[f"packed/{group}/{name}"][()]
                return data[np.array([pos[k] for k in keys])]
        return super().read_column(group, name, keys)

    def _uncommit(self, group: str, key: str) -> None:
        self._check_writable()
        self._commits.delete(group, key)
        self._gone.put(group, key, {})
        self._dirty = True

    # ----------------------------------------------------------------- documents
    def put_json(self, group: str, key: str, obj: Any) -> None:
        self._check_writable()
        self._docs.put(group, key, obj)
        self._dirty = True

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
        self._dirty = True

    # ----------------------------------------------------------------- publish
    def _merge(self) -> None:
        """Write published + committed part entries to a temp file, then rename it into place."""
        h5py = _h5()
        if self._part is not None:
            self._part.close()
            self._part = None
        tmp = self._file.with_name(f"{self._file.name}.tmp-{uuid.uuid4().hex[:8]}")
        for stale in self._file.parent.glob(f"{self._file.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        groups = set(self._published["commits"]) | {
            d.name for d in (self._work / "meta" / "commits").glob("*") if d.is_dir()
        }
        meta: dict = {"attrs": self._attrs, "commits": {}, "docs": {}, "packed": {}}
        sources: dict[str | None, Any] = {}
        try:
            with h5py.File(tmp, "w") as out:
                for group in sorted(groups):
                    recs = self._all_records(group)
                    kept = {}
                    for key in sorted(recs):
                        rec = dict(recs[key])
                        part = rec.pop("part", None)
                        try:
                            if part not in sources:
                                sources[part] = (h5py.File(self._file, "r") if part is None else
                                                 h5py.File(self._work / "parts" / f"{part}.h5", "r"))
                            out.copy(sources[part][f"{group}/{key}"], f"{group}/{key}")
                        except (OSError, KeyError) as err:
                            log.warning("dropping %s/%s: its part file is unreadable (%s)", group, key, err)
                            sources.setdefault(part, None)
                            continue
                        kept[key] = rec
                    meta["commits"][group] = kept
                    if group in self.packable and kept:
                        meta["packed"][group] = self._pack(out, group, kept)
                for group in (d.name for d in (self._work / "meta" / "docs").glob("*") if d.is_dir()):
                    meta["docs"][group] = self._docs.items(group)
                out.create_dataset(_META, data=json.dumps(meta, sort_keys=True).encode())
        finally:
            for f in sources.values():
                if f is not None:
                    f.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._file)
        fsync_path(self._file.parent)
        self._published = meta
        shutil.rmtree(self._work, ignore_errors=True)

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

    def finalize(self) -> None:
        self._check_writable()
        if self._work.exists() and not self._shared:
            self._merge()
            self._dirty = False

    def close(self) -> None:
        try:
            if self.mode == "a" and self._lock.held and self._work.exists():
                self._merge()
                self._dirty = False
        finally:
            if self._part is not None:
                self._part.close()
                self._part = None
            self._lock.release()

    def gc(self) -> int:
        """Nothing to collect: unmerged parts are merged (or dropped when unreadable) on close."""
        self._check_writable()
        return 0


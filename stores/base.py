"""The feature-store interface: per-entry arrays made visible by an atomic commit record.

Every backend keeps the invariants of the project's store design (``reliability.md`` §7):

* I1 visibility: an entry (a video, a class's text embeddings) exists for readers iff its commit
  record exists and names the arrays with their sha256; arrays without a record do not exist.
* I2 immutability: a committed entry is never rewritten in place; a redo writes afresh.
* I3 single owner: one writer job at a time holds the store's lock (``flock``, released by the
  kernel on any exit, ``kill -9`` included); a second writer is refused.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

LAYOUT_VERSION = 2  # 2: packed per-writer segments (Zarr); 1: one array per entry


class StoreError(Exception):
    """Base error of the storage layer; the CLI prints it on one line (exit code 2)."""

    exit_code = 2


class StoreLocked(StoreError):
    """Another live process is writing this store."""


class StoreNotFound(StoreError, FileNotFoundError):
    """Opening for reading a store that does not exist."""


class StoreFormatError(StoreError):
    """Not a clipcache store, or one written by another layout version."""


class StoreReadOnly(StoreError):
    """A write was attempted on a store opened with mode='r'."""


def array_sha256(arr: np.ndarray) -> str:
    """Hash of the raw bytes, dtype and shape: lets readers detect lost or replaced data."""
    arr = np.asarray(arr, order="C")  # not ascontiguousarray: it turns a 0-d array into shape (1,)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory: so that a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``path`` via a same-directory temp file and ``os.replace``: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


class JsonDir:
    """A directory of small JSON documents, one per key, each written atomically.

    Local directories use temp file + ``os.replace``; an fsspec file system (``fs``) uses one
    ``pipe_file`` per document, which object stores (S3, GCS) apply atomically.
    """

    def __init__(self, root: Path | str, fs=None):
        self.fs = fs
        self.root = Path(root) if fs is None else str(root).rstrip("/")

    def _path(self, group: str, key: str):
        if "/" in key or key.startswith("."):
            raise StoreError(f"invalid entry key {key!r}")
        if self.fs is not None:
            return f"{self.root}/{group}/{key}.json"
        return self.root / group / f"{key}.json"

    def put(self, group: str, key: str, obj: Any) -> None:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        if self.fs is not None:
            self.fs.pipe_file(self._path(group, key), data)
        else:
            atomic_write_bytes(self._path(group, key), data)

    def get(self, group: str, key: str) -> Any | None:
        path = self._path(group, key)
        try:
            raw = self.fs.cat_file(path) if self.fs is not None else path.read_bytes()
            return json.loads(raw)
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as err:  # only a non-atomic foreign writer can cause this
            raise StoreFormatError(f"unreadable record {path}: {err}") from err

    def delete(self, group: str, key: str) -> None:
        try:
            if self.fs is not None:
                self.fs.rm_file(self._path(group, key))
            else:
                self._path(group, key).unlink()
        except FileNotFoundError:
            pass

    def keys(self, group: str) -> list[str]:
        try:
            if self.fs is not None:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(f"{self.root}/{group}", detail=False)]
            else:
                names = os.listdir(self.root / group)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def items(self, group: str) -> dict[str, Any]:
        out = {}
        for k in self.keys(group):
            v = self.get(group, k)
            if v is not None:
                out[k] = v
        return out


class LeaseLock:
    """Writer lease on a remote store: a lease document refreshed while the job writes.

    Object stores have no ``flock``; a lease younger than ``ttl`` seconds whose holder is not us
    refuses a second writer. (A crashed writer's lease blocks others until it expires.)
    """

    def __init__(self, docs: JsonDir, ttl: float = 600.0):
        self.docs, self.ttl = docs, ttl
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self, what: str) -> None:
        cur = self.docs.get("lease", "writer")
        if cur and cur.get("token") != self.token and time.time() - cur.get("heartbeat", 0) < self.ttl:
            raise StoreLocked(
                f"{what} is being written by pid {cur.get('pid')} on {cur.get('host')}; wait for that "
                f"job to finish (or for its lease to expire, {int(self.ttl)} s after its last write)"
            )
        self.refresh()
        self.held = True

    def refresh(self) -> None:
        self.docs.put("lease", "writer", {"token": self.token, "pid": os.getpid(),
                                          "host": socket.gethostname(), "heartbeat": time.time()})

    def release(self) -> None:
        if self.held:
            self.docs.delete("lease", "writer")
            self.held = False


class WriteLock:
    """Exclusive writer lease: ``flock`` on a lock file plus a JSON note of who holds it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = self.holder()
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise StoreLocked(
                f"{what} is being written by {who}; wait for that job to finish "
                "(or stop it) before writing to it again"
            ) from None
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        self._fd = fd

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class FeatureStore(ABC):
    """Entries of named arrays, grouped (``videos``, ``text``), visible once committed.

    Also holds small JSON documents (``failed`` reports, ``splits``) and the store's attributes
    (the cache key), written once when the store is created.
    """

    #: entry groups whose small arrays are packed into one array per name by :meth:`finalize`
    packable: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, mode: str):
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = str(path)
        self.mode = mode

    # ----------------------------------------------------------------- attributes
    @property
    @abstractmethod
    def attrs(self) -> dict:
        """The store's attributes (cache key, layout version), as written at creation."""

    # ----------------------------------------------------------------- entries
    @abstractmethod
    def commit_many(self, group: str, items: Sequence[tuple[str, Mapping[str, np.ndarray], dict]],
                    extends: bool = False) -> list[dict]:
        """Write a batch of entries ``(key, arrays, record)``, then, last, the commit record(s)
        that make them visible; returns each entry's record (with the sha256 of its arrays).

        ``extends=True`` adds ``arrays`` to entries that are already committed (an extended
        store); their other arrays and record fields are kept.
        """

    def commit(self, group: str, key: str, arrays: Mapping[str, np.ndarray], record: dict) -> dict:
        """A batch of one entry."""
        return self.commit_many(group, [(key, arrays, record)])[0]

    def update_attrs(self, attrs: dict) -> None:
        """Replace the store's attributes (the cache key grows when a store is extended)."""
        raise StoreError(f"store {self.path} cannot change its attributes")

    @abstractmethod
    def keys(self, group: str) -> list[str]:
        """Sorted keys of the committed entries of ``group``."""

    @abstractmethod
    def record(self, group: str, key: str) -> dict | None:
        """The commit record of an entry, or None when it is not committed."""

    @abstractmethod
    def read(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of one committed entry."""

    def has(self, group: str, key: str) -> bool:
        return self.record(group, key) is not None

    def records(self, group: str) -> dict[str, dict]:
        return {k: r for k in self.keys(group) if (r := self.record(group, k)) is not None}

    def read_column(self, group: str, name: str, keys: list[str]) -> np.ndarray:
        """One array for many entries, stacked on a new first axis (``[len(keys), ...]``)."""
        if not keys:
            raise StoreError(f"no entries to read {group}/{name} from")
        return np.stack([self.read(group, k, [name])[name] for k in keys])

    # ----------------------------------------------------------------- json documents
    @abstractmethod
    def put_json(self, group: str, key: str, obj: Any) -> None: ...

    @abstractmethod
    def get_json(self, group: str, key: str) -> Any | None: ...

    @abstractmethod
    def json_keys(self, group: str) -> list[str]: ...

    @abstractmethod
    def delete_json(self, group: str, key: str) -> None: ...

    def json_items(self, group: str) -> dict[str, Any]:
        return {k: v for k in self.json_keys(group) if (v := self.get_json(group, k)) is not None}

    # ----------------------------------------------------------------- maintenance
    def verify(self, group: str, repair: bool = False) -> tuple[int, list[str]]:
        """Re-hash every committed entry of ``group`` against its record.

        Returns (checked, bad keys). With ``repair``, a bad entry's record is removed so that a
        re-run of the writer redoes it (its data is never trusted again).
        """
        bad = []
        keys = self.keys(group)
        for k in keys:
            rec = self.record(group, k)
            try:
                arrays = self.read(group, k)
                ok = rec is not None and all(
                    n in arrays and array_sha256(arrays[n]) == meta["sha256"]
                    for n, meta in rec["arrays"].items()
                )
            except Exception:  # noqa: BLE001 - any read failure means the entry is bad
                ok = False
            if not ok:
                bad.append(k)
                if repair:
                    self._uncommit(group, k)
        return len(keys), bad

    @abstractmethod
    def _uncommit(self, group: str, key: str) -> None: ...

    def finalize(self) -> None:
        """Optional compaction after a writer finishes (packed columns for fast reads)."""

    def close(self) -> None:
        """Release the writer lock and flush."""

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreReadOnly(f"store {self.path} is open read-only")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def build_record(arrays: Mapping[str, np.ndarray], record: dict) -> dict:
    """The commit record: the caller's fields plus shape, dtype and sha256 of each array."""
    out = dict(record)
    out["arrays"] = {
        n: {"shape": list(a.shape), "dtype": np.asarray(a).dtype.str, "sha256": array_sha256(a)}
        for n, a in arrays.items()
    }
    out["layout_version"] = LAYOUT_VERSION
    return out

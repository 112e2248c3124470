"""The feature-store interface: per-entry arrays made visible by an atomic commit record.

Every backend keeps the invariants of the project's store design (``reliability.md`` §7):

* I1 visibility: an entry (a video, a class's text embeddings) exists for readers iff its commit
  record exists and names the arrays with their sha256; arrays without a record do not exist.
* I2 immutability: a committed entry is never rewritten in place; a redo writes afresh.
* I3 single owner: every stored object has one writer. Any number of writers write a store at
  once, each under its own id and lease (:mod:`.leases`), into its own segments and records; a
  second live writer with the same id is refused. A key committed by two writers resolves to one
  copy by a fixed rule (:mod:`.log`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

LAYOUT_VERSION = 3  # 3: many writers, records in meta/log (2: meta/commits); 1: one array per entry


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


class StoreCorrupt(StoreError):
    """An entry's stored bytes do not match the sha256 of its commit record (damaged on disk)."""


#: fsspec options for stores at URLs, as JSON: set by ``--storage-option`` and inherited by the
#: processes a command starts (torchrun ranks, Ray workers on this machine)
STORAGE_OPTIONS_ENV = "CLIPCACHE_STORAGE_OPTIONS"


def storage_options() -> dict:
    """The fsspec options every store URL is opened with (``--storage-option KEY=VALUE``).

    Credentials and the endpoint come from fsspec's own sources as usual (for S3, the standard
    ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included); these are the extra ones.
    """
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StoreError(f"{STORAGE_OPTIONS_ENV} is not a JSON object: {err}") from err
    if not isinstance(opts, dict):
        raise StoreError(f"{STORAGE_OPTIONS_ENV} is not a JSON object")
    return opts


def set_storage_options(opts: dict) -> None:
    """Use ``opts`` (merged over what is set) for every store URL opened from now on, in this
    process and the ones it starts."""
    os.environ[STORAGE_OPTIONS_ENV] = json.dumps({**storage_options(), **opts}, sort_keys=True)


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
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        f = open(tmp, "wb")
    except FileNotFoundError:  # the folder is new (made here, not checked on every write)
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb")
    try:
        with f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: no temp file is left behind to hold the space
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def write_rows_at(path: Path, offset: int, data, size: int) -> None:
    """Write ``data`` at byte ``offset`` of the local file ``path`` of ``size`` bytes, in place
    (the file is made, zero-filled to ``size``, when missing). Only for bytes no reader may look
    at yet (a segment's rows past its last commit): a crash mid-write tears only those; the
    committed bytes around them are never rewritten. Closed before returning, so the bytes are
    handed to the file system (on NFS: flushed) before the commit record is written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    except FileNotFoundError:  # the folder is new (made here, not checked on every write)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # zeros: what zarr pads a chunk's missing rows with
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


class Files:
    """Whole objects at paths relative to a store's root: a local directory or an fsspec file
    system (``fs``). Every write replaces an object whole, so readers see the old or the new.

    Local writes go through a same-directory temp file and ``os.replace`` (durable: fsync'd);
    object stores (S3, GCS) apply one ``pipe_file`` PUT atomically. :meth:`create` is an
    exclusive create: ``link(2)`` locally, ``If-None-Match: *`` on S3 (s3fs ``mode="create"``);
    on other fsspec file systems it is fsspec's exists-then-write, which two processes can race.
    """

    def __init__(self, root: Path | str, fs=None):
        self.fs = fs
        self.root = Path(root) if fs is None else str(root).rstrip("/")

    @property
    def local(self) -> bool:
        return self.fs is None

    def path(self, rel: str):
        return self.root / rel if self.fs is None else f"{self.root}/{rel}"

    def put(self, rel: str, data: bytes, durable: bool = True) -> None:
        if self.fs is not None:
            self.fs.pipe_file(self.path(rel), data)
        else:
            atomic_write_bytes(self.path(rel), data, durable)

    def write_at(self, rel: str, offset: int, data, size: int) -> None:
        """Local files only: :func:`write_rows_at` (object stores have no partial writes)."""
        write_rows_at(self.path(rel), offset, data, size)

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if no object is there; False (nothing written) when one is."""
        if self.fs is not None:
            try:
                self.fs.pipe_file(self.path(rel), data, mode="create")
            except FileExistsError:
                return False
            return True
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails when the name exists
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(path.parent)
        return True

    def get(self, rel: str, start: int | None = None, end: int | None = None) -> bytes | None:
        """The object's bytes (``start:end`` only, when given), or None when it does not exist."""
        try:
            if self.fs is not None:
                if start is None and end is None:
                    return self.fs.cat_file(self.path(rel))
                return self.fs.cat_file(self.path(rel), start=start, end=end)
            with open(self.path(rel), "rb") as f:
                if start:
                    f.seek(start)
                return f.read() if end is None else f.read(end - (start or 0))
        except FileNotFoundError:
            return None

    def get_many(self, ranges: list[tuple[str, int, int]]) -> list[bytes | None]:
        """``get(rel, start, end)`` of each ``(rel, start, end)``; on an object store all at once
        (concurrent ranged GETs), so opening a store costs a few round trips, not one per part."""
        if self.fs is None or not ranges:
            return [self.get(rel, start, end) for rel, start, end in ranges]
        got = self.fs.cat_ranges([self.path(r) for r, _, _ in ranges], [s for _, s, _ in ranges],
                                 [e for _, _, e in ranges], on_error="return")
        out = []
        for g in got:
            if isinstance(g, FileNotFoundError):
                out.append(None)
            elif isinstance(g, BaseException):
                raise g
            else:
                out.append(g)
        return out

    def exists(self, rel: str) -> bool:
        if self.fs is not None:
            return bool(self.fs.exists(self.path(rel)))
        return self.path(rel).exists()

    def delete(self, rel: str) -> None:
        try:
            if self.fs is not None:
                self.fs.rm_file(self.path(rel))
            else:
                self.path(rel).unlink()
        except FileNotFoundError:
            pass

    def list(self, rel: str) -> list[str]:
        """Sorted names directly under ``rel`` (files and folders), temp files left out; fresh
        from the server each time (fsspec's listing cache would hide other writers' objects)."""
        try:
            if self.fs is not None:
                names = [p.rstrip("/").rsplit("/", 1)[-1]
                         for p in self.fs.ls(self.path(rel), detail=False, refresh=True)]
            else:
                names = os.listdir(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith(".") and not n.endswith(".partial"))

    def rmtree(self, rel: str) -> None:
        if self.fs is not None:
            try:
                self.fs.rm(self.path(rel), recursive=True)
            except FileNotFoundError:
                pass
        else:
            shutil.rmtree(self.path(rel), ignore_errors=True)


class JsonDir:
    """A directory of small JSON documents, one per key, each written atomically (:class:`Files`)."""

    def __init__(self, root: Path | str, fs=None):
        self.files = Files(root, fs)
        self.fs, self.root = self.files.fs, self.files.root

    @staticmethod
    def _rel(group: str, key: str) -> str:
        if "/" in key or key.startswith("."):
            raise StoreError(f"invalid entry key {key!r}")
        return f"{group}/{key}.json"

    def _path(self, group: str, key: str):
        return self.files.path(self._rel(group, key))

    def put(self, group: str, key: str, obj: Any) -> None:
        self.files.put(self._rel(group, key), dump_json(obj))

    def get(self, group: str, key: str) -> Any | None:
        raw = self.files.get(self._rel(group, key))
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:  # only a non-atomic foreign writer can cause this
            raise StoreFormatError(f"unreadable record {self._path(group, key)}: {err}") from err

    def delete(self, group: str, key: str) -> None:
        self.files.delete(self._rel(group, key))

    def keys(self, group: str) -> list[str]:
        return [n[:-5] for n in self.files.list(group) if n.endswith(".json")]

    def items(self, group: str) -> dict[str, Any]:
        out = {}
        for k in self.keys(group):
            v = self.get(group, k)
            if v is not None:
                out[k] = v
        return out


def dump_json(obj: Any) -> bytes:
    """Compact, key-sorted JSON: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class WriteLock:
    """Exclusive lock on a local file: ``flock`` (released by the kernel on any exit, ``kill -9``
    included) plus a JSON note of who holds it, written into the lock file itself."""

    def __init__(self, path: Path, note: dict | None = None):
        self.path = Path(path)
        self.note = note or {}
        self._fd: int | None = None

    def acquire(self, what: str, wait: float = 0.0, message: str | None = None) -> None:
        """Take the lock, waiting up to ``wait`` seconds for a holder to let go; then refuse with
        :class:`StoreLocked` (``message``, or one saying who holds it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(fd)
                holder = self.holder()
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
                raise StoreLocked(message.format(who=who) if message else
                                  f"{what} is being written by {who}; wait for that job to finish "
                                  "(or stop it) before writing to it again") from None
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **self.note})
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


def flock_held(path: Path) -> bool:
    """Whether some open file description holds a ``flock`` on ``path`` (a live process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class FeatureStore(ABC):
    """Entries of named arrays in named groups (the caller's), visible once committed.

    Also holds small JSON documents (``failed`` reports, ``splits``) and the store's attributes
    (the cache key), written once when the store is created.
    """

    #: entry groups whose small arrays a backend that publishes (HDF5) packs into one array per
    #: name, for :meth:`read_column`; chosen by the store's creator (``open_store(packable=...)``)
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

    def update_attrs(self, update: Callable[[dict], dict]) -> None:
        """Change the store's attributes under the store lock (the cache key grows when a store is
        extended): ``update(current)`` gets them as stored now, another writer's change included,
        and returns the new ones (``layout_version`` is the store's own)."""
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

    def read_verified(self, group: str, key: str, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """:meth:`read`, each array checked against the sha256 of its commit record.

        For callers that copy an entry's arrays on (extending it): a new record would hash the
        damaged bytes afresh, and ``verify`` could no longer tell. Raises :class:`StoreCorrupt`
        naming the arrays that differ (``verify --repair`` uncommits such an entry).
        """
        rec = self.record(group, key)
        if rec is None:
            raise StoreError(f"{group}/{key} is not in store {self.path}")
        arrays = self.read(group, key, names)
        bad = sorted(n for n, a in arrays.items() if array_sha256(a) != rec["arrays"][n]["sha256"])
        if bad:
            raise StoreCorrupt(f"{group}/{key} in store {self.path}: {', '.join(bad)} do not match the "
                               "sha256 of its commit record (damaged; verify --repair uncommits it)")
        return arrays

    def has(self, group: str, key: str) -> bool:
        return self.record(group, key) is not None

    def records(self, group: str) -> dict[str, dict]:
        return {k: r for k in self.keys(group) if (r := self.record(group, k)) is not None}

    def field(self, group: str, name: str, keys: list[str] | None = None) -> list:
        """Record field ``name`` of the committed entries ``keys`` (default: :meth:`keys`), None
        where an entry lacks it: what a reader of a million entries needs without a million
        records."""
        keys = self.keys(group) if keys is None else keys
        return [(self.record(group, k) or {}).get(name) for k in keys]

    def array_shapes(self, group: str, keys: list[str] | None = None) -> dict[str, list]:
        """Array name -> the shape of that array for each of ``keys`` (default: :meth:`keys`),
        None where an entry lacks it."""
        keys = self.keys(group) if keys is None else keys
        recs = [self.record(group, k) or {"arrays": {}} for k in keys]
        names = sorted({n for r in recs for n in r["arrays"]})
        return {n: [tuple(r["arrays"][n]["shape"]) if n in r["arrays"] else None for r in recs] for n in names}

    def duplicates(self, group: str) -> list[tuple[str, str]]:
        """(key, commit record) of every copy of a key that lost to another copy of it (two
        writers committed the same key): ``verify`` reports them, ``gc`` removes them."""
        return []

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
        checked, bad = self._bad_keys(group)
        if repair:
            for k in bad:
                self._uncommit(group, k)
        return checked, bad

    def _bad_keys(self, group: str) -> tuple[int, list[str]]:
        """(entries checked, keys whose data does not match their record): entry by entry."""
        keys = self.keys(group)
        return len(keys), [k for k in keys if not self._entry_ok(group, k)]

    def _entry_ok(self, group: str, key: str) -> bool:
        """One entry read back whole and every array's sha256 equal to its record's."""
        rec = self.record(group, key)
        try:
            arrays = self.read(group, key)
            return rec is not None and all(n in arrays and array_sha256(arrays[n]) == meta["sha256"]
                                           for n, meta in rec["arrays"].items())
        except Exception:  # noqa: BLE001 - any read failure means the entry is bad
            return False

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

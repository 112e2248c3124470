"""Prototype vectors in FAISS behind a small interface, saved as a directory published atomically.

:class:`PrototypeIndex` holds L2-normalised vectors ``[C, D]`` and answers inner-product
(= cosine) top-k searches. The index kind follows the size: exact ``IndexFlatIP`` below
``IndexConfig.approx_above`` vectors (every class-prototype index clipcache builds), ``IndexIVFFlat``
or ``IndexHNSWFlat`` above it. Ids are row positions ``0..len-1`` in insertion order; the caller
keeps what a row means (its class) beside the index.

faiss-gpu is used where it is installed *and* a GPU is present (runtime feature detection,
``ecosystem.md`` §3); anything else, including a GPU copy that fails, runs on faiss-cpu.

:meth:`PrototypeIndex.save` writes a directory: ``index.faiss``, one ``<name>.npy`` per extra
array, any files the caller writes, and last ``index.json`` (meta + a manifest with the size and
sha256 of every file). The directory is built under a temporary name in the same parent and then
swapped in with one atomic rename (``renameat2(RENAME_EXCHANGE)`` where the old one exists), so a
kill at any moment leaves the old or the new directory, never a mix. One writer at a time
(``flock`` on ``.<name>.lock`` beside it); stale temporary directories of killed writers are
removed by the next save. Knows nothing of CLIP or videos.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import sys
import typing
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from clipcache.stores.base import StoreError, StoreFormatError, StoreNotFound, WriteLock, file_sha256, fsync_path

from ..options import param

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
INDEX_FILE = "index.faiss"
META_FILE = "index.json"

Kind = Literal["auto", "flat", "ivf", "hnsw"]


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS index holds the vectors; all kinds score by inner product.

    ``kind="auto"``: exact ``flat`` below ``approx_above`` vectors, else ``approx``. IVF trains
    its ``nlist`` centroids (default ``4·√n`` as a power of two, 16..65536) on at most
    ``train_size`` vectors drawn with ``seed``, and searches ``nprobe`` lists; HNSW links each
    vector to ``hnsw_m`` neighbours. ``gpu``: ``None`` = use faiss-gpu when present, False = never.
    """

    kind: Kind = param("auto", help="FAISS index: exact flat, or IVF / HNSW (auto: flat below 100,000 classes, "
                                    "else IVF; approx=hnsw: HNSW).")
    approx_above: int = 100_000
    approx: Literal["ivf", "hnsw"] = "ivf"
    nlist: int | None = None
    nprobe: int = 16
    train_size: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    seed: int = 0
    gpu: bool | None = None

    def __post_init__(self):
        if self.kind not in typing.get_args(Kind):
            raise StoreError(f"index kind must be one of {', '.join(typing.get_args(Kind))}, not {self.kind!r}")
        if self.approx not in ("ivf", "hnsw"):
            raise StoreError(f"approximate index kind must be ivf or hnsw, not {self.approx!r}")
        for name in ("approx_above", "nprobe", "train_size", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise StoreError(f"index option {name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise StoreError(f"index option nlist must be >= 1, got {self.nlist}")

    def resolve_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.approx_above else self.approx

    def to_dict(self) -> dict:
        return asdict(self)


def _faiss():
    import faiss  # lazy: ~0.3 s

    return faiss


def gpu_available() -> bool:
    """faiss-gpu installed and at least one GPU visible (``ecosystem.md`` §3)."""
    faiss = _faiss()
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except (AttributeError, RuntimeError):
        return False


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as contiguous float32 ``[n, D]``."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise StoreError(f"vectors must be a 2-d array [n, D], got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


def default_nlist(n: int) -> int:
    """About ``4·√n`` lists as a power of two, at most 65536 and at most n / 39 (FAISS wants about
    39 training points per centroid)."""
    nlist = 2 ** round(np.log2(4.0 * np.sqrt(max(n, 1))))
    return int(max(1, min(nlist, 65536, n // 39)))


class PrototypeIndex:
    """L2-normalised vectors ``[n, D]`` searched by inner product (cosine); ids = row positions."""

    def __init__(self, cpu_index, cfg: IndexConfig, kind: str):
        self._cpu = cpu_index
        self.cfg = cfg
        self.kind = kind
        self._gpu = None  # faiss GPU copy used for search, rebuilt after add
        self._gpu_res = None
        self._gpu_tried = False

    # ----------------------------------------------------------------- building
    @classmethod
    def empty(cls, dim: int, cfg: IndexConfig | None = None, kind: str = "flat") -> "PrototypeIndex":
        """An empty index of ``dim`` (exact unless ``kind`` says otherwise; ivf needs training data)."""
        cfg = cfg or IndexConfig()
        faiss = _faiss()
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            index.hnsw.efSearch = cfg.ef_search
        else:
            raise StoreError(f"an empty {kind} index cannot be made (an IVF index is trained on its vectors)")
        return cls(index, cfg, kind)

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: IndexConfig | None = None) -> "PrototypeIndex":
        """Index ``vectors [n, D]`` (normalised here); the kind follows ``cfg`` and n."""
        cfg = cfg or IndexConfig()
        x = normalise(vectors)
        n, dim = x.shape
        kind = cfg.resolve_kind(n)
        if kind == "ivf":
            faiss = _faiss()
            nlist = cfg.nlist or default_nlist(n)
            if nlist > n:
                raise StoreError(f"an IVF index with {nlist} lists needs at least that many vectors, got {n}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = cfg.seed
            rng = np.random.default_rng(cfg.seed)
            sample = x if n <= cfg.train_size else x[np.sort(rng.choice(n, cfg.train_size, replace=False))]
            index.train(sample)
            index.nprobe = min(cfg.nprobe, nlist)
            out = cls(index, cfg, kind)
        else:
            out = cls.empty(dim, cfg, kind)
        if n:
            out._cpu.add(x)
        return out

    # ----------------------------------------------------------------- facts
    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def on_gpu(self) -> bool:
        return self._search_index() is not self._cpu

    def vectors(self) -> np.ndarray:
        """The stored (normalised) vectors ``[n, D]``, in id order."""
        if self.kind == "ivf":  # IVF lists need an id -> list map to give vectors back
            faiss = _faiss()
            ivf = faiss.extract_index_ivf(self._cpu)
            ivf.make_direct_map()
            try:
                out = ivf.reconstruct_n(0, len(self))
            finally:
                ivf.set_direct_map_type(faiss.DirectMap.NoMap)
        else:
            out = self._cpu.reconstruct_n(0, len(self))
        return np.asarray(out, dtype=np.float32).reshape(len(self), self.dim)

    # ----------------------------------------------------------------- use
    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append ``vectors [m, D]`` (normalised here); returns their ids ``[m]``."""
        x = normalise(vectors)
        if x.shape[1] != self.dim:
            raise StoreError(f"vectors of width {x.shape[1]} cannot join an index of width {self.dim}")
        start = len(self)
        self._cpu.add(x)
        self._gpu = None  # the GPU copy is stale; the next search makes a new one
        self._gpu_tried = False
        return np.arange(start, start + x.shape[0], dtype=np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product of normalised ``queries [q, D]``: ``(scores [q, k'], ids [q, k'])``.

        ``k' = min(k, len)``; best first. An approximate index may return fewer than k' hits for a
        query, padded with id -1 and score -inf.
        """
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise StoreError(f"queries of width {q.shape[1]} for an index of width {self.dim}")
        k = min(int(k), len(self))
        if k < 1:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        index = self._search_index()
        if index is self._cpu and self._small(q.shape[0]):
            scores, ids = _single_thread(index.search, q, k)
        else:
            scores, ids = index.search(q, k)
        return np.asarray(scores, dtype=np.float32), np.asarray(ids, dtype=np.int64)

    def _small(self, n_queries: int) -> bool:
        """Few enough multiply-adds that one thread beats an OpenMP team (see :func:`_single_thread`)."""
        if self.kind == "flat":
            return n_queries * len(self) * self.dim <= SINGLE_THREAD_WORK
        return n_queries <= 16

    def _search_index(self):
        use = self.cfg.gpu
        if use is False or self.kind == "hnsw":  # faiss has no GPU HNSW
            return self._cpu
        if self._gpu is None and not self._gpu_tried:
            self._gpu_tried = True
            if gpu_available():
                faiss = _faiss()
                try:
                    self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
                    self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._cpu)
                except (RuntimeError, AttributeError) as err:  # a broken GPU never breaks a CPU run
                    log.warning("faiss-gpu present but the index could not move to the GPU (%s); using CPU", err)
                    self._gpu = None
            elif use:
                log.warning("a GPU index was asked for but faiss-gpu or a GPU is missing; using faiss-cpu")
        return self._gpu if self._gpu is not None else self._cpu

    # ----------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        return _faiss().serialize_index(self._cpu).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, cfg: IndexConfig | None = None, kind: str | None = None) -> "PrototypeIndex":
        faiss = _faiss()
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if kind is None:
            kind = "ivf" if isinstance(index, faiss.IndexIVF) else "hnsw" if isinstance(index, faiss.IndexHNSW) else "flat"
        cfg = cfg or IndexConfig()
        if kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = min(cfg.nprobe, faiss.extract_index_ivf(index).nlist)
        elif kind == "hnsw":
            index.hnsw.efSearch = cfg.ef_search
        return cls(index, cfg, kind)

    def save(self, path: str | os.PathLike, arrays: dict[str, np.ndarray] | None = None,
             meta: dict | None = None, extra: Callable[[Path], None] | None = None) -> Path:
        """Publish the directory ``path`` atomically (see the module docstring).

        ``arrays`` are written as ``<name>.npy``; ``extra(tmp_dir)`` may write more files into the
        directory before ``index.json`` (``meta`` + manifest) is written last. Returns ``path``.
        """
        arrays = dict(arrays or {})
        bad = [n for n in arrays if not n.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise StoreError(f"array names must be letters, digits, '_' or '-': {bad}")

        def write(tmp: Path) -> None:
            _write_file(tmp / INDEX_FILE, self.to_bytes())
            for name, a in arrays.items():
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(a), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            if extra is not None:
                extra(tmp)
            files = {}
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    files[str(p.relative_to(tmp))] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
            doc = {
                "format": INDEX_FORMAT,
                "index": {"kind": self.kind, "dim": self.dim, "ntotal": len(self), "config": self.cfg.to_dict()},
                "arrays": sorted(arrays),
                "files": files,
                "meta": meta or {},
            }
            _write_file(tmp / META_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())

        return publish_dir(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike, gpu: bool | None = None,
             arrays: bool | list[str] = True) -> tuple["PrototypeIndex", dict[str, np.ndarray], dict]:
        """Read a directory written by :meth:`save`: ``(index, arrays, meta)``.

        ``arrays``: True loads every saved array, a list only those, False none.
        """
        root = resolve_dir(path)
        doc = read_manifest(root)
        info = doc["index"]
        cfg_d = dict(info.get("config", {}))
        if gpu is not None:
            cfg_d["gpu"] = gpu
        try:
            cfg = IndexConfig(**cfg_d)
        except TypeError as err:
            raise StoreFormatError(f"{root}/{META_FILE}: unknown index option ({err})") from err
        data = (root / INDEX_FILE).read_bytes()
        index = cls.from_bytes(data, cfg, info.get("kind"))
        if len(index) != info.get("ntotal") or index.dim != info.get("dim"):
            raise StoreFormatError(f"{root}/{INDEX_FILE} holds {len(index)}x{index.dim} vectors, "
                                   f"{META_FILE} says {info.get('ntotal')}x{info.get('dim')}")
        names = doc.get("arrays", []) if arrays is True else (list(arrays) if arrays else [])
        missing = [n for n in names if n not in doc.get("arrays", [])]
        if missing:
            raise StoreFormatError(f"index {root} has no array {', '.join(missing)}")
        out = {n: np.load(root / f"{n}.npy", allow_pickle=False) for n in names}
        return index, out, doc.get("meta", {})


class ExactVectors:
    """Exact inner-product search in numpy over the vectors ``[n, D]`` a flat index holds.

    What ``IndexFlatIP`` computes (scores equal to float32 rounding; ties to the lower id), for a
    reader that wants to skip importing FAISS (~0.3 s): ``clipcache query``'s start-up. Only for
    exact (flat) indexes; the caller keeps the vectors beside the index (``save``'s arrays).
    """

    kind = "flat"
    on_gpu = False

    def __init__(self, vectors: np.ndarray):
        self._v = normalise(vectors)

    def __len__(self) -> int:
        return int(self._v.shape[0])

    @property
    def dim(self) -> int:
        return int(self._v.shape[1])

    def vectors(self) -> np.ndarray:
        return self._v.copy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores [q, k'], ids [q, k'])``, best first (see PrototypeIndex)."""
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise StoreError(f"queries of width {q.shape[1]} for an index of width {self.dim}")
        k = min(int(k), len(self))
        sims = q @ self._v.T  # [q, n]
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, ids, axis=1).astype(np.float32), ids.astype(np.int64)


def load_exact(path: str | os.PathLike, vectors: str, arrays: list[str]) -> tuple[ExactVectors, dict, dict] | None:
    """``(ExactVectors, arrays, meta)`` of a flat index directory whose vectors the caller saved as
    array ``vectors``, without importing FAISS; None when the index is approximate or lacks them."""
    root = resolve_dir(path)
    doc = read_manifest(root)
    saved = doc.get("arrays", [])
    if doc["index"].get("kind") != "flat" or vectors not in saved:
        return None
    out = {n: np.load(root / f"{n}.npy", allow_pickle=False) for n in {*arrays, vectors} if n in saved}
    index = ExactVectors(out.pop(vectors))
    if len(index) != doc["index"].get("ntotal") or index.dim != doc["index"].get("dim"):
        raise StoreFormatError(f"index {root}: array {vectors} holds {len(index)}x{index.dim} vectors, "
                               f"{META_FILE} says {doc['index'].get('ntotal')}x{doc['index'].get('dim')}")
    return index, out, doc.get("meta", {})


SINGLE_THREAD_WORK = 1 << 27
"""Exact searches up to this many multiply-adds (e.g. one query over 2.6e5 prototypes of D 512)
run on one thread."""


def _single_thread(fn, *args):
    """Run a FAISS call on one OpenMP thread, then restore the thread count.

    faiss-cpu and torch each bundle their own OpenMP runtime; on few cores, the idle threads of
    one spin while the other's team works. A one-query search over a prototype index then took
    30-40 ms instead of ~1 ms on 2 cores once torch had run (measured), and slowed torch too.
    One thread has no team to wait for.
    """
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    if before == 1:
        return fn(*args)
    faiss.omp_set_num_threads(1)
    try:
        return fn(*args)
    finally:
        faiss.omp_set_num_threads(before)


# --------------------------------------------------------------------------- directory publishing
def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fsync_path(p)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_path(d)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _siblings(path: Path, tag: str) -> list[Path]:
    prefix = f".{path.name}.{tag}-"
    try:
        return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def resolve_dir(path: str | os.PathLike) -> Path:
    """The published directory to read: ``path``, or after a crash of the two-rename fallback
    (no ``path``, its previous version kept as ``.<name>.old-*``), that previous version."""
    p = Path(path)
    if (p / META_FILE).is_file():
        return p
    if not p.exists():
        olds = [o for o in _siblings(p, "old") if (o / META_FILE).is_file()]
        if olds:
            return max(olds, key=lambda o: o.stat().st_mtime)
        raise StoreNotFound(f"index {p} not found")
    raise StoreFormatError(f"{p} is not a clipcache index (no {META_FILE})")


def read_manifest(root: Path) -> dict:
    try:
        doc = json.loads((root / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StoreFormatError(f"{root}/{META_FILE} cannot be read: {err}") from err
    if doc.get("format") != INDEX_FORMAT:
        raise StoreFormatError(f"{root} was written in index format {doc.get('format')}, this clipcache "
                               f"reads format {INDEX_FORMAT}; rebuild it with `clipcache index`")
    for name, f in doc.get("files", {}).items():
        p = root / name
        if not p.is_file() or p.stat().st_size != f["size"]:
            raise StoreFormatError(f"index {root}: file {name} is missing or has the wrong size; rebuild the index")
    return doc


_HELD: set[str] = set()  # index paths whose writer lock this process holds


@contextmanager
def index_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the writer lock of the index directory ``path`` (``flock`` on ``.<name>.lock`` beside
    it; re-entrant within a process). Wrap a read-modify-write of an index in it so that two
    writers never lose each other's update; a second process gets :class:`StoreLocked`."""
    path = Path(path)
    key = os.path.abspath(path)
    if key in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = WriteLock(path.parent / f".{path.name}.lock")
    lock.acquire(f"index {path}")
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        lock.release()


def not_replaceable(path: str | os.PathLike) -> str | None:
    """Why publishing at ``path`` would destroy something that is not an index (a file, or a
    non-empty folder without ``index.json``); None when it is absent, empty or an index."""
    p = Path(path)
    if not p.exists():
        return None
    if not p.is_dir():
        return f"{p} exists and is not a directory; pass a new or empty folder"
    if (p / META_FILE).is_file() or not any(p.iterdir()):
        return None
    return f"{p} exists and is not a clipcache index; pass a new or empty folder"


def publish_dir(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Make ``path`` the directory that ``write(tmp)`` fills, atomically, one writer at a time.

    ``write`` fills a fresh ``.<name>.tmp-<uuid>`` beside ``path``; the files are fsynced, and
    the directory is renamed onto ``path`` (swapped with the old one where it exists, then the old
    one is deleted). A kill at any moment leaves the old or the new directory at ``path``. A
    ``path`` that holds something other than an index (:func:`not_replaceable`) is refused.
    """
    path = Path(path)
    why = not_replaceable(path)
    if why is not None:
        raise StoreError(why)
    with index_lock(path):
        if not path.exists():  # a crash of the two-rename fallback: put the old version back
            olds = [o for o in _siblings(path, "old") if (o / META_FILE).is_file()]
            if olds:
                os.rename(max(olds, key=lambda o: o.stat().st_mtime), path)
        why = not_replaceable(path)  # again under the lock: another process may have written there
        if why is not None:
            raise StoreError(why)
        for stale in _siblings(path, "tmp") + _siblings(path, "old"):  # killed writers' leftovers
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            write(tmp)
            _fsync_tree(tmp)
            if not path.exists():
                os.rename(tmp, path)
            elif _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old version
            else:
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            fsync_path(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


__all__ = [
    "ExactVectors",
    "INDEX_FILE",
    "META_FILE",
    "IndexConfig",
    "PrototypeIndex",
    "load_exact",
    "default_nlist",
    "gpu_available",
    "index_lock",
    "normalise",
    "not_replaceable",
    "publish_dir",
    "read_manifest",
    "resolve_dir",
]

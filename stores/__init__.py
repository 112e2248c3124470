"""Feature storage behind one small interface: Zarr v3 (default) and HDF5 (paths ending ``.h5``).
Knows nothing of CLIP or videos: entries of named arrays, committed atomically, and small JSON
documents. (The FAISS prototype index is cachekit's: :mod:`cachekit.index`.)
"""

from __future__ import annotations

import os

from .base import (
    LAYOUT_VERSION,
    FeatureStore,
    StoreError,
    StoreFormatError,
    StoreLocked,
    StoreNotFound,
    StoreReadOnly,
    array_sha256,
    file_sha256,
)

__all__ = [
    "LAYOUT_VERSION",
    "FeatureStore",
    "StoreError",
    "StoreFormatError",
    "StoreLocked",
    "StoreNotFound",
    "StoreReadOnly",
    "array_sha256",
    "file_sha256",
    "open_store",
    "store_exists",
]


def _is_h5(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".h5", ".hdf5"))


def store_exists(path: str | os.PathLike) -> bool:
    """Whether a store was created at ``path`` (a local path, or a Zarr store at an fsspec URL)."""
    p = str(path)
    if p.startswith("file://"):
        p = p[len("file://"):]
    if _is_h5(p):
        return os.path.exists(p) or os.path.exists(f"{p}.parts/meta/attrs.json")
    if "://" in p:  # s3://, gs://, memory://...: the same file system the store opens with
        try:
            import fsspec

            fs, root = fsspec.core.url_to_fs(p)
        except (ImportError, ValueError) as err:
            raise StoreError(f"{p}: {err} (remote stores: pip install 'clipcache[remote]')") from err
        return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))
    return os.path.exists(os.path.join(p, "zarr.json"))


def open_store(path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
               shared: bool = False) -> FeatureStore:
    """Open a store for reading (``mode="r"``) or writing (``"a"``, exclusive for one job).

    ``attrs`` is only used when the store does not exist yet (it is then created with them);
    for an existing store the caller compares its own attributes with ``store.attrs``.
    ``shared=True`` opens an existing store for writing without taking the job's lock: for the
    other ranks of a job whose rank 0 holds it, each rank writing disjoint entries.
    A path ending ``.h5``/``.hdf5`` uses HDF5, anything else Zarr v3.
    """
    if mode not in ("r", "a"):
        raise StoreError(f"mode must be 'r' or 'a', not {mode!r}")
    if attrs is not None and mode == "r":
        raise StoreError("attrs are only used when creating a store (mode='a')")
    if _is_h5(path):
        from .hdf5_store import HDF5Store

        return HDF5Store(path, mode, attrs, shared=shared)
    from .zarr_store import ZarrStore

    return ZarrStore(path, mode, attrs, shared=shared)

"""Feature storage behind one small interface: Zarr v3 (default) and HDF5 (paths ending ``.h5``).
Knows nothing of CLIP or videos: entries of named arrays, committed atomically, and small JSON
documents. Any number of writers may write one store at once, each under its own writer id
(:mod:`.leases`, :mod:`.log`). (The FAISS prototype index is cachekit's: :mod:`cachekit.index`.)
"""

from __future__ import annotations

import os
from typing import Sequence

from .base import (
    LAYOUT_VERSION,
    STORAGE_OPTIONS_ENV,
    FeatureStore,
    StoreCorrupt,
    StoreError,
    StoreFormatError,
    StoreLocked,
    StoreNotFound,
    StoreReadOnly,
    array_sha256,
    file_sha256,
    set_storage_options,
    storage_options,
)

__all__ = [
    "LAYOUT_VERSION",
    "FeatureStore",
    "StoreCorrupt",
    "StoreError",
    "StoreFormatError",
    "StoreLocked",
    "StoreNotFound",
    "StoreReadOnly",
    "array_sha256",
    "file_sha256",
    "open_store",
    "set_storage_options",
    "storage_options",
    "store_exists",
]


def _is_h5(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".h5", ".hdf5"))


def store_exists(path: str | os.PathLike) -> bool:
    """Whether a store was created at ``path`` (a local path, or a Zarr store at an fsspec URL)."""
    p = str(path)
    _refuse_archive(p)
    if p.startswith("file://"):
        p = p[len("file://"):]
    if _is_h5(p):
        return os.path.exists(p) or os.path.exists(f"{p}.parts/meta/attrs.json")
    if "://" in p:  # s3://, gs://, memory://...: the same file system the store opens with
        try:
            import fsspec

            fs, root = fsspec.core.url_to_fs(p, **storage_options())
        except (ImportError, ValueError, TypeError) as err:
            raise StoreError(f"{p}: {err} (remote stores: pip install 'clipcache[remote]')") from err
        return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))
    return os.path.exists(os.path.join(p, "zarr.json"))


_ARCHIVES = ("zip://", "tar://", "zip::", "tar::")


def _refuse_archive(path) -> None:
    """An archive URL is refused: no atomic replace, no per-writer files, so I1-I3 cannot hold."""
    if str(path).lower().startswith(_ARCHIVES):
        raise StoreError(f"{path}: a store cannot live inside an archive (zip://, tar://); use a folder, an .h5 file "
                         "or an object store URL (s3://, gs://), and zip a finished store yourself to ship it")


def open_store(path: str | os.PathLike, mode: str = "r", attrs: dict | None = None,
               shared: bool = False, writer: str | None = None,
               packable: Sequence[str] | None = None) -> FeatureStore:
    """Open a store for reading (``mode="r"``) or as one of its writers (``"a"``).

    ``attrs`` is only used when the store does not exist yet (it is then created with them);
    for an existing store the caller compares its own attributes with ``store.attrs``.
    A writer holds only its own lease, under ``writer`` (default: a fresh id), so any number of
    writers with different ids write at once; a second live writer with the same id is refused.
    ``shared=True`` never creates the store (the ranks of a job whose rank 0 created it).
    A path ending ``.h5``/``.hdf5`` uses HDF5, anything else Zarr v3.
    ``packable``: the entry groups whose small arrays HDF5 packs into one column per array name
    when it publishes (fast :meth:`~FeatureStore.read_column`); recorded when the store is created
    (or, for a store written before it was recorded, when it is first opened for writing), ignored
    otherwise. Zarr packs every group as it writes and ignores it.
    """
    if mode not in ("r", "a"):
        raise StoreError(f"mode must be 'r' or 'a', not {mode!r}")
    if attrs is not None and mode == "r":
        raise StoreError("attrs are only used when creating a store (mode='a')")
    _refuse_archive(path)
    if _is_h5(path):
        from .hdf5_store import HDF5Store

        return HDF5Store(path, mode, attrs, shared=shared, writer=writer, packable=packable)
    from .zarr_store import ZarrStore

    return ZarrStore(path, mode, attrs, shared=shared, writer=writer)

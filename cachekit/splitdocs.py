"""The store's split documents: which videos each split file named, written by every writer.

Each writer run writes its own documents, ``splits/<split>@<writer>.<nonce>``, once, and never
rewrites one: writers that finish at the same moment (Slurm array tasks, machines sharing a
bucket) cannot lose each other's entries, as a read-merge-write of one shared document could
(spec reliability.md 7.6: each writer writes only its own objects). Readers merge every document
of a split (:func:`read_splits`). When a split has more than :data:`COMPACT_AT` documents, the
writer that finds them merges them into one new document and only then deletes the ones it read,
so an entry is always in some document, whatever writers compact at once.

The fold a data set's lists were read from is kept in ``folds/<format>``: a later run that
reads another fold of the same data set into the store is refused (UCF101's fold 2 train list
holds fold 1's test videos).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from clipcache.stores import FeatureStore

    from .inputs import InputSet

COMPACT_AT = 8  # documents per split before a writer merges them


def read_splits(store: FeatureStore) -> dict[str, dict]:
    """``{split: {"videos": {path: [content key, label]}, "missing": set of paths}}``, every
    writer's documents merged (a document deleted by a compacting writer while this reads is
    found again in the merged one that replaced it)."""
    for _attempt in range(5):
        names = store.json_keys("splits")
        docs = {n: store.get_json("splits", n) for n in names}
        if all(d is not None for d in docs.values()):
            break  # else: compacted under us; the merged document is there on the next listing
    return _merge(docs)


def _merge(docs: dict[str, dict | None]) -> dict[str, dict]:
    """Documents by name (None: gone) merged per split: ``{split: {"videos", "missing"}}``."""
    merged: dict[str, dict] = {}
    for name in sorted(docs):
        doc = docs[name]
        if doc is None:
            continue
        m = merged.setdefault(name.split("@", 1)[0], {"videos": {}, "missing": set()})
        m["videos"].update(doc.get("videos", {}))
        m["missing"].update(doc.get("missing", []))
    return merged


def check_folds(store: FeatureStore, inputs: InputSet) -> None:
    """Refuse inputs of another fold of a data set the store already holds a fold of; record the
    fold otherwise. Called before any video is extracted."""
    for fmt, fold in sorted(inputs.formats.items()):
        have = store.get_json("folds", fmt)
        if have is not None and have.get("fold") != fold:
            raise InputError(f"{store.path} holds {fmt} {have.get('fold')}; these inputs are {fold}: one fold per "
                             "store (its train and test splits would merge with the other fold's); use another --store")
    for fmt, fold in sorted(inputs.formats.items()):
        if store.get_json("folds", fmt) is None:
            store.put_json("folds", fmt, {"fold": fold})


def record_splits(store: FeatureStore, inputs: InputSet, keys_by_path: dict[str, str], writer: str | None = None) -> None:
    """Save which videos each split file named (path -> [content key, label]) in this writer's
    own new document per split; videos named but absent are kept under ``missing``."""
    by_split = inputs.splits
    tag = f"{writer or 'w'}.{uuid.uuid4().hex[:12]}"
    splits = sorted(set(by_split) | set(inputs.missing))
    for split in splits:
        doc = {"videos": {}, "missing": sorted(set(inputs.missing.get(split, [])))}
        for it in by_split.get(split, []):
            path = os.path.abspath(it.path)
            doc["videos"][path] = [keys_by_path.get(path), it.label]
        store.put_json("splits", f"{split}@{tag}", doc)
    _compact(store, splits)


def _compact(store: FeatureStore, splits: list[str]) -> None:
    """Merge each of ``splits`` whose documents are many into one new document; then delete only
    those read (one listing for all of them)."""
    names = store.json_keys("splits")
    for split in splits:
        mine = [n for n in names if n.split("@", 1)[0] == split]
        if len(mine) <= COMPACT_AT:
            continue
        # a document gone meanwhile was compacted by another writer: its content is in that one's
        docs = {n: store.get_json("splits", n) for n in mine}
        merged = _merge(docs).get(split)
        if merged is None:
            continue
        store.put_json("splits", f"{split}@merged.{uuid.uuid4().hex[:12]}",
                       {"videos": merged["videos"], "missing": sorted(merged["missing"])})
        for n, doc in docs.items():
            if doc is not None:
                store.delete_json("splits", n)

"""Coverage: per split, how many videos its list names (``listed``), how many were on disk
(``present``), how many of those could not be decoded (``failed``), how many are neither failed nor
in the store (``pending``: not extracted yet, or uncommitted by ``verify --repair``) and how many
the command used (``used``: in the store for ``extract`` / ``info``; in the run's split for
``train``; scored for ``eval``). Public copies are incomplete (a Kinetics copy lacks 5-10 % of its YouTube clips), so
every report says it in its first lines. A store extracted without split files has one row, ``all``.
"""

from __future__ import annotations

import numpy as np

from .ids import unique_ids
from .splitdocs import read_splits

ALL = "all"
_ORDER = {"train": 0, "val": 1, "base_val": 2, "novel_val": 3, "test": 4}  # reports list splits in this order


def store_coverage(store, keys=None) -> dict[str, dict[str, int]]:
    """``{split: {"listed", "present", "failed", "used"}}`` of a store (``used``: extracted).
    ``keys``: the store's video keys, when the caller has them; only membership is read, never a
    record (a million records are ~2.5 GB of dicts)."""
    have = frozenset(store.keys("videos") if keys is None else keys)
    docs = read_splits(store)
    if not docs:  # present: the files that could be read (a failure without a content key could not)
        fails = [d.get("vkey") for d in store.json_items("failed").values() if d.get("vkey") not in have]
        unread = sum(1 for k in fails if k is None)
        return {ALL: {"listed": len(have) + len(fails), "present": len(have) + len(fails) - unread,
                      "failed": len(fails), "pending": 0, "used": len(have)}}
    out = {}
    failed_keys: set | None = None  # read only when some listed video is not in the store
    for name, doc in sorted(docs.items(), key=lambda kv: (_ORDER.get(kv[0], len(_ORDER)), kv[0])):
        videos = doc.get("videos", {})
        absent = [key for key, _label in videos.values() if key is None or key not in have]
        if absent and failed_keys is None:
            failed_keys = {d.get("vkey") for d in store.json_items("failed").values()}
        failed = sum(1 for key in absent if key is None or key in failed_keys)  # None: it could not be read
        unread = sum(1 for key in absent if key is None)
        present = len(videos)
        out[name] = {"listed": present + len(doc["missing"] - set(videos)), "present": present - unread,
                     "failed": failed, "pending": len(absent) - failed, "used": present - len(absent)}
    return out


def used_by(cov: dict[str, dict[str, int]], cache, idx: np.ndarray) -> dict[str, dict[str, int]]:
    """``cov`` with ``used`` = the videos of each split among ``idx`` (cache indices a command used)."""
    idx = unique_ids(np.asarray(idx, dtype=np.int64))
    splits = cache.splits()
    out = {}
    for name, row in cov.items():
        if name == ALL or name not in splits:
            used = int(idx.size) if name == ALL else 0
        else:
            used = int(np.intersect1d(splits[name].indices, idx).size)
        out[name] = {**row, "used": used}
    return out


def coverage_lines(cov: dict[str, dict[str, int]], used: str = "used") -> list[str]:
    """One line per split: ``coverage train: 9,537 listed, 9,530 present (99.9%), 2 failed to decode, 9,528 used``."""
    lines = []
    for name, r in cov.items():
        share = f" ({100.0 * r['present'] / r['listed']:.1f}%)" if r["listed"] else ""
        pending = f", {r['pending']:,} not extracted yet" if r.get("pending") else ""
        lines.append(f"coverage {name}: {r['listed']:,} listed, {r['present']:,} present{share}, "
                     f"{r['failed']:,} failed to decode{pending}, {r['used']:,} {used}")
    return lines

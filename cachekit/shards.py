"""Fixed shares of the inputs for independent writers, and what a store holds of each share.

``extract --shard I/N`` takes the inputs whose path hashes to share I of N: the same share on
every rerun and on every machine that lists the same paths (never by rank, time or order), so a
Slurm array (``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) or any scheduler's tasks
split one input list without talking to each other. Each share writes into the store under its
own writer id (``shard-I-of-N``): a requeued task that finds its first run still alive is
refused, one that finds it dead resumes. Committed videos that need new arrays (an extended
store) are shared by content key the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field

from .errors import InputError
from .inputs import InputSet, VideoItem

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1:
            raise InputError(f"--shard I/N needs N >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise InputError(f"--shard I/N needs 0 <= I < N, got {self.index}/{self.count}")

    @property
    def name(self) -> str:
        """The writer id of this share's runs."""
        return f"shard-{self.index}-of-{self.count}"

    def owns_path(self, path: str) -> bool:
        return shard_of_path(path, self.count) == self.index

    def owns_key(self, key: str) -> bool:
        return int(key[:16], 16) % self.count == self.index


def path_key(path: str) -> str:
    """Key of a failure report: the path (a file that cannot be read has no content hash)."""
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]


def parse_shard(text: str | None) -> Shard | None:
    """``"3/8"`` -> Shard(3, 8); None or empty -> None."""
    if not text:
        return None
    m = _SHARD.match(str(text))
    if not m:
        raise InputError(f"--shard must look like I/N (share I of N, 0 <= I < N), not {text!r}")
    return Shard(int(m[1]), int(m[2]))


def shard_of_path(path: str, count: int) -> int:
    """The share of ``path`` among ``count``: by the sha256 of its absolute path."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(path))).digest()
    return int.from_bytes(digest[:8], "big") % count


def select(inputs: InputSet, shard: Shard | None) -> InputSet:
    """The inputs of ``shard`` (all of them for None); split files' missing lists are kept whole."""
    if shard is None or shard.count == 1:
        return inputs
    items = [it for it in inputs.items if shard.owns_path(it.path)]
    note = f"shard {shard.index}/{shard.count}: {len(items)} of {len(inputs.items)} inputs"
    return InputSet(items=items, missing=inputs.missing, notes=[*inputs.notes, note], formats=inputs.formats)


@dataclass
class ShareStatus:
    shard: int
    inputs: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    failed_paths: list[str] = field(default_factory=list)


@dataclass
class StoreStatus:
    store: str
    shards: list[ShareStatus]

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(s, k) for s in self.shards) for k in ("inputs", "done", "failed", "pending")}

    def to_dict(self) -> dict:
        return {"store": self.store, "totals": self.totals, "shards": [asdict(s) for s in self.shards]}


def input_status(store_path: str, inputs: InputSet | list[VideoItem], count: int = 1) -> StoreStatus:
    """Per share of ``count``: inputs committed (done), recorded as failed, and neither (pending).

    A path counts as done when a committed video was extracted from it, or when its bytes are
    those of a committed video (only files whose size matches one are hashed); failed when the
    store holds its failure report and no video of it.
    """
    from clipcache.stores import open_store

    from .video import file_key

    items = inputs.items if isinstance(inputs, InputSet) else list(inputs)
    if count < 1:
        raise InputError(f"--shards must be >= 1, got {count}")
    shares = [ShareStatus(i) for i in range(count)]
    with open_store(store_path, "r") as store:
        keys = store.keys("videos")
        paths = set(store.field("videos", "path", keys))
        sizes = set(store.field("videos", "size", keys))
        failed = set(store.json_keys("failed"))
        done_keys = set(keys)
        for it in items:
            share = shares[shard_of_path(it.path, count)]
            share.inputs += 1
            path = os.path.abspath(it.path)
            if path in paths or _same_bytes(path, sizes, done_keys, file_key):
                share.done += 1
            elif path_key(path) in failed:
                share.failed += 1
                share.failed_paths.append(path)
            else:
                share.pending += 1
    return StoreStatus(str(store_path), shares)


def _same_bytes(path: str, sizes: set, keys: set, file_key) -> bool:
    try:
        if os.path.getsize(path) not in sizes:
            return False
        return file_key(path) in keys
    except OSError:
        return False

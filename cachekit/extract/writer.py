"""The write stage: each encoded video's arrays and record, committed in batches.

:class:`Writer` owns the batch (a commit record per ``commit_every`` videos or 64 MB of arrays:
the most work a kill can lose) and the store's failure reports (one per input that failed; a
video that commits drops its own). :class:`WriterThread` runs it behind a bounded queue, so the
host copies and commits overlap the next forwards.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from clipcache.stores import FeatureStore

from ..inputs import VideoItem
from ..shards import path_key
from .encode import to_host
from .reader import Pending
from .summary import ExtractSummary

log = logging.getLogger(__name__)

_BATCH_BYTES = 64 << 20  # a batch commit is also cut at this many bytes of arrays (tokens)


def video_entry(p: Pending) -> tuple[dict, dict]:
    """An encoded video's arrays (``[V, T, ...]``) and record, as the store commits them."""
    v, t = p.video.indices.shape
    cat = {k: np.concatenate([o[k] for o in p.outs]) for k in p.outs[0]}
    arrays = {k: a.reshape(v, t, *a.shape[1:]) for k, a in cat.items()}  # [V, T, ...]
    arrays["frame_idx"] = p.video.indices.astype(np.int32)
    arrays["timestamps"] = p.video.timestamps.astype(np.float32)
    if p.u8 is not None:
        arrays["pixels"] = p.u8.reshape(v, t, *p.u8.shape[1:])  # [V, T, 3, S, S] uint8
    st = os.stat(p.item.path)
    record = {
        "path": os.path.abspath(p.item.path),
        "size": st.st_size,
        "label": p.item.label,
        **({"class_id": p.item.class_id} if p.item.class_id is not None else {}),  # the data set's own id
        "n_frames": p.video.n_frames,
        "fps": p.video.fps,
        "duration": p.video.duration,
        "backend": p.video.backend,
        "status": "ok",
    }
    return arrays, record


class Writer:
    """Batch commits of encoded videos into ``store``, and its failure reports.

    ``keys_by_path`` (absolute path -> content key, filled by hashing) names every other path
    with the same bytes as a failed one, so each gets its report.
    """

    def __init__(self, store: FeatureStore, commit_every: int, keys_by_path: dict[str, str]):
        self.store, self.commit_every, self.keys_by_path = store, commit_every, keys_by_path
        self.batch: list[tuple[Pending, dict, dict]] = []  # encoded, waiting for the batch commit
        self.batch_bytes = 0
        # failure reports listed once at the start: a video that commits drops its own report
        # without a store read per video
        self.failed_before: set[str] = set()

    def list_failures(self) -> set[str]:
        """The store's failure reports (path keys), listed once before a run."""
        self.failed_before = set(self.store.json_keys("failed"))
        return self.failed_before

    def add(self, s: ExtractSummary, p: Pending) -> None:
        """Queue an encoded video for the next batch commit; commit when the batch is full."""
        arrays, record = video_entry(p)
        self.batch.append((p, arrays, record))
        self.batch_bytes += sum(a.nbytes for a in arrays.values())
        if len(self.batch) >= self.commit_every or self.batch_bytes >= _BATCH_BYTES:
            self.flush(s)

    def flush(self, s: ExtractSummary) -> None:
        """Commit the queued videos as one batch: visible together once its record is written."""
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.commit([(p.key, arrays, record) for p, arrays, record in batch])
        for p, arrays, _record in batch:
            self.committed(s, p.item, int(np.prod(arrays["frame_idx"].shape)))

    def commit(self, entries: list[tuple[str, dict, dict]], extends: bool = False) -> None:
        """Commit ``(key, arrays, record)`` entries as one batch record; ``extends``: arrays
        added to videos already committed (extension)."""
        if entries:
            self.store.commit_many("videos", entries, extends=extends)

    def committed(self, s: ExtractSummary, item: VideoItem, frames: int) -> None:
        """Count a committed video; a failure report of its path from an earlier run goes."""
        pk = path_key(item.path)
        if pk in self.failed_before:  # a retried failure that now worked
            self.store.delete_json("failed", pk)
            self.failed_before.discard(pk)
        s.extracted += 1
        s.frames += frames

    def fail(self, s: ExtractSummary, it: VideoItem, key: str | None, reason: str) -> None:
        """Record a failed input; with a content key, also every other path with the same bytes."""
        paths = {os.path.abspath(it.path)}
        if key is not None:
            paths |= {p for p, k in self.keys_by_path.items() if k == key}
        for path in sorted(paths):
            log.warning("failed: %s", reason if path == os.path.abspath(it.path) else f"{path}: same bytes as {reason}")
            s.failed.append((path, reason))
            self.store.put_json("failed", path_key(path),
                                {"path": path, "vkey": key, "reason": reason, "label": it.label, "split": it.split})


class WriterThread:
    """The write stage on a thread of its own: it copies encoder outputs to the host, cuts each
    video's rows out and hands them to the :class:`Writer`, while the main thread decodes and
    encodes the next ones. Its queue holds at most two groups, so memory stays bounded. An error
    (disk full, a crash) stops it; the main thread re-raises that same exception at its next
    hand-off. Its seconds go to ``s.seconds["write"]``.

    It keeps the normal priority where the decoders lower theirs (:func:`~.config.pipeline_plan`):
    its CPU (about 0.3 ms a video, 0.1% of a ViT-B-32 forward's on 2 cores) cannot hold the
    encoder back, and at a lowered priority it waited for a core about 1 ms a video."""

    def __init__(self, writer: Writer, s: ExtractSummary):
        import queue
        import threading

        self.writer, self.s = writer, s
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="clipcache-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain without writing after a failure
            try:
                group, outs = job
                res = to_host(outs)  # [R, ...] per output: the group's rows, videos in order
                off = 0
                for p in group:  # hand each video exactly its own rows back
                    p.outs.append({k: a[off:off + p.rows] for k, a in res.items()})
                    off += p.rows
                    with self.s.timed("write"):
                        self.writer.add(self.s, p)
            except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
                self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, group: list[Pending], outs: list[dict]) -> None:
        """Hand over an encoded group; blocks while the thread is two groups behind."""
        import queue

        while True:
            self.check()
            try:
                self.q.put((group, outs), timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write what is queued, the last (partial) batch included; raise the writer's error."""
        import queue

        while self.thread.is_alive():
            try:
                self.q.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join()
        self.check()
        with self.s.timed("write"):
            self.writer.flush(self.s)

    def stop(self) -> None:
        """On any exit: let the thread end (without committing more after an error)."""
        import queue

        if self.thread.is_alive():
            if self.error is None:
                self.error = _Stopped()
            while self.thread.is_alive():
                try:
                    self.q.put(None, timeout=0.1)
                except queue.Full:
                    continue
                self.thread.join(timeout=1.0)


class _Stopped(Exception):
    """The main thread stopped the writer (an error elsewhere): nothing more is committed."""

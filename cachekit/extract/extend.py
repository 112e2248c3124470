"""Extension: add the arrays a store's key now asks for to videos committed without them.

Only what is missing is computed: the tokens of new blocks come from a forward that stops before
the last of them, in the same row groups as the original pass (so they equal a fresh extraction
bit for bit on CPU); pixels need no encoder at all; more views are appended after the cached ones,
whose bytes stay as they are. It reuses the pipeline's stages: the reader decodes again, the
encoder forwards, the writer commits with ``extends=True``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from clipcache.stores import FeatureStore, StoreCorrupt

from ..cachekey import video_array_names
from ..distributed import Dist
from ..errors import DecodeError
from ..inputs import VideoItem
from ..shards import Shard
from ..video import DecodedVideo, file_key
from .config import ExtractConfig, PipelinePlan
from .encode import Encoder
from .reader import Reader
from .summary import ExtractSummary
from .writer import Writer


def lacking(store: FeatureStore, cfg: ExtractConfig) -> list[tuple[str, list[str], bool]]:
    """(key, arrays it lacks, fewer views than asked) for each committed video that needs
    extending to ``cfg`` (read from the store's index, without a record per video)."""
    want = video_array_names({"tokens_at": cfg.tokens_at, "pixels": cfg.pixels})
    keys = store.keys("videos")
    shapes = store.array_shapes("videos", keys)
    frame_idx = shapes.get("frame_idx", [None] * len(keys))
    out = []
    for i, key in enumerate(keys):
        missing = sorted(n for n in want if shapes.get(n) is None or shapes[n][i] is None)
        more_views = frame_idx[i] is not None and frame_idx[i][0] < cfg.sampler.views
        if missing or more_views:
            out.append((key, missing, more_views))
    return out


class Extension:
    """Extends the committed videos of ``writer``'s store to ``cfg`` (the merged key's arrays)."""

    def __init__(self, cfg: ExtractConfig, plan: PipelinePlan, reader: Reader, encoder: Encoder, writer: Writer,
                 shard: Shard | None = None):
        self.cfg, self.plan, self.shard = cfg, plan, shard
        self.reader, self.encoder, self.writer = reader, encoder, writer
        self.store = writer.store

    def run(self, s: ExtractSummary, dist: Dist, progress: bool = True, only: set[str] | None = None) -> None:
        """Extend the videos that lack arrays and that this rank (and shard) owns; ``only``: these
        video keys alone (a command that needs the arrays for some videos). Entries are committed
        in batches of ``commit_every``."""
        from tqdm import tqdm

        todo = []
        for key, missing, more_views in lacking(self.store, self.cfg):
            if (missing or more_views) and dist.owns(key) and (only is None or key in only) \
                    and (self.shard is None or self.shard.owns_key(key)):
                todo.append((key, self.store.record("videos", key), missing))
        if not todo:
            return
        bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="extend", dynamic_ncols=True)
        batch: list[tuple[str, dict, dict]] = []
        pool = self.reader.pool(self.plan)
        try:
            window = max(2, 2 * self.plan.workers)
            futures: deque = deque()
            it = iter(todo)

            def submit_more():
                while len(futures) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        return
                    futures.append((nxt, pool.submit(self._prepare, *nxt)))

            submit_more()
            while futures:
                (key, rec, missing), fut = futures.popleft()
                submit_more()
                item = VideoItem(rec["path"], rec.get("label"))
                try:
                    with s.timed("decode"):
                        video, pixels, u8 = fut.result()
                    arrays = self._arrays(key, rec, missing, video, pixels, u8, s)
                except (DecodeError, StoreCorrupt) as err:  # corrupt: its cached arrays are not copied on
                    then = ", then extract --retry-failed redoes it whole" if isinstance(err, StoreCorrupt) else ""
                    self.writer.fail(s, item, None, f"cannot extend: {err}{then}")
                    s.extend_failed += 1
                    bar.update(1)
                    continue
                batch.append((key, arrays, {}))
                s.extended += 1
                bar.update(1)
                if len(batch) >= self.cfg.commit_every:
                    with s.timed("write"):
                        self.writer.commit(batch, extends=True)
                    batch = []
            with s.timed("write"):
                self.writer.commit(batch, extends=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def _prepare(self, key: str, rec: dict, missing: list[str]):
        """Decode a committed video again, with every view the key now asks for (checking its
        bytes and the cached views' frame indices) -> (video, normalised pixels or None when no
        forward is needed, uint8 pixels ``[V*T, 3, S, S]``)."""
        path = rec["path"]
        try:
            if file_key(path) != key:
                raise DecodeError(f"{path}: the file changed since it was extracted")
        except OSError as err:
            raise DecodeError(f"{path}: cannot read ({err.strerror})") from err
        # the backend and rate (--fps) it was extracted with
        video, u8 = self.reader.frames(path, key, rec.get("backend", self.cfg.backend), rec.get("fps"))
        stored = self.store.read_verified("videos", key, ["frame_idx"])["frame_idx"]  # [V_old, T]
        if not np.array_equal(stored, video.indices[:len(stored)].astype(np.int32)):
            raise DecodeError(f"{path}: sampled frames differ from the cached ones")
        needs_encoder = video.indices.shape[0] > len(stored) or any(m.startswith("tokens_") for m in missing)
        return video, (self.reader.normalize(u8) if needs_encoder else None), u8

    def _arrays(self, key: str, rec: dict, missing: list[str], video: DecodedVideo, pixels, u8,
                s: ExtractSummary) -> dict:
        """The arrays to add to a committed video: the missing ones for its cached views (in that
        pass's row groups: bit-for-bit a fresh extraction's on CPU), and, when the key asks for
        more views, every array for the new views (their own forwards, appended after the cached
        views, whose bytes stay as they are)."""
        v_old, t = rec["arrays"]["frame_idx"]["shape"]
        v_new = int(video.indices.shape[0])
        n_old = v_old * t
        out: dict[str, np.ndarray] = {}
        if "pixels" in missing:
            out["pixels"] = u8[:n_old].numpy().reshape(v_old, t, *u8.shape[1:])  # [V, T, 3, S, S] uint8
        blocks = [int(m.split("_", 1)[1]) for m in missing if m.startswith("tokens_")]
        if blocks:
            with s.timed("encode"):
                toks = self.encoder.encode_rows(pixels[:n_old], blocks, False)
            s.frames += n_old  # encoded again (the summary's frames/s counts them)
            for k, a in toks.items():
                out[k] = a.reshape(v_old, t, *a.shape[1:])  # [V, T, N+1, W] fp16
        if v_new > v_old:
            with s.timed("encode"):
                new = self.encoder.encode_rows(pixels[n_old:], list(self.cfg.tokens_at), True)
            s.frames += len(pixels) - n_old
            new = {k: a.reshape(v_new - v_old, t, *a.shape[1:]) for k, a in new.items()}
            new["frame_idx"] = video.indices[v_old:].astype(np.int32)
            new["timestamps"] = video.timestamps[v_old:].astype(np.float32)
            if self.cfg.pixels:
                new["pixels"] = u8[n_old:].numpy().reshape(v_new - v_old, t, *u8.shape[1:])
            # checked against their records: damaged bytes copied into the new arrays would get a
            # fresh sha256, and verify could no longer see them (StoreCorrupt: this video fails)
            old = self.store.read_verified("videos", key, [n for n in new if n in rec["arrays"]])
            old.update(out)  # arrays just computed for the cached views
            out = {k: np.concatenate([old[k], a]) for k, a in new.items()}  # [V_new, T, ...]
        return out

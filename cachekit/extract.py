"""``clipcache extract``: decode, sample, run the frozen encoder once, cache the outputs.

Stages: hash inputs -> decode + resize/crop (worker threads sized from the cores a CPU encoder
leaves: :func:`pipeline_plan`; a bounded window ahead) -> encode in fixed-size frame batches (main thread) -> host copy and batch commits
(a writer thread behind a bounded queue; ``commit_every`` videos per commit record) -> extend
committed videos that lack arrays the key now asks for -> text. A video's stored values do not
depend on which other videos were extracted with it (reliability.md I4): each forward holds the
rows of one video only, in groups of ``min(batch_size, views * frames)`` rows at fixed positions
(the last group padded). Sharing a forward with other videos moves a row to another position,
and that alone changes its result in the last bits (measured: 4.8e-7 at batch 5 on CPU). On CUDA,
where batch size matters for throughput, whole videos are packed into forwards of
``batch_size`` rows instead; fp16 autocast there already makes values reproducible only to a
tolerance (about 1e-3 after fp16 storage), which the CUDA path documents rather than hides.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from clipcache.stores import LAYOUT_VERSION, FeatureStore, StoreError, open_store

from .caveat import encoder_caveat
from .coverage import store_coverage
from .encoder import EncoderConfig, FrozenCLIP, load_clip
from .errors import CacheKeyMismatch, ClipcacheError, DecodeError, InputError
from .inputs import InputSet, VideoItem
from .templates import fill, resolve_templates
from .distributed import Dist, dist_from_env
from .frames import is_frame_folder, set_rate
from .shards import Shard, path_key, select
from .video import Backend, DecodedVideo, SamplerConfig, decode_video, file_key

log = logging.getLogger(__name__)

EMB_DTYPE = "float32"
TOKEN_DTYPE = "float16"
_BATCH_BYTES = 64 << 20  # a batch commit is also cut at this many bytes of arrays (tokens)


@dataclass(frozen=True)
class ExtractConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tokens_at: tuple[int, ...] = ()
    templates: str = "single"
    batch_size: int = 32  # frames per encoder forward (fixed: the last batch is padded)
    workers: int | None = None  # decoding threads; None: the cores this process may use
    backend: Backend = "auto"
    retry_failed: bool = False
    commit_every: int = 32  # videos per batch commit: the most work a kill can lose
    pixels: bool = False  # also cache the resized, centre-cropped uint8 frames (backbone methods)
    fps: float | None = None  # frame folders' rate (timestamps only); None: cachekit.frames.DEFAULT_FPS

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        if self.commit_every < 1:
            raise InputError(f"--commit-every must be >= 1, got {self.commit_every}")
        if self.fps is not None and not self.fps > 0:
            raise InputError(f"--fps must be > 0, got {self.fps}")
        if len(set(self.tokens_at)) != len(self.tokens_at):
            raise InputError(f"--tokens-at lists a block twice: {self.tokens_at}")


    @property
    def n_workers(self) -> int:
        """Decoding threads when the encoder runs elsewhere (CUDA): ``workers``, or every core
        this process may run on. :func:`pipeline_plan` sizes them for a CPU encoder."""
        if self.workers is not None:
            return max(1, self.workers)
        return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PipelinePlan:
    """How extraction shares the CPU: ``workers`` decode threads; ``yield_cpu``: decoders and
    the writer run at a lower priority, inside the encoder's gaps."""

    workers: int
    yield_cpu: bool
    encoder_threads: int


def pipeline_plan(cfg: ExtractConfig, device_type: str) -> PipelinePlan:
    """Size the decode workers and the writer from the cores the encoder leaves.

    A CPU encoder comes first: its torch threads keep their cores, decoders get the rest (at
    least one). Where they still share cores (the default: torch takes every core), decoders and
    the writer lower their priority, so the encoder's threads are never preempted by them and
    stall each other at a barrier (OpenMP's threads wait for the slowest): they run while the
    encoder is between forwards or waits for frames. Each decoder keeps one torch thread for
    the resize. A CUDA encoder leaves the CPU to the decoders. ``--workers`` overrides the count.
    """
    import torch

    cores = usable_cores()
    if device_type == "cuda":
        return PipelinePlan(cfg.n_workers, False, torch.get_num_threads())
    threads = torch.get_num_threads()
    workers = cfg.workers if cfg.workers is not None else cores - threads
    workers = max(1, workers)
    return PipelinePlan(workers, workers + threads > cores, threads)


def _decoder_thread(yield_cpu: bool) -> None:
    """Set up a decode (or writer) thread: one torch thread; a lower priority with ``yield_cpu``."""
    import torch

    torch.set_num_threads(1)
    if yield_cpu:
        _lower_priority()


def _lower_priority(step: int = 10) -> None:
    """Raise this thread's nice value (Linux: per thread; elsewhere, or not allowed: nothing)."""
    import threading

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):
        pass


def parse_blocks(text: str | None) -> tuple[int, ...]:
    """``"6,9"`` -> ``(6, 9)``; empty or None -> ``()``."""
    if not text:
        return ()
    try:
        blocks = tuple(sorted(int(t) for t in text.split(",") if t.strip()))
    except ValueError as err:
        raise InputError(f"--tokens-at must be block numbers like 6 or 6,9, not {text!r}") from err
    return blocks


def cache_key(enc: FrozenCLIP, sampler: SamplerConfig, tokens_at: tuple[int, ...],
              pixels: bool = False) -> dict:
    """Everything that determines the cached values: a store holds one key only.

    ``tokens_at`` and ``pixels`` say which optional arrays every video of the store has; they
    grow when a store is extended (:func:`merged_key`), the other fields never change.
    """
    return {
        **enc.key_fields(),
        "sampler": sampler.to_dict(),
        "frames": sampler.frames,
        "views": sampler.views,
        "tokens_at": list(tokens_at),
        "pixels": bool(pixels),
        "dtype": {"emb": EMB_DTYPE, "cls": EMB_DTYPE, "tokens": TOKEN_DTYPE},
        "layout_version": LAYOUT_VERSION,
    }


# Fields that may differ without changing a single cached value.
_KEY_IGNORED = ("open_clip", "torch", "weights", "layout_version")
# Fields that say which optional arrays exist: a store is extended to the union, never refused.
KEY_EXTENSIBLE = ("tokens_at", "pixels", "views")


def _comparable(key: dict, f: str):
    v = key.get(f)
    if f == "sampler" and isinstance(v, dict):  # its view count is extensible too
        return {k: x for k, x in v.items() if k != "views"}
    return v


def key_differences(have: dict, want: dict) -> list[str]:
    """Key fields that differ in a way that changes cached values (extensible fields aside)."""
    fields = sorted(set(have) | set(want))
    return [f for f in fields if f not in _KEY_IGNORED and f not in KEY_EXTENSIBLE
            and _comparable(have, f) != _comparable(want, f)]


def merged_key(have: dict, want: dict) -> dict:
    """The key of a store ``have`` extended with what ``want`` asks: the union of the arrays
    and the larger number of views (views are seeded per view, so the first ones never change)."""
    out = dict(have)
    out["tokens_at"] = sorted(set(have.get("tokens_at") or ()) | set(want.get("tokens_at") or ()))
    out["pixels"] = bool(have.get("pixels")) or bool(want.get("pixels"))
    views = max(int(have.get("views") or 1), int(want.get("views") or 1))
    out["views"] = views
    if isinstance(have.get("sampler"), dict):
        out["sampler"] = {**have["sampler"], "views": views}
    return out


def check_key(store: FeatureStore, key: dict) -> dict:
    """Refuse a store whose cached values were computed differently; return the key the store
    has once extended with the arrays ``key`` asks for."""
    have = store.attrs.get("cache_key", {})
    diff = key_differences(have, key)
    if diff:
        detail = "; ".join(f"{f}: store has {have.get(f)!r}, asked {key.get(f)!r}" if f != "model_cfg"
                           else "model_cfg differs" for f in diff)
        raise CacheKeyMismatch(
            f"store {store.path} was extracted with a different configuration ({detail}); "
            "use a new --store for this configuration"
        )
    return merged_key(have, key)


def video_array_names(key: dict) -> set[str]:
    """Arrays every video of a store with this key has."""
    names = {"emb", "cls", "frame_idx", "timestamps"} | {f"tokens_{b}" for b in key.get("tokens_at") or ()}
    if key.get("pixels"):
        names.add("pixels")
    return names


@dataclass
class ExtractSummary:
    inputs: int = 0
    unique: int = 0
    already_done: int = 0
    extracted: int = 0
    extended: int = 0  # committed videos that got the arrays an extended key adds
    extend_failed: int = 0  # committed videos that could not be extended (key left as it was)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped_failed: int = 0
    text_classes: int = 0
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"hash": 0.0, "decode": 0.0,
                                                               "encode": 0.0, "write": 0.0, "text": 0.0})
    wall: float = 0.0
    store: str = ""
    notes: list[str] = field(default_factory=list)
    encoder: str | None = None  # the encoder's caveat (random or toy weights; cachekit.caveat), None for real CLIP
    coverage: dict = field(default_factory=dict)  # split -> listed / present / failed / used (cachekit.coverage)

    def to_dict(self) -> dict:
        return asdict(self)


def hash_input(path: str) -> tuple[str | None, str | None]:
    """(content key, None), or (None, the one-line reason) when the input cannot be read."""
    try:
        if os.path.isdir(path) and not is_frame_folder(path):
            raise DecodeError(f"{path}: is a directory, not a video file")
        return file_key(path), None
    except (OSError, DecodeError) as err:
        return None, (str(err) if isinstance(err, DecodeError) else f"{path}: cannot read ({err.strerror})")


def text_key(name: str, templates: tuple[str, ...]) -> str:
    h = hashlib.sha256(name.encode())
    for t in templates:
        h.update(b"\0" + t.encode())
    return h.hexdigest()[:32]


@dataclass
class _Pending:
    """A decoded video waiting for its frames to be encoded."""

    key: str
    item: VideoItem
    video: DecodedVideo
    pixels: object  # [V*T, 3, S, S] float32
    outs: list = field(default_factory=list)  # encoded row blocks, in order
    rows: int = 0
    u8: object = None  # [V*T, 3, S, S] uint8 when the pixel cache is asked for


class _Writer:
    """The write stage: a thread that copies encoder outputs to the host, cuts each video's
    rows out, and commits batches of videos, while the main thread decodes and encodes the next
    ones. Its queue holds at most two groups, so memory stays bounded. An error (disk full, a
    crash) stops it; the main thread re-raises that same exception at its next hand-off."""

    def __init__(self, ext: "Extractor", s: "ExtractSummary", yield_cpu: bool = False):
        import queue
        import threading

        self.ext, self.s, self.yield_cpu = ext, s, yield_cpu
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="clipcache-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        if self.yield_cpu:
            _lower_priority()
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain without writing after a failure
            try:
                group, outs = job
                res = {k: np.concatenate([o[k].cpu().numpy() for o in outs]) for k in outs[0]}
                off = 0
                for p in group:  # hand each video exactly its own rows back
                    p.outs.append({k: a[off:off + p.rows] for k, a in res.items()})
                    off += p.rows
                    self.ext._commit(self.s, p)
            except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
                self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, group: list, outs: list) -> None:
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
        self.ext._flush(self.s)

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


class Extractor:
    """Holds the encoder and a writable store; :meth:`run` extracts a list of videos."""

    def __init__(self, enc: FrozenCLIP, store: FeatureStore, cfg: ExtractConfig, shard: Shard | None = None):
        self.enc, self.store, self.cfg, self.shard = enc, store, cfg, shard
        self.templates = resolve_templates(cfg.templates)
        self._autocast = enc.device.type == "cuda"
        self.keys_by_path: dict[str, str] = {}  # absolute path -> content key, for split files
        self._pack = enc.device.type == "cuda"
        self._batch: list[tuple[_Pending, dict, dict]] = []  # encoded, waiting for the batch commit
        self._batch_bytes = 0
        # failure reports listed once at the start: a video that commits drops its own report
        # without a store read per video
        self._failed_before: set[str] = set()
        self.plan = pipeline_plan(cfg, enc.device.type)

    def _decode_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.plan.workers, thread_name_prefix="decode",
                                  initializer=_decoder_thread, initargs=(self.plan.yield_cpu,))

    # --------------------------------------------------------------- encoding
    def _forward(self, pixels, size: int):
        """Encode one batch ``[n <= size, 3, S, S]``, padded to ``size`` rows -> tensors per output."""
        import torch

        b = size
        n = pixels.shape[0]
        if n < b:  # pad: every forward of a video has the same shape and row positions
            pixels = torch.cat([pixels, pixels.new_zeros((b - n, *pixels.shape[1:]))])
        pixels = pixels.to(self.enc.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            out = self.enc.encode_frames(pixels, self.cfg.tokens_at)
            res = {"emb": out.emb[:n].float(), "cls": out.cls[:n].float()}
            for blk, tok in out.tokens.items():
                res[f"tokens_{blk}"] = tok[:n].to(torch.float16)
        return res  # device tensors: copied to the host by the writer thread (overlaps the next forward)

    def _prepare(self, item: VideoItem, key: str) -> tuple[DecodedVideo, object, object]:
        video = decode_video(item.path, self.cfg.sampler, key, self.cfg.backend)
        if video.backend == "frames" and self.cfg.fps:  # a frame folder: images carry no rate
            set_rate(video, self.cfg.fps)
        v, t = video.frames.shape[:2]
        u8 = self.enc.resize_crop(video.frames.reshape(v * t, *video.frames.shape[2:]))  # [V*T, 3, S, S]
        video.frames = None  # the full-size frames are not needed any more: bounded memory
        pixels = self.enc.normalize(u8)
        if self.enc.device.type == "cuda":
            pixels = pixels.pin_memory()
        return video, pixels, (u8.numpy() if self.cfg.pixels else None)

    def _entry(self, p: _Pending) -> tuple[dict, dict]:
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

    # --------------------------------------------------------------- driver
    def to_hash(self, items: list[VideoItem], s: ExtractSummary) -> list[VideoItem]:
        """The items to hash: not those that failed in an earlier run (unless ``retry_failed``).
        The failure reports are listed once, here."""
        self._failed_before = set(self.store.json_keys("failed"))
        out = []
        for it in items:
            if path_key(it.path) in self._failed_before and not self.cfg.retry_failed:
                s.skipped_failed += 1
            else:
                out.append(it)
        return out

    def _hash(self, items: list[VideoItem], s: ExtractSummary) -> list[tuple[str, str | None]]:
        """(absolute path, content key) for each item that hashed; failures recorded."""
        out = []
        for it in self.to_hash(items, s):
            key, reason = hash_input(it.path)
            if reason is not None:
                self._fail(s, it, None, reason)
            else:
                out.append((os.path.abspath(it.path), key))
        return out

    def work_list(self, items: list[VideoItem], s: ExtractSummary, dist: Dist) -> list[tuple[str, VideoItem]]:
        """The videos to encode, once ``keys_by_path`` is known: one per content key, not
        committed yet, owned by this rank."""
        work: list[tuple[str, VideoItem]] = []
        seen: set[str] = set()
        done = set(self.store.keys("videos"))
        for it in items:
            key = self.keys_by_path.get(os.path.abspath(it.path))
            if key is None or key in seen:
                continue
            seen.add(key)
            if key in done:
                s.already_done += 1
            elif dist.owns(key):
                work.append((key, it))
        s.unique = len(seen)
        return work

    def committed(self, s: ExtractSummary, item: VideoItem, frames: int) -> None:
        """Count a committed video; a failure report of its path from an earlier run goes."""
        pk = path_key(item.path)
        if pk in self._failed_before:  # a retried failure that now worked
            self.store.delete_json("failed", pk)
            self._failed_before.discard(pk)
        s.extracted += 1
        s.frames += frames

    def run(self, items: list[VideoItem], progress: bool = True, dist: Dist | None = None) -> ExtractSummary:
        """Extract ``items``; under torchrun each rank hashes a share of the inputs, then encodes
        the videos whose content key it owns, so ranks write disjoint entries."""
        import torch
        from tqdm import tqdm

        dist = dist or Dist()
        s = ExtractSummary(inputs=len(items), store=self.store.path)
        t_start = time.perf_counter()
        t0 = time.perf_counter()
        mine = self._hash(items[dist.rank::dist.world], s)
        for part in dist.all_gather(mine):
            self.keys_by_path.update(dict(part))
        work = self.work_list(items, s, dist)
        s.seconds["hash"] = time.perf_counter() - t0

        bar = tqdm(total=len(work), unit="video", disable=not progress, desc="extract", dynamic_ncols=True)
        plan = self.plan
        workers = plan.workers
        pool = self._decode_pool()
        prefetch = max(2, 2 * workers)  # decoded videos waiting: bounds memory, keeps the encoder fed
        futures: deque[tuple[str, VideoItem, Future]] = deque()
        todo = iter(work)
        queue: deque[_Pending] = deque()  # decoded videos whose rows are (partly) not encoded yet
        rows_waiting = 0
        writer = _Writer(self, s, plan.yield_cpu)

        def submit_more():
            while len(futures) < prefetch:
                nxt = next(todo, None)
                if nxt is None:
                    return
                futures.append((nxt[0], nxt[1], pool.submit(self._prepare, nxt[1], nxt[0])))

        def encode_batches(flush: bool):
            nonlocal rows_waiting
            while queue and (flush or self._pack is False or rows_waiting >= self.cfg.batch_size):
                if self._pack:  # CUDA: whole videos packed up to batch_size rows, for throughput
                    group = [queue.popleft()]
                    while queue and sum(q.pixels.shape[0] for q in group) + queue[0].pixels.shape[0] \
                            <= self.cfg.batch_size:
                        group.append(queue.popleft())
                else:  # CPU: one video per forward (I4: bitwise equal whatever its batch mates)
                    group = [queue.popleft()]
                rows = torch.cat([q.pixels for q in group]) if len(group) > 1 else group[0].pixels
                n = rows.shape[0]
                g = max(n, self.cfg.batch_size) if self._pack else min(self.cfg.batch_size, n)
                outs = []
                t1 = time.perf_counter()
                for start in range(0, n, g):
                    outs.append(self._forward(rows[start:start + g], g))
                s.seconds["encode"] += time.perf_counter() - t1
                for q in group:
                    rows_waiting -= q.pixels.shape[0]
                    q.rows = q.pixels.shape[0]
                    q.pixels = None  # the writer needs the outputs only
                writer.put(group, outs)  # blocks while the writer is 2 groups behind: bounded memory
                bar.update(len(group))
                bar.set_postfix(frames_s=f"{s.frames / max(1e-9, time.perf_counter() - t_start):.1f}",
                                failed=len(s.failed))

        try:
            submit_more()
            while futures:
                key, it, fut = futures.popleft()
                t1 = time.perf_counter()
                try:
                    video, pixels, u8 = fut.result()
                except DecodeError as err:
                    writer.check()
                    self._fail(s, it, key, str(err))
                    bar.update(1)
                    submit_more()
                    continue
                finally:
                    s.seconds["decode"] += time.perf_counter() - t1
                submit_more()
                queue.append(_Pending(key, it, video, pixels, u8=u8))
                rows_waiting += pixels.shape[0]
                encode_batches(flush=False)
            encode_batches(flush=True)
            writer.close()  # the last batch commit, then any error of the writer is raised here
        finally:
            writer.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        self.finish(s, items, dist, progress)
        s.wall = time.perf_counter() - t_start
        return s

    def finish(self, s: ExtractSummary, items: list[VideoItem], dist: Dist, progress: bool) -> None:
        """After the videos: extend committed ones to this key, then the classes' text."""
        self.extend(s, dist, progress)
        if dist.is_main:
            t1 = time.perf_counter()
            labels = {it.label for it in items if it.label}
            labels |= {lb for lb in self.store.field("videos", "label") if lb}
            s.text_classes = self.encode_classes(sorted(labels))
            s.seconds["text"] = time.perf_counter() - t1

    def encode_video(self, p: _Pending) -> tuple[dict, dict]:
        """One decoded video's arrays and record, its frames in forwards of their own, as the
        CPU pass does them (the Ray engine's actors encode this way: the same bytes)."""
        n = p.pixels.shape[0]
        g = min(self.cfg.batch_size, n)
        outs = [self._forward(p.pixels[start:start + g], g) for start in range(0, n, g)]
        p.outs = [{k: np.concatenate([o[k].cpu().numpy() for o in outs]) for k in outs[0]}]
        p.rows, p.pixels = n, None
        return self._entry(p)

    def _commit(self, s: ExtractSummary, p: _Pending) -> None:
        """Queue an encoded video for the next batch commit; commit when the batch is full."""
        t1 = time.perf_counter()
        arrays, record = self._entry(p)
        p.pixels = None  # the batch keeps the outputs only
        self._batch.append((p, arrays, record))
        self._batch_bytes += sum(a.nbytes for a in arrays.values())
        s.seconds["write"] += time.perf_counter() - t1
        if len(self._batch) >= self.cfg.commit_every or self._batch_bytes >= _BATCH_BYTES:
            self._flush(s)

    def _flush(self, s: ExtractSummary) -> None:
        """Commit the queued videos as one batch: visible together once its record is written."""
        if not self._batch:
            return
        t1 = time.perf_counter()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self.store.commit_many("videos", [(p.key, arrays, record) for p, arrays, record in batch])
        for p, arrays, _record in batch:
            self.committed(s, p.item, int(np.prod(arrays["frame_idx"].shape)))
        s.seconds["write"] += time.perf_counter() - t1

    # --------------------------------------------------------------- extension
    def extend(self, s: ExtractSummary, dist: Dist, progress: bool = True, only: set[str] | None = None) -> None:
        """Add the arrays this run's key asks for to committed videos that lack them.

        Only what is missing is computed: the tokens of new blocks come from a forward that stops
        before the last of them, in the same row groups as the original pass (so they equal a
        fresh extraction bit for bit on CPU); pixels need no encoder at all. Each rank extends
        the videos it owns; entries are committed in batches with ``extends=True``. ``only``:
        extend these video keys alone (a command that needs the arrays for some videos).
        """
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
        pool = self._decode_pool()
        try:
            window = max(2, 2 * self.plan.workers)
            futures: deque = deque()
            it = iter(todo)

            def submit_more():
                while len(futures) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        return
                    futures.append((nxt, pool.submit(self._prepare_extension, *nxt)))

            submit_more()
            while futures:
                (key, rec, missing), fut = futures.popleft()
                submit_more()
                item = VideoItem(rec["path"], rec.get("label"))
                t1 = time.perf_counter()
                try:
                    video, pixels, u8 = fut.result()
                except DecodeError as err:
                    self._fail(s, item, None, f"cannot extend: {err}")
                    s.extend_failed += 1
                    bar.update(1)
                    continue
                finally:
                    s.seconds["decode"] += time.perf_counter() - t1
                arrays = self._extension_arrays(key, rec, missing, video, pixels, u8, s)
                batch.append((key, arrays, {}))
                s.extended += 1
                bar.update(1)
                if len(batch) >= self.cfg.commit_every:
                    self._commit_extension(batch, s)
                    batch = []
            self._commit_extension(batch, s)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def _prepare_extension(self, key: str, rec: dict, missing: list[str]):
        """Decode a committed video again, with every view the key now asks for (checking its
        bytes and the cached views' frame indices) -> (video, normalised pixels, uint8 pixels)."""
        path = rec["path"]
        try:
            if file_key(path) != key:
                raise DecodeError(f"{path}: the file changed since it was extracted")
        except OSError as err:
            raise DecodeError(f"{path}: cannot read ({err.strerror})") from err
        video = decode_video(path, self.cfg.sampler, key, rec.get("backend", self.cfg.backend))
        if video.backend == "frames" and rec.get("fps"):
            set_rate(video, rec["fps"])  # the rate it was extracted at (--fps)
        stored = self.store.read("videos", key, ["frame_idx"])["frame_idx"]  # [V_old, T]
        if not np.array_equal(stored, video.indices[:len(stored)].astype(np.int32)):
            raise DecodeError(f"{path}: sampled frames differ from the cached ones")
        v, t = video.frames.shape[:2]
        u8 = self.enc.resize_crop(video.frames.reshape(v * t, *video.frames.shape[2:]))  # [V*T, 3, S, S]
        video.frames = None
        needs_encoder = v > len(stored) or any(m.startswith("tokens_") for m in missing)
        return video, (self.enc.normalize(u8) if needs_encoder else None), u8

    def _encode_rows(self, pixels, blocks: list[int], full: bool, s: ExtractSummary) -> dict:
        """Forward ``pixels [n, 3, S, S]`` in groups of ``min(batch_size, n)`` rows (the last one
        padded), as the per-video pass does -> host arrays: everything (``full``), or only the
        tokens of ``blocks`` from a forward that stops before the last of them."""
        import torch

        n = pixels.shape[0]
        g = min(self.cfg.batch_size, n)
        parts: dict[str, list] = {}
        t1 = time.perf_counter()
        for start in range(0, n, g):
            rows = pixels[start:start + g]
            m = rows.shape[0]
            if full:
                res = self._forward(rows, g)
            else:
                if m < g:
                    rows = torch.cat([rows, rows.new_zeros((g - m, *rows.shape[1:]))])
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
                    toks = self.enc.encode_tokens(rows.to(self.enc.device), blocks)
                res = {f"tokens_{b}": toks[b][:m].to(torch.float16) for b in blocks}
            for k, a in res.items():
                parts.setdefault(k, []).append(a.cpu().numpy())
        s.seconds["encode"] += time.perf_counter() - t1
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _extension_arrays(self, key: str, rec: dict, missing: list[str], video: DecodedVideo, pixels, u8,
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
            for k, a in self._encode_rows(pixels[:n_old], blocks, False, s).items():
                out[k] = a.reshape(v_old, t, *a.shape[1:])  # [V, T, N+1, W] fp16
        if v_new > v_old:
            new = self._encode_rows(pixels[n_old:], list(self.cfg.tokens_at), True, s)
            new = {k: a.reshape(v_new - v_old, t, *a.shape[1:]) for k, a in new.items()}
            new["frame_idx"] = video.indices[v_old:].astype(np.int32)
            new["timestamps"] = video.timestamps[v_old:].astype(np.float32)
            if self.cfg.pixels:
                new["pixels"] = u8[n_old:].numpy().reshape(v_new - v_old, t, *u8.shape[1:])
            old = self.store.read("videos", key, [n for n in new if n in rec["arrays"]])
            old.update(out)  # arrays just computed for the cached views
            out = {k: np.concatenate([old[k], a]) for k, a in new.items()}  # [V_new, T, ...]
        return out

    def _commit_extension(self, batch: list, s: ExtractSummary) -> None:
        if not batch:
            return
        t1 = time.perf_counter()
        self.store.commit_many("videos", batch, extends=True)
        s.seconds["write"] += time.perf_counter() - t1

    def _fail(self, s: ExtractSummary, it: VideoItem, key: str | None, reason: str) -> None:
        """Record a failed input; with a content key, also every other path with the same bytes."""
        paths = {os.path.abspath(it.path)}
        if key is not None:
            paths |= {p for p, k in self.keys_by_path.items() if k == key}
        for path in sorted(paths):
            log.warning("failed: %s", reason if path == os.path.abspath(it.path) else f"{path}: same bytes as {reason}")
            s.failed.append((path, reason))
            self.store.put_json("failed", path_key(path),
                                {"path": path, "vkey": key, "reason": reason, "label": it.label, "split": it.split})

    def encode_classes(self, names: list[str]) -> int:
        """Cache ``[P, D']`` text embeddings for each class not cached with these templates yet.

        Each class's prompts are one forward of their own: its values never depend on which
        other classes this writer encodes (shards and Ray actors each encode the classes they
        meet, and any of them equals a single process's, bit for bit)."""
        import torch

        have = set(self.store.keys("text"))
        todo = [n for n in names if text_key(n, self.templates) not in have]
        if not todo:
            return 0
        with torch.inference_mode():
            emb = [self.enc.encode_text(fill(self.templates, n)).float().cpu().numpy() for n in todo]  # C x [P, D']
        self.store.commit_many("text", [(text_key(name, self.templates), {"emb": e},
                                         {"name": name, "templates": list(self.templates)})
                                        for name, e in zip(todo, emb)])
        return len(todo)


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


def record_splits(store: FeatureStore, inputs: InputSet, keys_by_path: dict[str, str], part: str | None = None) -> None:
    """Save which videos each split file named (path -> [content key, label]), merged with
    earlier runs; videos named but absent are kept under ``missing``. A share of the inputs
    (``part``: a shard's writer id) keeps its own document per split, ``<split>@<part>``, so
    shares never overwrite each other's; readers merge them (:meth:`FeatureCache.splits`)."""
    by_split: dict[str, list[VideoItem]] = inputs.splits
    for split in sorted(set(by_split) | set(inputs.missing)):
        name = split if part is None else f"{split}@{part}"
        doc = store.get_json("splits", name) or {"videos": {}, "missing": []}
        for it in by_split.get(split, []):
            path = os.path.abspath(it.path)
            doc["videos"][path] = [keys_by_path.get(path), it.label]
        doc["missing"] = sorted(set(doc["missing"]) | set(inputs.missing.get(split, [])))
        store.put_json("splits", name, doc)


def _merge_summaries(parts: list[ExtractSummary]) -> ExtractSummary:
    out = parts[0]
    for p in parts[1:]:
        out.extracted += p.extracted
        out.extended += p.extended
        out.extend_failed += p.extend_failed
        out.failed += p.failed
        out.skipped_failed += p.skipped_failed
        out.frames += p.frames
        out.text_classes += p.text_classes
        for k, v in p.seconds.items():
            out.seconds[k] = max(out.seconds.get(k, 0.0), v)
        out.wall = max(out.wall, p.wall)
    return out


def extract(inputs: InputSet, store_path: str, cfg: ExtractConfig, progress: bool = True,
            enc: FrozenCLIP | None = None, dist: Dist | None = None, shard: Shard | None = None,
            writer: str | None = None, run=None) -> ExtractSummary:
    """Extract ``inputs`` into the store at ``store_path`` (created if needed, resumed if not).

    Any number of these may write one store at once, each as its own writer (``writer``, by
    default a fresh id): ``shard`` takes a fixed share of the inputs (``--shard I/N``) under the
    writer id ``shard-I-of-N``. Launched by ``torchrun``, rank 0 creates the store and checks
    its key first; every rank writes its own videos as its own writer. The result equals a
    single-process run's. ``run(extractor, items, progress, dist)`` replaces
    :meth:`Extractor.run` (the Ray engine, :mod:`cachekit.ray_engine`).
    """
    dist = dist or dist_from_env()
    inputs = select(inputs, shard)
    wid = writer or (shard.name if shard is not None else None)
    if wid and dist.world > 1:
        wid = f"{wid}-r{dist.rank}"
    enc = enc or load_clip(cfg.encoder)
    layers = enc.info.layers
    bad = [b for b in cfg.tokens_at if not 0 <= b < layers]
    if bad:
        raise InputError(f"--tokens-at {','.join(map(str, bad))}: {enc.name} has blocks 0..{layers - 1}")
    resolve_templates(cfg.templates)  # fail before anything is written
    key = cache_key(enc, cfg.sampler, cfg.tokens_at, cfg.pixels)
    attrs = {"cache_key": key, "model_info": enc.info.to_dict()}
    store = None
    failure: Exception | None = None
    if dist.is_main:
        try:
            store = open_store(store_path, "a", attrs=attrs, writer=wid)
            check_key(store, key)  # refuses another configuration; extensible fields merge
        except (ClipcacheError, StoreError) as err:
            failure = err
    errors = [e for e in dist.all_gather(str(failure) if failure else None) if e]  # ranks > 0 wait here
    if errors:
        if store is not None:
            store.close()
        if failure is not None:
            raise failure
        raise InputError(f"rank 0 could not open the store: {errors[0]}")
    if store is None:
        store = open_store(store_path, "a", shared=True, writer=wid)
    have = store.attrs.get("cache_key", {})
    merged = merged_key(have, key)  # every video ends with the union of the arrays
    cfg = replace(cfg, tokens_at=tuple(merged["tokens_at"]), pixels=merged["pixels"],
                  sampler=replace(cfg.sampler, views=merged["views"]))
    extractor = Extractor(enc, store, cfg, shard)
    try:
        try:
            if run is None:
                summary = extractor.run(inputs.items, progress=progress and dist.is_main, dist=dist)
            else:
                summary = run(extractor, inputs.items, progress and dist.is_main, dist)
        finally:
            if not dist.is_main:
                store.close()  # before rank 0 merges: HDF5 parts must be closed to be read
        parts = dist.all_gather(summary)  # also the barrier: every rank has committed its videos
        if dist.is_main:
            summary = _merge_summaries(parts)
            if merged != have:
                if summary.extend_failed:
                    summary.notes.append(
                        f"{summary.extend_failed} cached videos could not be extended, so the store's key "
                        f"still lists tokens_at={have.get('tokens_at')} pixels={bool(have.get('pixels'))} "
                        f"views={have.get('views')}")
                elif still := len(lacking(store, cfg)):  # other shards' videos, being extended now
                    summary.notes.append(
                        f"{still} cached videos of other shards still lack the new arrays; the store's key "
                        "lists them once the last shard has extended its videos")
                else:  # every video has the new arrays: the key says so (one atomic write)
                    store.update_attrs({**{k: v for k, v in store.attrs.items() if k != "layout_version"},
                                        "cache_key": merged})
            part = shard.name if shard is not None and shard.count > 1 else None
            record_splits(store, inputs, extractor.keys_by_path, part)
            summary.coverage = store_coverage(store)
            summary.notes.extend(inputs.notes)
            summary.encoder = encoder_caveat(key)
            store.finalize()
    finally:
        store.close()  # also on errors: the writer's lease goes with it (closing twice is harmless)
    dist.barrier()
    return summary

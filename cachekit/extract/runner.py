"""The runner: hash the inputs, then read -> encode -> write with the stages overlapped, then extend
and encode the classes' text, timing each stage (``ExtractSummary.seconds``).

Decoding runs in worker threads (a bounded window ahead), encoding on the main thread, host
copies and batch commits on the writer's thread behind a bounded queue; :func:`extract` opens the
store, checks its key and records the splits around it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import replace

from clipcache.stores import FeatureStore, StoreError, open_store

from ..cachekey import PACKED_GROUPS, cache_key, check_key, merged_key, text_key
from ..caveat import encoder_caveat
from ..coverage import store_coverage
from ..cpu import keep_freed_memory
from ..distributed import Dist, dist_from_env
from ..encoder import FrozenCLIP, load_clip
from ..errors import ClipcacheError, DecodeError, InputError
from ..inputs import InputSet, VideoItem
from ..shards import Shard, path_key, select
from ..splitdocs import check_folds, record_splits
from ..templates import fill, resolve_templates
from .config import ExtractConfig, pipeline_plan
from .encode import Encoder
from .extend import Extension, lacking
from .reader import Reader, hash_input
from .summary import ExtractSummary, merge_summaries
from .writer import Writer, WriterThread


class Extractor:
    """The encoder, a writable store and the stages between them; :meth:`run` extracts a list of
    videos. ``pack``: whole videos share forwards (default: on CUDA; :mod:`.encode`)."""

    def __init__(self, enc: FrozenCLIP, store: FeatureStore, cfg: ExtractConfig, shard: Shard | None = None,
                 pack: bool | None = None):
        self.enc, self.store, self.cfg, self.shard = enc, store, cfg, shard
        self.templates = resolve_templates(cfg.templates)
        self.keys_by_path: dict[str, str] = {}  # absolute path -> content key, for split files
        self.plan = pipeline_plan(cfg, enc.device.type)
        self.reader = Reader(cfg, enc.preprocess_cfg, pin_memory=enc.device.type == "cuda")
        self.encoder = Encoder(enc, cfg.batch_size, cfg.tokens_at, pack)
        self.writer = Writer(store, cfg.commit_every, self.keys_by_path)
        self.extension = Extension(cfg, self.plan, self.reader, self.encoder, self.writer, shard)

    # --------------------------------------------------------------- hashing
    def to_hash(self, items: list[VideoItem], s: ExtractSummary) -> list[VideoItem]:
        """The items to hash: not those that failed in an earlier run (unless ``retry_failed``).
        The failure reports are listed once, here."""
        failed_before = self.writer.list_failures()
        out = []
        for it in items:
            if path_key(it.path) in failed_before and not self.cfg.retry_failed:
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
                self.writer.fail(s, it, None, reason)
            else:
                out.append((os.path.abspath(it.path), key))
        return out

    def work_list(self, items: list[VideoItem], s: ExtractSummary, dist: Dist) -> list[tuple[str, VideoItem]]:
        """The videos to encode, once ``keys_by_path`` is known: one per content key, not
        committed yet, owned by this rank."""
        work: list[tuple[str, VideoItem]] = []
        seen: set[str] = set()
        done = set(self.store.keys("videos"))
        cached: list[tuple[str, VideoItem]] = []
        for it in items:
            key = self.keys_by_path.get(os.path.abspath(it.path))
            if key is None or key in seen:
                continue
            seen.add(key)
            if key in done:
                s.already_done += 1
                cached.append((key, it))
            elif dist.owns(key):
                work.append((key, it))
        s.unique = len(seen)
        if cached and dist.is_main:
            self._note_relabelled(cached, s)
        return work

    def _note_relabelled(self, cached: list[tuple[str, VideoItem]], s: ExtractSummary) -> None:
        """A cached video keeps the class (and a frame folder the --fps) it was committed with: say
        so when the inputs say otherwise (a corrected --class-names file re-run on the same store
        changes nothing)."""
        keys = [k for k, _ in cached]
        had = self.store.field("videos", "label", keys)
        other = [(it.path, old, it.label) for (_, it), old in zip(cached, had)
                 if it.label is not None and old != it.label]
        if other:
            path, old, new = other[0]
            s.notes.append(f"{len(other)} cached video{'s' * (len(other) != 1)} keep the class they were extracted with, "
                           f"not the inputs' (e.g. {path}: {old!r}, the inputs say {new!r}); extract into a new "
                           "--store to change classes")
        if self.cfg.fps is not None:
            rates = zip(self.store.field("videos", "backend", keys), self.store.field("videos", "fps", keys))
            n = sum(1 for backend, fps in rates if backend == "frames" and fps != self.cfg.fps)
            if n:
                s.notes.append(f"{n} cached frame folder{'s' * (n != 1)} keep the --fps they were extracted with, "
                               f"not {self.cfg.fps:g} (their timestamps); extract into a new --store to change it")

    # --------------------------------------------------------------- the pipeline
    def run(self, items: list[VideoItem], progress: bool = True, dist: Dist | None = None) -> ExtractSummary:
        """Extract ``items``; under torchrun each rank hashes a share of the inputs, then encodes
        the videos whose content key it owns, so ranks write disjoint entries."""
        dist = dist or Dist()
        s = ExtractSummary(inputs=len(items), store=self.store.path)
        t_start = time.perf_counter()
        with s.timed("hash"):
            mine = self._hash(items[dist.rank::dist.world], s)
            for part in dist.all_gather(mine):
                self.keys_by_path.update(dict(part))
            work = self.work_list(items, s, dist)
        self._pipeline(work, s, progress, t_start)
        self.finish(s, items, dist, progress)
        s.wall = time.perf_counter() - t_start
        return s

    def _pipeline(self, work: list[tuple[str, VideoItem]], s: ExtractSummary, progress: bool, t_start: float) -> None:
        """Decode ``work`` (a window ahead, in the reader's threads), encode it as it comes, and
        hand each encoded group to the writer's thread; every video committed on return."""
        from tqdm import tqdm

        bar = tqdm(total=len(work), unit="video", disable=not progress, desc="extract", dynamic_ncols=True)
        pool = self.reader.pool(self.plan)
        prefetch = max(2, 2 * self.plan.workers)  # decoded videos waiting: bounds memory, keeps the encoder fed
        futures: deque[tuple[str, VideoItem, Future]] = deque()
        todo = iter(work)
        writer = WriterThread(self.writer, s)

        def submit_more():
            while len(futures) < prefetch:
                nxt = next(todo, None)
                if nxt is None:
                    return
                futures.append((nxt[0], nxt[1], pool.submit(self.reader.read, nxt[1], nxt[0])))

        def encode_ready(flush: bool):
            for group in self.encoder.ready(flush):
                with s.timed("encode"):
                    outs = self.encoder.encode(group)
                writer.put(group, outs)  # blocks while the writer is 2 groups behind: bounded memory
                bar.update(len(group))
                bar.set_postfix(frames_s=f"{s.frames / max(1e-9, time.perf_counter() - t_start):.1f}",
                                failed=len(s.failed))

        try:
            submit_more()
            while futures:
                key, it, fut = futures.popleft()
                try:
                    with s.timed("decode"):
                        pending = fut.result()
                except DecodeError as err:
                    writer.check()
                    self.writer.fail(s, it, key, str(err))
                    bar.update(1)
                    submit_more()
                    continue
                submit_more()
                self.encoder.push(pending)
                encode_ready(flush=False)
            encode_ready(flush=True)
            writer.close()  # the last batch commit, then any error of the writer is raised here
        finally:
            writer.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def finish(self, s: ExtractSummary, items: list[VideoItem], dist: Dist, progress: bool) -> None:
        """After the videos: extend committed ones to this key, then the classes' text."""
        self.extend(s, dist, progress)
        if dist.is_main:
            with s.timed("text"):
                labels = {it.label for it in items if it.label}
                labels |= {lb for lb in self.store.field("videos", "label") if lb}
                s.text_classes = self.encode_classes(sorted(labels))

    def extend(self, s: ExtractSummary, dist: Dist, progress: bool = True, only: set[str] | None = None) -> None:
        """Add the arrays this run's key asks for to committed videos that lack them
        (:class:`~cachekit.extract.extend.Extension`); ``only``: these video keys alone."""
        self.extension.run(s, dist, progress, only)

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
    keep_freed_memory()  # decode workers and the encoder stop taking fresh pages for every video
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
            store = open_store(store_path, "a", attrs=attrs, writer=wid, packable=PACKED_GROUPS)
            check_key(store, key)  # refuses another configuration; extensible fields merge
            check_folds(store, inputs)  # refuses another fold of a data set the store holds
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
            summary = merge_summaries(parts)
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
                    store.update_attrs(  # merged into the key as stored now: another writer's extension kept
                        lambda cur: {**cur, "cache_key": merged_key(cur.get("cache_key", {}), merged)})
            record_splits(store, inputs, extractor.keys_by_path, wid)  # this writer's own documents
            summary.coverage = store_coverage(store)
            summary.notes.extend(inputs.notes)
            summary.encoder = encoder_caveat(key)
            store.finalize()
    finally:
        store.close()  # also on errors: the writer's lease goes with it (closing twice is harmless)
    dist.barrier()
    return summary

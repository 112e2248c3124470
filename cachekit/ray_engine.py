"""Extraction on Ray Data, for pipelines that already run on Ray (``pip install 'clipcache[ray]'``).

``clipcache extract ... --engine ray [--address ADDR]``, or from Python::

    from cachekit.ray_engine import extract_ray
    summary = extract_ray(collect_inputs(["videos.csv"]), "s3://bucket/cache.zarr", ExtractConfig(...))

The inputs become a Ray dataset. Hashing and decoding (sample, resize, centre-crop: uint8 frames)
run as Ray tasks on CPUs; encoding runs in a pool of actors, one per GPU (or CPU actors where
there is none), each holding the frozen encoder and committing its batches into the store as its
own writer (``ray-<id>``). Ray's streaming executor moves the frames between them and holds back
decoding while the actors are busy (backpressure). The driver opens the store first (creating it
and checking its key), records failures, and at the end extends committed videos and encodes the
classes' text, as ``extract`` does. A rerun resumes from the store's own records: committed keys
are skipped. Each actor encodes a video's frames in forwards of their own, so the store equals one
process's extraction bit for bit on CPU.

Zarr stores only (a local path shared by the Ray nodes, or a bucket): HDF5 publishes by one
process merging every writer's part file, which Ray's short-lived actors cannot coordinate.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import numpy as np

from .cpu import keep_freed_memory
from .errors import InputError
from .extract import ExtractConfig, Extractor, ExtractSummary, extract
from .extract.reader import Reader, hash_input
from .extract.writer import video_entry
from .inputs import InputSet, VideoItem
from .shards import Shard

log = logging.getLogger(__name__)

#: Ray's logical memory a decoding task reserves (full-size frames of one video while it samples)
DECODE_MEMORY = 256 << 20


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as err:
        raise InputError(f"--engine ray needs Ray Data: pip install 'clipcache[ray]' ({err})") from err
    return ray


def _hash_row(row: dict) -> dict:
    key, reason = hash_input(row["path"])
    return {"i": row["i"], "key": key or "", "reason": reason or ""}


class _Decode:
    """A Ray task's work: the reader stage's decode and resize/crop of one video (uint8)."""

    def __init__(self, cfg: ExtractConfig, preprocess: dict):
        keep_freed_memory()  # as extract does in its own process
        self.reader = Reader(cfg, preprocess)

    def __call__(self, row: dict) -> dict:
        from .errors import DecodeError

        cfg, size = self.reader.cfg, self.reader.preprocess["size"]
        try:
            video, u8 = self.reader.frames(row["path"], row["key"], cfg.backend, cfg.fps)  # u8: [V*T, 3, S, S]
        except DecodeError as err:
            return {**row, "error": str(err), "u8": np.zeros((0, 3, size, size), np.uint8),
                    "indices": np.zeros((0, 0), np.int64), "timestamps": np.zeros((0, 0)), "n_frames": 0,
                    "fps": 0.0, "duration": 0.0, "backend": ""}
        return {**row, "error": "", "u8": u8.numpy(), "indices": video.indices,
                "timestamps": video.timestamps, "n_frames": video.n_frames, "fps": float(video.fps),
                "duration": float(video.duration), "backend": video.backend}


class _Encode:
    """An actor of the pool: the frozen encoder and a writer of the store (the encode and write
    stages of :class:`~cachekit.extract.Extractor`). Each call encodes a batch of decoded videos
    and commits it as one batch record (the most a kill can lose)."""

    def __init__(self, store_path: str, cfg: ExtractConfig, storage_options: dict, prefix: str):
        from clipcache.stores import open_store, set_storage_options

        from .encoder import load_clip

        keep_freed_memory()
        if storage_options:
            set_storage_options(storage_options)
        self.store = open_store(store_path, "a", shared=True, writer=f"{prefix}-{uuid.uuid4().hex[:8]}")
        self.ex = Extractor(load_clip(cfg.encoder), self.store, cfg)

    def __call__(self, batch: dict) -> dict:
        import torch

        from .video import DecodedVideo

        out = {"key": [], "path": [], "label": [], "error": [], "frames": []}
        items = []
        for i in range(len(batch["key"])):
            key, path = str(batch["key"][i]), str(batch["path"][i])
            label = str(batch["label"][i]) or None
            err = str(batch["error"][i])
            frames = 0
            if not err:
                u8 = torch.from_numpy(np.ascontiguousarray(batch["u8"][i]))  # [V*T, 3, S, S] uint8
                video = DecodedVideo(None, np.asarray(batch["indices"][i]), np.asarray(batch["timestamps"][i]),
                                     int(batch["n_frames"][i]), float(batch["fps"][i]), float(batch["duration"][i]),
                                     str(batch["backend"][i]))
                pending = self.ex.reader.pending(key, VideoItem(path, label), video, u8)
                arrays, record = video_entry(self.ex.encoder.encode_video(pending))
                items.append((key, arrays, record))
                frames = int(np.prod(arrays["frame_idx"].shape))
            for name, v in (("key", key), ("path", path), ("label", label or ""), ("error", err), ("frames", frames)):
                out[name].append(v)
        self.ex.writer.commit(items)  # the commit point of the whole batch
        return {k: np.array(v) for k, v in out.items()}

    def __del__(self):
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


def _run(ex: Extractor, items: list[VideoItem], progress: bool, dist, *, store_path: str,
         actors: int | None, gpus_per_actor: float) -> ExtractSummary:
    """:meth:`Extractor.run` on Ray: hash and decode as tasks, encode in the actor pool."""
    ray = _ray()
    from clipcache.stores import storage_options

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    s = ExtractSummary(inputs=len(items), store=ex.store.path)
    t_start = time.perf_counter()
    with s.timed("hash"):
        todo = ex.to_hash(items, s)
        hashed = ray.data.from_items([{"i": i, "path": it.path} for i, it in enumerate(todo)]).map(_hash_row)
        for row in (hashed.take_all() if todo else []):
            it = todo[row["i"]]
            if row["reason"]:
                ex.writer.fail(s, it, None, row["reason"])
            else:
                ex.keys_by_path[os.path.abspath(it.path)] = row["key"]
        work = ex.work_list(items, s, dist)
    if work:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = gpus > 0 and gpus_per_actor > 0 and ex.enc.device.type == "cuda"
        n = actors or (max(1, int(gpus / gpus_per_actor)) if use_gpu else max(1, int(resources.get("CPU", 2)) // 2))
        ds = ray.data.from_items([{"key": k, "path": it.path, "label": it.label or ""} for k, it in work])
        # decoding: CPU tasks (a function, not a class), each reserving the memory of a decoded
        # video; that reservation also keeps Ray from fusing them into the encoder actors
        ds = ds.map(_Decode(ex.cfg, ex.enc.preprocess_cfg), num_cpus=1, memory=DECODE_MEMORY)
        ds = ds.map_batches(_Encode, fn_constructor_args=(str(store_path), ex.cfg, storage_options(), "ray"),
                            batch_size=ex.cfg.commit_every, compute=ray.data.ActorPoolStrategy(size=n),
                            num_cpus=1, num_gpus=gpus_per_actor if use_gpu else 0)
        with s.timed("encode"):  # decode, encode and write, overlapped on the cluster
            for row in ds.iter_rows():
                item = VideoItem(str(row["path"]), str(row["label"]) or None)
                if row["error"]:
                    ex.writer.fail(s, item, str(row["key"]), str(row["error"]))
                else:
                    ex.writer.committed(s, item, int(row["frames"]))
    ex.finish(s, items, dist, progress)
    s.wall = time.perf_counter() - t_start
    return s


def extract_ray(inputs: InputSet, store_path: str, cfg: ExtractConfig, address: str | None = None,
                shard: Shard | None = None, writer: str | None = None, progress: bool = True,
                actors: int | None = None, gpus_per_actor: float = 1.0, enc=None) -> ExtractSummary:
    """Extract ``inputs`` into ``store_path`` on a Ray cluster (see the module docstring).

    ``address``: the cluster to join (default: the one this process already joined, else
    ``RAY_ADDRESS``, else a local Ray started for this run). ``actors``: encoder actors (default:
    one per GPU, or half the CPUs). ``shard``/``writer`` as for :func:`cachekit.extract.extract`.
    """
    from clipcache.stores import _is_h5

    if _is_h5(store_path):
        raise InputError("--engine ray writes Zarr stores only (a path not ending .h5, or an s3:// URL); "
                         "HDF5 stores are published by one process")
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=False,
                 include_dashboard=False, logging_level=logging.WARNING)
    elif address:
        log.info("Ray is already initialised in this process; --address %s is not used", address)

    def run(ex, items, progress_, dist):
        return _run(ex, items, progress_, dist, store_path=store_path, actors=actors, gpus_per_actor=gpus_per_actor)

    return extract(inputs, store_path, cfg, progress=progress, enc=enc, shard=shard, writer=writer, run=run)

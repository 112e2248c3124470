"""Measurements of the store and the extraction pipeline, shared by ``extract.py`` and ``gpu.py``.

Each function measures one thing on real files, real zarr and the real encoder, and returns a
small dict of numbers. Speed is reported, never asserted.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")


# ------------------------------------------------------------------------------ videos
def synth_videos(folder: Path, n: int, frames: int = 16, size: int = 64, seed: int = 0) -> list[Path]:
    """``n`` byte-distinct small H.264 clips: a few rendered clips, copied with a distinct
    trailing ``free`` box each (players ignore it; the content keys differ)."""
    from cachekit.synth import CLASSES, SynthConfig, render_clip, write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    names = list(CLASSES)
    cfg = SynthConfig(frames=frames, size=size, seed=seed)
    bases = []
    for i in range(min(n, 8)):
        p = folder / f"base_{i}.mp4"
        write_mp4(p, render_clip(names[i % len(names)], i, cfg), fps=12)
        bases.append(p.read_bytes())
    out = []
    for i in range(n):
        p = folder / f"v{i:05d}.mp4"
        tag = f"clipcache-bench-{i}".encode()
        p.write_bytes(bases[i % len(bases)] + struct.pack(">I", 8 + len(tag)) + b"free" + tag)
        out.append(p)
    for i in range(min(n, 8)):
        (folder / f"base_{i}.mp4").unlink()
    return out


# ------------------------------------------------------------------------------ store
def _video_arrays(rng, t: int, d: int, w: int, tokens: tuple[int, ...], grid: int) -> dict:
    out = {
        "emb": rng.standard_normal((1, t, d)).astype(np.float32),  # [V, T, D']
        "cls": rng.standard_normal((1, t, w)).astype(np.float32),  # [V, T, W]
        "frame_idx": np.arange(t, dtype=np.int32)[None],
        "timestamps": np.arange(t, dtype=np.float32)[None],
    }
    for b in tokens:
        out[f"tokens_{b}"] = rng.standard_normal((1, t, grid + 1, w)).astype(np.float16)  # [V, T, N+1, W]
    return out


def disk_write_rate(folder: Path, nbytes: int = 64 << 20) -> float:
    """MB/s of a plain sequential write + fsync of ``nbytes`` to ``folder``."""
    data = os.urandom(1 << 20)
    p = folder / "disk-rate.bin"
    t0 = time.perf_counter()
    with open(p, "wb") as f:
        for _ in range(nbytes >> 20):
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    p.unlink()
    return nbytes / dt / 1e6


def write_cost(folder: Path, videos: int = 500, t: int = 8, d: int = 512, w: int = 768,
               tokens: tuple[int, ...] = (), grid: int = 49, batch: int = 32, suffix: str = ".zarr") -> dict:
    """Commit ``videos`` extraction-shaped entries in batches of ``batch``; amortised ms per
    video, files per video, and MB/s of array bytes."""
    from cachekit.cachekey import PACKED_GROUPS
    from clipcache.stores import open_store

    rng = np.random.default_rng(0)
    entries = [(f"{i:064x}", _video_arrays(rng, t, d, w, tokens, grid), {"path": f"/v/{i}.mp4"})
               for i in range(videos)]
    nbytes = sum(a.nbytes for _, arrs, _ in entries for a in arrs.values())
    path = folder / f"write-{len(tokens)}-{videos}{suffix}"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    with open_store(path, "a", attrs={"cache_key": {"bench": 1}}, packable=PACKED_GROUPS) as s:  # as extract
        for i in range(0, videos, batch):
            s.commit_many("videos", entries[i:i + batch])
    dt = time.perf_counter() - t0
    files = sum(len(fs) for _, _, fs in os.walk(path)) if path.is_dir() else 1
    shutil.rmtree(path, ignore_errors=True)
    return {"videos": videos, "ms_per_video": dt / videos * 1e3, "files_per_video": files / videos,
            "mb_s": nbytes / dt / 1e6, "mb": nbytes / 1e6}


def column_read(folder: Path, videos: int = 10000, t: int = 8, d: int = 512, batch: int = 256) -> dict:
    """Read ``emb`` of every video through the store against a plain sequential read of a file
    holding the same bytes (both warm in the page cache, best of 3). Opening the store and
    loading its index (what ``FeatureCache`` does once) is timed apart, as ``index_s``."""
    from clipcache.stores import open_store

    rng = np.random.default_rng(1)
    path = folder / f"column-{videos}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    keys = [f"{i:064x}" for i in range(videos)]
    with open_store(path, "a", attrs={"cache_key": {"bench": 1}}) as s:
        for i in range(0, videos, batch):
            emb = rng.standard_normal((min(batch, videos - i), 1, t, d)).astype(np.float32)
            s.commit_many("videos", [(k, {"emb": e}, {}) for k, e in zip(keys[i:i + batch], emb)])
    raw = folder / "column.bin"
    with open_store(path) as s:
        col = s.read_column("videos", "emb", keys)
    col.tofile(raw)

    def best(fn, n=3):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t0 = time.perf_counter()
    store = open_store(path)
    keys = store.keys("videos")  # the index (every commit record): FeatureCache loads it on open
    t_index = time.perf_counter() - t0
    t_store = best(lambda: store.read_column("videos", "emb", keys))
    store.close()
    t_plain = best(lambda: np.fromfile(raw, dtype=np.float32))
    nbytes = col.nbytes
    raw.unlink()
    shutil.rmtree(path, ignore_errors=True)
    return {"videos": videos, "mb": nbytes / 1e6, "store_mb_s": nbytes / t_store / 1e6,
            "plain_mb_s": nbytes / t_plain / 1e6, "ratio": t_plain / t_store, "index_s": t_index}


# ------------------------------------------------------------------------------ pipeline
def decode_alone(enc, videos: list[Path], frames: int, workers: int) -> dict:
    """frames/s of decode + resize/crop + normalise (what extract's workers do), ``workers`` threads;
    ``backends``: the decoders auto used, with their video counts."""
    from collections import Counter

    from cachekit.video import SamplerConfig, decode_video

    sampler = SamplerConfig(frames=frames)

    def one(p: Path) -> tuple[int, str]:
        v = decode_video(str(p), sampler, p.name)
        x = enc.normalize(enc.resize_crop(v.frames.reshape(-1, *v.frames.shape[2:])))
        return int(x.shape[0]), v.backend

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(one, videos))
    n = sum(k for k, _ in done)
    return {"frames_s": n / (time.perf_counter() - t0), "workers": workers, "frames": n,
            "backends": dict(Counter(b for _, b in done))}


def backends_label(counts: dict) -> str:
    """``pyav`` or ``pyav 60, torchcodec 4``: the decoders a run used."""
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{b} {n}" for b, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def encoder_alone(enc, n_frames: int, batch: int) -> dict:
    """frames/s of the image tower on already-preprocessed frames (fp16 autocast on CUDA)."""
    import torch

    size = enc.preprocess_cfg["size"]
    x = torch.randn(batch, 3, size, size)
    if enc.device.type == "cuda":
        x = x.to(enc.device)
    amp = enc.device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        for _ in range(2):  # warm-up at this shape
            enc.encode_frames(x)
        if amp:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        done = 0
        while done < n_frames:
            enc.encode_frames(x)
            done += batch
        if amp:
            torch.cuda.synchronize()
    return {"frames_s": done / (time.perf_counter() - t0), "batch": batch, "frames": done}


def pipeline(enc, videos: list[Path], folder: Path, frames: int, workers: int | None, batch: int,
             tokens_at: tuple[int, ...] = ()) -> dict:
    """frames/s of the whole :func:`cachekit.extract.extract` call into a fresh Zarr store."""
    from cachekit.extract import ExtractConfig, extract, pipeline_plan
    from cachekit.inputs import InputSet, VideoItem
    from cachekit.video import SamplerConfig

    store = folder / f"pipeline-{len(videos)}-{len(tokens_at)}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cfg = ExtractConfig(sampler=SamplerConfig(frames=frames), batch_size=batch, workers=workers,
                        tokens_at=tokens_at)
    t0 = time.perf_counter()
    s = extract(InputSet(items=[VideoItem(str(v)) for v in videos]), str(store), cfg, progress=False, enc=enc)
    dt = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    if s.failed:
        raise RuntimeError(f"pipeline failed on {len(s.failed)} videos: {s.failed[:2]}")
    plan = pipeline_plan(cfg, enc.device.type)
    return {"frames_s": s.frames / dt, "videos": s.extracted, "seconds": dict(s.seconds),
            "cpu_seconds": dict(s.cpu_seconds), "wall": dt,
            "workers": plan.workers, "yield_cpu": plan.yield_cpu, "encoder_threads": plan.encoder_threads}


_RSS_CHILD = """
import resource, sys
from cachekit.encoder import EncoderConfig
from cachekit.extract import ExtractConfig, extract
from cachekit.inputs import InputSet, VideoItem
from cachekit.video import SamplerConfig
paths = open(sys.argv[1]).read().split()
cfg = ExtractConfig(encoder=EncoderConfig(model=sys.argv[3], pretrained="random", device="cpu"),
                    sampler=SamplerConfig(frames=8))
s = extract(InputSet(items=[VideoItem(p) for p in paths]), sys.argv[2], cfg, progress=False)
assert s.extracted == len(paths), s.failed[:3]
# VmHWM: this process's own peak (ru_maxrss would carry over the parent's peak across fork + exec)
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
except (OSError, IndexError):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(hwm)
"""


def peak_rss(folder: Path, videos: list[Path], model: str = TINY) -> dict:
    """Peak resident memory (MB) of a fresh process extracting ``videos`` (T = 8, tiny model):
    its own high-water mark (``VmHWM``), read by the process itself at the end."""
    listing = folder / f"rss-{len(videos)}.txt"
    listing.write_text("\n".join(map(str, videos)))
    store = folder / f"rss-{len(videos)}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(listing), str(store), model], env=env,
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"peak-RSS child failed: {r.stderr[-1500:]}")
    shutil.rmtree(store, ignore_errors=True)
    return {"videos": len(videos), "peak_rss_mb": int(r.stdout.split()[-1]) / 1024,
            "seconds": time.perf_counter() - t0}


def temp_dir(prefix: str = "clipcache-bench-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

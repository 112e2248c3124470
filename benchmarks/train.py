"""Training steps per second from the cache vs. the same step with the frozen encoder in the loop.

For every method that trains from the cache (``clipcache methods``: no backbone, reads only
embeddings / class tokens / text), one run times, on the same machine:

- **cache step**: assemble the episode (or batch) from cached arrays in memory (``CacheData``),
  forward, loss, backward, AdamW step;
- **reference step**: the same, after running the frozen encoder forward (no grad) over the
  episode's frames, as reference code does every step (pixels are synthetic and already
  preprocessed: decoding is not counted, which favours the reference).

Episodic methods: 5-way 1-shot, 1 query per class (10 videos), T = 8 frames; all-way methods: a
batch of the same 10 videos. Model: ViT-B-32 with random weights (speed does not depend on the
values); ``--quick``: the 4-block test model. Ratio goal: >= 200x for 5-way 1-shot, T = 8.
Timings: the median of ``--steps`` cache steps after two warm-up steps; the fastest of
``--ref-steps`` reference steps (the machine may be shared); "CPU ratio" compares process CPU
time (all threads), less sensitive to other load than wall time. The method step runs on
``--head-threads`` (default 1: on a shared CPU, intra-op threads on small tensors mostly wait
for each other) and the encoder forward on ``--threads`` (default: torch's).

Run: ``python benchmarks/train.py [--quick] [--steps 30] [--ref-steps 2] [--device auto]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from _machine import cpu_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY = ROOT / "tests" / "assets" / "tiny-clip.json"


class MemoryCache:
    """The arrays ``CacheData`` reads, random, in memory: V videos of C classes, one view."""

    def __init__(self, classes: int, per_class: int, frames: int, dim: int, templates: int, seed: int = 0):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(classes), per_class).astype(np.int64)  # [V]
        self._emb = rng.standard_normal((classes * per_class, 1, frames, dim)).astype(np.float32)
        self._text = rng.standard_normal((classes, templates, dim)).astype(np.float32)
        self.key = {"views": 1}
        self.tokens_at = ()

    def emb(self, view=0):
        return self._emb if view is None else self._emb[:, view]

    def cls(self, view=0):
        return self.emb(view)

    def text(self):
        return self._text


def machine(device) -> str:
    import torch

    cpu = cpu_model()
    out = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if hasattr(os, "getloadavg"):
        out += f", load average {os.getloadavg()[0]:.1f} at start"
    if device.type == "cuda":
        out += f", GPU {torch.cuda.get_device_name(device)}"
    return out + f", {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 4-block test model instead of ViT-B-32")
    ap.add_argument("--steps", type=int, default=30, help="timed cache steps per method")
    ap.add_argument("--ref-steps", type=int, default=1, help="timed reference steps per method")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--queries", type=int, default=1)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the encoder forward (0: torch's default)")
    ap.add_argument("--head-threads", type=int, default=1,
                    help="torch threads of the method step (small tensors: 1 avoids contention; 0: as --threads)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from cachekit.batches import CacheData
    from cachekit.encoder import EncoderConfig, load_clip, pick_device
    from cachekit.episodes import EpisodeSampler
    from cachekit.methods import make_config, method_module
    from cachekit.train import list_methods, make_optimizer

    enc_threads = args.threads or torch.get_num_threads()
    head_threads = args.head_threads or enc_threads
    torch.set_num_threads(enc_threads)
    device = torch.device(pick_device(args.device))
    model = str(TINY) if args.quick else "ViT-B-32"
    logging.disable(logging.WARNING)  # "random weights" is intended here
    t0 = time.perf_counter()
    enc = load_clip(EncoderConfig(model=model, pretrained="random", device=str(device)))
    logging.disable(logging.NOTSET)
    info, T = enc.info, args.frames
    with torch.no_grad():  # warm-up: the first forward allocates
        enc.encode_frames(torch.randn(2, 3, info.image_size, info.image_size, device=device))
    print(f"machine: {machine(device)}; method step on {head_threads} thread(s), encoder on {enc_threads}")
    print(f"model: {model} (random weights, loaded in {time.perf_counter() - t0:.1f}s), D'={info.embed_dim}, "
          f"T={T}; {args.ways}-way {args.shots}-shot {args.queries} query/class "
          f"({args.ways * (args.shots + args.queries)} videos, "
          f"{args.ways * (args.shots + args.queries) * T} frames per step)")

    rows, seen = [], set()
    for r in list_methods(model, T):  # each trainable from-cache method, its first variant
        if (r["available"] and not r["needs_backbone"] and not r["needs"]["pixels"] and not r["needs"]["tokens_at"]
                and r["trainable_params"] != 0 and r["name"] not in seen):
            rows.append(r)
            seen.add(r["name"])
    cache = MemoryCache(classes=64, per_class=10, frames=T, dim=info.embed_dim, templates=16)
    n_videos = args.ways * (args.shots + args.queries)
    size = info.image_size
    print(f"{'method':<32} {'protocol':<9} {'cache step':>11} {'steps/s':>9} {'ref step':>9} {'ratio':>8} "
          f"{'CPU ratio':>10}")
    worst = None
    for r in rows:
        name, variant = r["name"], r["variant"]
        protocol = "episodic" if "episodic" in r["protocols"] else "allway"
        torch.manual_seed(0)
        m = method_module(name).build(make_config(name, variant), info, T, None).to(device).train()
        needs = m.needs
        if protocol == "allway":
            from dataclasses import replace

            needs = replace(needs, text=True)
        data = CacheData(cache, needs, device)
        sampler = EpisodeSampler(cache.labels, range(len(cache.labels)), args.ways, args.shots, args.queries, seed=0)

        def item(i: int):
            if protocol == "episodic":
                return data.episode(sampler.episode(i))
            spec = sampler.episode(i)
            idx = [v for row in spec.support + spec.query for v in row]
            return data.batch(idx)

        def loss_of(x):
            if protocol == "episodic":
                return m.episode_loss(x)[0]
            return m.video_loss(x, data.text)[0]

        with torch.no_grad():
            loss_of(item(0))  # materialise lazy parameters before the optimiser
        opt = make_optimizer(m.trainable_parameters(), 1e-4, 0.01)  # the trainer's optimiser

        def step(i: int, encode: bool) -> tuple[float, float]:
            """One training step: (wall seconds, process CPU seconds over all threads)."""
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            x = item(i)
            if encode:  # what a reference loop does: run the frozen encoder on the frames
                torch.set_num_threads(enc_threads)
                with torch.no_grad():
                    pixels = torch.randn(n_videos * T, 3, size, size, device=device)
                    emb = enc.encode_frames(pixels).emb.float().view(n_videos, T, -1)  # [B, T, D']
                torch.set_num_threads(head_threads)
                batches = (x.support, x.query) if protocol == "episodic" else (x,)
                off = 0
                for b in batches:
                    b.emb = emb[off:off + len(b)]
                    off += len(b)
            loss = loss_of(x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            return time.perf_counter() - t, time.process_time() - c

        torch.set_num_threads(head_threads)
        for i in range(2):
            step(i, False)
        timed = [step(2 + i, False) for i in range(args.steps)]
        timed_ref = [step(100 + i, True) for i in range(args.ref_steps)]
        cache_s, cache_cpu = (statistics.median(x[k] for x in timed) for k in (0, 1))
        ref_s, ref_cpu = (min(x[k] for x in timed_ref) for k in (0, 1))
        ratio = ref_s / cache_s
        worst = ratio if worst is None else min(worst, ratio)
        label = name + ("" if not variant else " " + ",".join(f"{k}={v}" for k, v in variant.items()))
        print(f"{label:<32} {protocol:<9} {cache_s * 1e3:>9.2f}ms {1 / cache_s:>9.1f} {ref_s:>8.2f}s "
              f"{ratio:>7.0f}x {ref_cpu / cache_cpu:>9.0f}x")
    if worst is not None:
        verdict = "met" if worst >= 200 else "NOT met"
        print(f"goal >= 200x (5-way 1-shot, T=8): {verdict} (lowest ratio {worst:.0f}x)"
              + (" [--quick: tiny model, ratios not comparable]" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

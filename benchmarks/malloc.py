"""A decode worker's cost per video with glibc's malloc as the system has it and as extract sets it.

``extract`` and ``train`` call :func:`cachekit.cpu.keep_freed_memory` (blocks under 32 MB reused from
malloc's heaps, trimming beyond 64 MB). An allocator setting holds for a whole process, so each
side runs in fresh processes, alternated (``--rounds`` each, ``CLIPCACHE_MALLOC=system`` for the
system's): each process pins itself to one core and times what extract's decode threads do, in a
worker thread: decode the 8 segment centres (``auto``), resize and centre-crop to 224 px,
normalise. Clips: ``benchmarks/decode.py``'s Kinetics-like (keyframes every 250 and 12) and
SSv2-like sets. Printed: ms per video (each process's best pass over the clips), minor page
faults per video, and the ratio of the medians.

Run: ``python benchmarks/malloc.py [--rounds 3] [--clips 3]`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, load_average  # noqa: E402

_CHILD = """
import os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
try:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
except AttributeError:
    pass
import torch
torch.set_num_threads(1)
from cachekit.cpu import keep_freed_memory
from cachekit.pixels import normalise_pixels, resize_crop
from cachekit.video import SamplerConfig, decode_video
said = keep_freed_memory()  # where extract calls it: torch and cachekit imported (CLIPCACHE_MALLOC=system: nothing)
pre = {"size": 224, "interpolation": "bicubic", "resize_mode": "shortest",
       "mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}
cfg, paths, passes = SamplerConfig(frames=8), sys.argv[2:], int(sys.argv[1])
def one(p):
    v = decode_video(p, cfg, "k", "auto")
    return normalise_pixels(resize_crop(v.frames.reshape(-1, *v.frames.shape[2:]), pre).contiguous(), pre)
def each(pool):  # one video at a time, its pixels dropped once done (extract's encoder frees them)
    for p in paths:
        pool.submit(one, p).result()
with ThreadPoolExecutor(1) as pool:  # a decode thread, as in extract (glibc gives threads arenas of their own)
    each(pool)  # warm-up
    f0, best = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        each(pool)
        best = min(best, time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(best / len(paths) * 1e3, faults / (passes * len(paths)))
print(said)
"""


def measure(paths: list[Path], system: bool, passes: int) -> tuple[float, float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPCACHE_MALLOC", "MALLOC_MMAP_THRESHOLD_",
                                                            "MALLOC_TRIM_THRESHOLD_")}
    if system:
        env["CLIPCACHE_MALLOC"] = "system"
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(passes), *map(str, paths)], env=env,
                       capture_output=True, text=True, check=True)
    numbers, said = r.stdout.strip().splitlines()[-2:]
    ms, faults = map(float, numbers.split())
    return ms, faults, said


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="processes per side, alternated")
    ap.add_argument("--clips", type=int, default=3, help="clips per set")
    ap.add_argument("--passes", type=int, default=5, help="timed passes over the clips per process")
    args = ap.parse_args(argv)
    from decode import make_clips

    with tempfile.TemporaryDirectory(prefix="clipcache-malloc-") as tmp:
        sets = make_clips(Path(tmp), args.clips)
        paths = [p for key, ps in sets.items() if key[0] in ("kinetics", "ssv2") for p in ps]
        print(f"machine: {cpu_model()}; load average {load_average():.1f} at start; {len(paths)} clips "
              f"(Kinetics-like, keyframes every 250 and 12; SSv2-like); one core, a decode thread")
        runs: dict[str, list[tuple[float, float]]] = {"system": [], "kept": []}
        said = {}
        for r in range(args.rounds):
            for side in (("system", "kept") if r % 2 == 0 else ("kept", "system")):
                ms, faults, said[side] = measure(paths, side == "system", args.passes)
                runs[side].append((ms, faults))
        print(f"load average {load_average():.1f} at the end\n")
        print("| malloc | decode + resize + normalise, ms per video (each process's best pass) | minor page faults per video |")
        print("| --- | --- | --- |")
        for side in ("system", "kept"):
            ms = ", ".join(f"{m:.1f}" for m, _ in runs[side])
            faults = ", ".join(f"{f:,.0f}" for _, f in runs[side])
            print(f"| {said[side]} | {ms} | {faults} |")
        med = {s: statistics.median(m for m, _ in runs[s]) for s in runs}
        print(f"\nsystem / kept (medians): {med['system'] / med['kept']:.2f}x")


if __name__ == "__main__":
    main()

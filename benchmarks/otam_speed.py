"""Time OTAM on a test-sized batch: the cell-by-cell recursion versus the column sweep.

Setting: ``episodes`` symmetric W-way 1-shot episodes with W queries each, T frames of width D,
i.e. episodes·W² query-support pairs and twice as many DP evaluations (both directions). The
frame-distance matrices are computed once from random features (the cosine is timed separately)
and fed to both implementations, so the timings measure the DP alone.

Two regimes are reported, because they differ a lot on CPU:

- warm: best of ``repeats`` interleaved runs in this process (steady state of a long evaluation);
  wall seconds and process CPU seconds (the latter is less sensitive to other load);
- first call: each implementation once in a fresh interpreter, where every large allocation is
  still page-faulted in (the allocator has not yet adapted).

Run: ``python benchmarks/otam_speed.py [--episodes 10000]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from cachekit.metrics import OTAM_LAMBDA, frame_cosine, otam_from_dists, otam_reference

_FIRST_CALL = """
import time, torch
from cachekit.metrics import {fn}
dists = torch.rand({shape}, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    tic = time.perf_counter()
    {fn}(dists, {lbda})
print(time.perf_counter() - tic)
"""


def _episode_dists(
    episodes: int, ways: int, frames: int, dim: int, seed: int, block: int = 500
) -> tuple[torch.Tensor, float]:
    """Frame distances ``[2, E, W, W, T, T]`` (both directions, 1 - cos) of random episodes, and
    the seconds spent in :func:`frame_cosine` (feature generation not counted)."""
    gen = torch.Generator().manual_seed(seed)
    out, seconds = [], 0.0
    for start in range(0, episodes, block):
        n = min(block, episodes - start)
        q = torch.randn(n, ways, frames, dim, generator=gen)  # [E, Q, T, D]
        s = torch.randn(n, ways, frames, dim, generator=gen)  # [E, S, T, D]
        tic = time.perf_counter()
        out.append(1.0 - frame_cosine(q, s))  # [E, Q, S, T, T]
        seconds += time.perf_counter() - tic
    dists = torch.cat(out)
    return torch.stack([dists, dists.transpose(-1, -2)]), seconds


def _timed(fn: Callable, *args) -> tuple[torch.Tensor, float, float]:
    """Result, wall seconds and process CPU seconds of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _first_call_seconds(fn_name: str, shape: tuple[int, ...], lbda: float) -> float:
    """Wall seconds of one call of ``cachekit.metrics.<fn_name>`` in a fresh interpreter."""
    code = _FIRST_CALL.format(fn=fn_name, shape=shape, lbda=lbda)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def run_otam_speed(
    episodes: int = 10_000,
    ways: int = 5,
    frames: int = 8,
    dim: int = 512,
    lbda: float = OTAM_LAMBDA,
    repeats: int = 3,
    first_call: bool = True,
    seed: int = 0,
) -> dict[str, float | int]:
    """Time both OTAM implementations on the same distances; returns seconds (warm: best of
    ``repeats``), the speed-ups and the largest disagreement between the two."""
    with torch.no_grad():
        dists, cosine_s = _episode_dists(episodes, ways, frames, dim, seed)
        values: dict[str, torch.Tensor] = {}
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):  # interleaved, so load from other processes hits both alike
            for name, fn in (("naive", otam_reference), ("fast", otam_from_dists)):
                values[name], wall, cpu = _timed(fn, dists, lbda)
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], wall), min(old[1], cpu))
    naive, fast = values["naive"], values["fast"]
    result: dict[str, float | int] = {
        "episodes": episodes,
        "pairs": episodes * ways * ways,
        "dp_evaluations": naive.numel(),
        "frames": frames,
        "dim": dim,
        "lambda": lbda,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "cosine_s": cosine_s,
        "naive_otam_s": best["naive"][0],
        "fast_otam_s": best["fast"][0],
        "speedup": best["naive"][0] / best["fast"][0],
        "naive_otam_cpu_s": best["naive"][1],
        "fast_otam_cpu_s": best["fast"][1],
        "cpu_speedup": best["naive"][1] / best["fast"][1],
        "max_abs_diff": (naive - fast).abs().max().item(),
    }
    if first_call:
        shape = (naive.numel(), frames, frames)
        naive_first = _first_call_seconds("otam_reference", shape, lbda)
        fast_first = _first_call_seconds("otam_from_dists", shape, lbda)
        result |= {
            "naive_first_call_s": naive_first,
            "fast_first_call_s": fast_first,
            "first_call_speedup": naive_first / fast_first,
        }
    return result


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--lbda", type=float, default=OTAM_LAMBDA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-first-call", dest="first_call", action="store_false")
    args = parser.parse_args(argv)
    result = run_otam_speed(
        args.episodes, args.ways, args.frames, args.dim, args.lbda, args.repeats, args.first_call
    )
    for key, value in result.items():
        print(f"{key:>19}: {value:.4g}" if isinstance(value, float) else f"{key:>19}: {value}")
    return result


if __name__ == "__main__":
    main()

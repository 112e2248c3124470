"""Episodes per second of the no-training baselines, from a store, as `clipcache eval` runs them.

Setting: a store of ``videos`` videos (random per-frame embeddings, ``classes`` classes, T frames
of width D, written directly as cachekit.extract lays it out) with one ``test`` split; support
prototypes scored on ``episodes`` symmetric W-way 1-shot episodes (1 query per class) with mean
pooling and with OTAM.

Numbers per metric:

- ``metric_s`` ("scoring"): the metric on all episodes, i.e. ``Proto.episodes_logits`` over the
  episode index arrays in chunks of ``batch_episodes``: gather unit vectors from the table,
  frame cosines (one matmul per episode) and, for OTAM, the DP in both directions. Best of
  ``repeats`` runs.
- ``dp_only_s`` (OTAM): :func:`cachekit.metrics.otam_from_dists` alone on the precomputed
  ``[2, E, W, W, T, T]`` frame distances.

Each is the best of ``repeats`` runs, in wall seconds and in CPU seconds of this process (the
CPU time is less disturbed when other processes share the cores).
- ``end_to_end_s``: :func:`cachekit.evaluate.evaluate` from the store path: open the store, read
  the embeddings, draw the episodes, gather, score, statistics. Best of ``repeats`` runs; the
  stage times of that run are reported beside it.

Goals (issue 3): OTAM itself <= 1 s and end to end <= 3 s for 10,000 5-way 1-shot episodes on
2 cores. The machine may be shared; the load average is printed with the numbers.

Run: ``python benchmarks/eval.py [--episodes 10000] [--store PATH]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model, load_average  # noqa: E402


def write_store(path: str | os.PathLike, videos: int = 1000, classes: int = 64, frames: int = 8,
                dim: int = 512, seed: int = 0, test_split: bool = True) -> str:
    """A store of random embeddings laid out like cachekit.extract's output, all videos in 'test'
    (``test_split=False``: no split file, so that ``train`` makes a class-disjoint split)."""
    from cachekit.cachekey import PACKED_GROUPS
    from cachekit.extract import text_key
    from clipcache.stores import open_store

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((videos, 1, frames, dim), dtype=np.float32)  # [V, views, T, D']
    labels = [f"class {i % classes:03d}" for i in range(videos)]
    keys = [f"{i:064x}" for i in range(videos)]
    paths = [f"/bench/videos/v{i:05d}.mp4" for i in range(videos)]
    key = {"model": "bench-random", "frames": frames, "views": 1, "tokens_at": [],
           "sampler": {"frames": frames, "views": 1}, "dtype": {"emb": "float32"}}
    info = {"embed_dim": dim, "width": 768, "layers": 12, "heads": 12, "grid": [7, 7], "image_size": 224,
            "text_width": dim}
    templates = ["a video of a person {}."]
    with open_store(str(path), "a", attrs={"cache_key": key, "model_info": info}, packable=PACKED_GROUPS) as st:
        for i in range(videos):
            st.commit("videos", keys[i], {
                "emb": emb[i], "cls": np.zeros((1, frames, 8), np.float32),
                "frame_idx": np.arange(frames, dtype=np.int32)[None],
                "timestamps": np.arange(frames, dtype=np.float32)[None]},
                {"path": paths[i], "size": 1, "label": labels[i], "n_frames": frames, "fps": 25.0,
                 "duration": frames / 25, "backend": "bench", "status": "ok"})
        for name in sorted(set(labels)):
            st.commit("text", text_key(name, tuple(templates)),
                      {"emb": rng.standard_normal((1, dim), dtype=np.float32)},
                      {"name": name, "templates": templates})
        if test_split:
            st.put_json("splits", "test", {"videos": {paths[i]: [keys[i], labels[i]] for i in range(videos)},
                                           "missing": []})
        st.finalize()
    return str(path)


def _machine() -> str:
    cpu = cpu_model()
    load = load_average()
    return (f"{cpu}; {os.cpu_count()} cores visible, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads; load average {load:.2f}")


def _time_metric(store: str, metric: str, episodes: int, ways: int, batch_episodes: int, repeats: int,
                 seed: int) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """Best wall times of (a) ``Proto.episodes_logits`` over all episodes in chunks (gather from
    the table, frame cosines, metric) and (b) for OTAM, the DP alone
    (:func:`cachekit.metrics.otam_from_dists` on the precomputed distances of both directions)."""
    from cachekit import metrics
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeSampler, episode_arrays
    from cachekit.methods.proto import Config, Proto

    with FeatureCache(store) as cache:
        emb = torch.from_numpy(cache.emb())  # [V, T, D']
        sampler = EpisodeSampler(cache.labels, np.arange(len(cache)), ways, 1, 1, seed=seed)
        cls, sup, qry = (torch.from_numpy(a) for a in episode_arrays(sampler.sample(episodes)))
        method = Proto(Config(metric=metric), cache.model_info, cache.frames)
    chunks = [(cls[a:a + batch_episodes], sup[a:a + batch_episodes], qry[a:a + batch_episodes])
              for a in range(0, episodes, batch_episodes)]
    best, best_dp = (float("inf"), float("inf")), (float("inf"), float("inf"))
    with torch.no_grad():
        for _ in range(repeats):
            tic, cpu = time.perf_counter(), time.process_time()
            for c, s, q in chunks:
                method.episodes_logits(emb, None, c, s, q)
            best = _min2(best, (time.perf_counter() - tic, time.process_time() - cpu))
        if metric != "otam":
            return best, None
        unit = torch.nn.functional.normalize(emb, dim=-1)
        dists = []
        for _, s, q in chunks:
            cos = unit[q.flatten(1)].flatten(1, 2) @ unit[s[..., 0]].flatten(1, 2).transpose(1, 2)  # [e, W*T, W*T]
            d = 1 - cos.unflatten(2, (ways, -1)).unflatten(1, (ways, -1)).transpose(2, 3)  # [e, W, W, T, T]
            dists.append(torch.stack([d, d.transpose(-1, -2)]))  # [2, e, W, W, T, T]
        for _ in range(repeats):
            tic, cpu = time.perf_counter(), time.process_time()
            for d in dists:
                metrics.otam_from_dists(d, metrics.OTAM_LAMBDA)
            best_dp = _min2(best_dp, (time.perf_counter() - tic, time.process_time() - cpu))
    return best, best_dp


def _min2(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Element-wise minimum of (wall, cpu) seconds."""
    return min(a[0], b[0]), min(a[1], b[1])


def _time_end_to_end(store: str, metric: str, episodes: int, ways: int, batch_episodes: int, repeats: int,
                     seed: int) -> tuple[tuple[float, float], float]:
    """Best (wall, cpu) seconds of evaluate() from the store path, and the accuracy it gave."""
    from cachekit.evaluate import EvalConfig, evaluate

    best, acc = (float("inf"), float("inf")), float("nan")
    for _ in range(repeats):
        tic, cpu = time.perf_counter(), time.process_time()
        r = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric=metric, ways=ways, shots=1,
                                       queries=1, episodes=episodes, seed=seed, batch_episodes=batch_episodes))
        best = _min2(best, (time.perf_counter() - tic, time.process_time() - cpu))
        acc = r.accuracy
    return best, acc


def _time_sampling(store: str, episodes: int, ways: int, seed: int) -> tuple[float, float, float, float]:
    """(wall, cpu) seconds of ``EpisodeSampler.sample`` (all episodes as arrays), then of drawing
    the same episodes one by one (``episode(i)``, what ``sample`` did before), interleaved, best of 3."""
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeSampler

    with FeatureCache(store) as cache:
        labels, n = cache.labels, len(cache)
    sampler = EpisodeSampler(labels, np.arange(n), ways, 1, 1, seed=seed)
    best = [float("inf")] * 4
    for _ in range(3):
        for k, fn in ((0, lambda: sampler.sample(episodes)), (2, lambda: [sampler.episode(i) for i in range(episodes)])):
            tic, cpu = time.perf_counter(), time.process_time()
            fn()
            best[k] = min(best[k], time.perf_counter() - tic)
            best[k + 1] = min(best[k + 1], time.process_time() - cpu)
    return tuple(best)


def run(episodes: int = 10_000, videos: int = 1000, classes: int = 64, frames: int = 8, dim: int = 512,
        ways: int = 5, batch_episodes: int = 200, repeats: int = 3, seed: int = 0,
        store: str | None = None) -> dict:
    """Time both baselines; returns a dict of seconds and episodes/s per metric."""
    tmp = None
    out: dict = {"episodes": episodes, "videos": videos, "classes": classes, "frames": frames, "dim": dim,
                 "ways": ways, "batch_episodes": batch_episodes, "machine": _machine()}
    if store is None or not Path(store).exists():
        if store is None:
            tmp = tempfile.TemporaryDirectory(prefix="clipcache-bench-")
            store = str(Path(tmp.name) / "bench.h5")
        tic = time.perf_counter()
        write_store(store, videos, classes, frames, dim, seed)
        out["store_write_s"] = time.perf_counter() - tic
    out["store"] = store
    try:
        (out["sampling_s"], out["sampling_cpu_s"], out["sampling_one_by_one_s"],
         out["sampling_one_by_one_cpu_s"]) = _time_sampling(store, episodes, ways, seed)
        out["load_before"] = os.getloadavg()[0]
        for metric in ("mean", "otam"):
            (m_s, m_cpu), dp = _time_metric(store, metric, episodes, ways, batch_episodes, repeats, seed)
            (e_s, e_cpu), acc = _time_end_to_end(store, metric, episodes, ways, batch_episodes, repeats, seed)
            out[metric] = {"metric_s": m_s, "metric_cpu_s": m_cpu, "metric_episodes_per_s": episodes / m_s,
                           "end_to_end_s": e_s, "end_to_end_cpu_s": e_cpu,
                           "end_to_end_episodes_per_s": episodes / e_s, "accuracy": acc}
            if dp is not None:
                out[metric]["dp_only_s"], out[metric]["dp_only_cpu_s"] = dp
    finally:
        if tmp is not None:
            tmp.cleanup()
    out["load_after"] = os.getloadavg()[0]
    return out


GOAL_EPISODES = 10_000  # the goals are for this many episodes (and the default shape)


def _goal(goal: float, wall: float, cpu: float, episodes: int = GOAL_EPISODES) -> str:
    """The verdict against a goal for 10,000 episodes; none for another count (fixed costs do not
    scale with it, so no time of another count says whether the goal holds)."""
    if episodes != GOAL_EPISODES:
        return f" (the goal <= {goal:g} s is for {GOAL_EPISODES:,} episodes: no verdict at {episodes:,})"

    def verdict(x: float) -> str:
        return "met" if x <= goal else "MISSED"

    return f" (goal <= {goal:g} s: {verdict(wall)} in wall time, {verdict(cpu)} in cpu time)"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--batch-episodes", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    ap.add_argument("--store", default=None, help="Re-use (or create) the benchmark store here.")
    a = ap.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    res = run(a.episodes, a.videos, a.classes, a.frames, a.dim, a.ways, a.batch_episodes, a.repeats, store=a.store)
    print(f"machine: {res['machine']}")
    print(f"store: {res['videos']} videos, {res['classes']} classes, T={res['frames']}, D={res['dim']}"
          + (f" (written in {res['store_write_s']:.1f} s)" if "store_write_s" in res else ""))
    print(f"{res['episodes']:,} episodes {res['ways']}-way 1-shot, 1 query/class; drawing them: "
          f"{res['sampling_s']:.2f} s wall ({res['sampling_cpu_s']:.2f} s cpu)"
          f"{_goal(0.2, res['sampling_s'], res['sampling_cpu_s'], a.episodes)}; "
          f"one by one (as before): {res['sampling_one_by_one_s']:.2f} s wall ({res['sampling_one_by_one_cpu_s']:.2f} s cpu), "
          f"{res['sampling_one_by_one_cpu_s'] / res['sampling_cpu_s']:.1f}x the cpu")
    for metric, goal_m, goal_e in (("mean", None, None), ("otam", 1.0, 3.0)):
        r = res[metric]
        gm = "" if goal_m is None else _goal(goal_m, r["metric_s"], r["metric_cpu_s"], a.episodes)
        ge = "" if goal_e is None else _goal(goal_e, r["end_to_end_s"], r["end_to_end_cpu_s"], a.episodes)
        print(f"proto/{metric:<4}  scoring     {r['metric_s']:6.2f} s wall ({r['metric_cpu_s']:6.2f} s cpu) = "
              f"{r['metric_episodes_per_s']:8,.0f} episodes/s{gm}")
        if "dp_only_s" in r:
            print(f"proto/{metric:<4}  of which the OTAM DP (both directions): {r['dp_only_s']:.2f} s wall "
                  f"({r['dp_only_cpu_s']:.2f} s cpu)")
        print(f"proto/{metric:<4}  end to end  {r['end_to_end_s']:6.2f} s wall ({r['end_to_end_cpu_s']:6.2f} s cpu) = "
              f"{r['end_to_end_episodes_per_s']:8,.0f} episodes/s{ge}  [accuracy {r['accuracy']:.2f}%, chance 20%]")
    busy = max(res["load_before"], res["load_after"]) > (os.cpu_count() or 1)
    print(f"load average during the run: {res['load_before']:.2f} -> {res['load_after']:.2f} "
          + (f"(above {os.cpu_count()} cores: other processes shared them and the wall times)" if busy
             else f"(at most {os.cpu_count()} cores' worth)"))
    return res


if __name__ == "__main__":
    main()

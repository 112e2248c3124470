"""A store of a million videos: opening it, reading a column, evaluating from it, writing it.

One run, each step in a fresh process (so each reports its own time and peak memory):

1. **write**: a writer commits N extraction-shaped videos (T = 8, D' = 256: ``emb [1, 8, 256]``
   float16, ``frame_idx``, ``timestamps``, and each video's record: path, label among 1,000
   classes, size, fps, ...) in batches of 32, the default commit size, as ``extract``'s writer
   does. Its resident memory is sampled every tenth of the run: a writer's memory must not grow
   with the store (goal: flat).
2. **open**: ``open_store`` + ``keys()`` (the content-key index: what every reader loads first),
   and ``FeatureCache`` (keys and labels). Goal: ≤ 2 s from local disk.
3. **open over S3**: the same store's metadata on moto's S3 server on 127.0.0.1 (through s3fs,
   over HTTP): the root ``zarr.json`` and the index parts (the chunk objects are not uploaded,
   and neither are the single commit records: a sealed segment's parts cover them; opening reads
   neither). Goal: ≤ 10 s.
4. **column**: ``read_column`` of ``emb`` for every video against a plain ``np.fromfile`` of a
   file holding the same bytes (both from the page cache, best of 2). Goal: ≥ 0.5.
5. **evaluate**: 10,000 5-way 1-shot episodes (OTAM, the proto baseline) from the whole store;
   peak resident memory against the bytes of the ``emb`` column. Goal: < 2x.
6. **train**: ``clipcache train --method clip_fsar`` for 20 episodes with 100 validation episodes
   (the store has no split files: a class-disjoint split of its 1,000 classes, 800,000 videos
   read), launch to exit and peak resident memory against the ``emb`` column. Goal: < 2x (the
   column is held once, as cached; each batch is made float32 when gathered).
7. **verify**: ``clipcache verify`` re-hashes every array of every video (and class text)
   against the index's sha256, column by column; launch to exit and peak resident memory.
   Entry by entry it took 3.2 ms a video (about 53 minutes at a million).

Before the compacted index, opening read one commit record per batch: 2.1 s at 100,000 videos
(the README's table), about 31,000 files at a million.

Run: ``python benchmarks/million.py [--videos 1000000] [--keep DIR] [--no-s3]``; ``--videos
100000`` for a quicker look. Takes about 10-25 minutes (22 at load 8 on 2 cores, most of it
writing) and 6 GB of disk at a million; ``--keep DIR`` keeps the store and reuses it on the next
run (then the write step is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model, load_average  # noqa: E402

T, D, CLASSES, BATCH = 8, 256, 1000, 32

_WRITE = r"""
import json, sys, time
import numpy as np
from clipcache.stores import open_store

path, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T, D, C = 8, 256, 1000
key = {"model": "bench-random", "frames": T, "views": 1, "tokens_at": [], "pixels": False,
       "sampler": {"frames": T, "views": 1}, "dtype": {"emb": "float16"}}
info = {"embed_dim": D, "width": 768, "layers": 12, "heads": 12, "grid": [7, 7], "image_size": 224, "text_width": D}

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

rng = np.random.default_rng(0)
frame_idx = np.arange(T, dtype=np.int32)[None]
stamps = (np.arange(T, dtype=np.float32) / 25)[None]
samples, t0 = [], time.perf_counter()
every = max(batch, (n // 10) // batch * batch)
with open_store(path, "a", attrs={"cache_key": key, "model_info": info}, writer="million") as st:
    for a in range(0, n, batch):
        emb = rng.standard_normal((min(batch, n - a), 1, T, D)).astype(np.float16)  # [B, 1, T, D']
        st.commit_many("videos", [
            (f"{a + i:064x}", {"emb": emb[i], "frame_idx": frame_idx, "timestamps": stamps},
             {"path": f"/data/videos/class_{(a + i) % C:04d}/video_{a + i:07d}.mp4", "size": 1000 + a + i,
              "label": f"class {(a + i) % C:04d}", "n_frames": 250, "fps": 25.0, "duration": 10.0,
              "backend": "bench", "status": "ok"}) for i in range(len(emb))])
        done = a + len(emb)
        if done % every == 0 or done == n:
            samples.append([done, round(rss_mb(), 1), round(time.perf_counter() - t0, 1)])
            print(json.dumps({"progress": samples[-1]}), file=sys.stderr, flush=True)
    from cachekit.cachekey import text_key  # class text, as extract writes it: what train reads
    from cachekit.templates import SINGLE
    for c in range(C):
        st.commit("text", text_key(f"class {c:04d}", SINGLE), {"emb": rng.standard_normal((1, D)).astype(np.float32)},
                  {"name": f"class {c:04d}", "templates": list(SINGLE)})
print(json.dumps({"seconds": time.perf_counter() - t0, "rss": samples}))
"""

_CLI = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
r = subprocess.run([sys.executable, "-m", "clipcache.cli.main", *sys.argv[1:]], capture_output=True, text=True)
if r.returncode:
    raise SystemExit(r.stderr[-2000:] or r.stdout[-2000:])
print(json.dumps({"seconds": time.perf_counter() - t0, "summary": r.stdout.strip().splitlines()[-1],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_OPEN = r"""
import json, sys, time
t0 = time.perf_counter()
from clipcache.stores import open_store
import clipcache.stores.log as slog
reads = {"parts": 0, "records": 0}
pr, rd = slog.PartReader.__init__, slog.CommitLog.record_doc
def count_part(self, *a, **k):
    reads["parts"] += 1
    return pr(self, *a, **k)
def count_rec(self, *a, **k):
    doc = rd(self, *a, **k)
    reads["records"] += doc is not None
    return doc
slog.PartReader.__init__, slog.CommitLog.record_doc = count_part, count_rec
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
s = open_store(sys.argv[1])
keys = s.keys("videos")
t_index = time.perf_counter() - t0
s.close()
out = {"videos": len(keys), "index_s": t_index, "import_s": t_import, **reads}
if len(sys.argv) > 2:
    from cachekit.cache import FeatureCache
    t0 = time.perf_counter()
    with FeatureCache(sys.argv[1]) as c:
        n = len(c.video_keys); labels = c.labels; classes = len(c.classes)
    out["cache_s"] = time.perf_counter() - t0
    out["classes"] = classes
print(json.dumps(out))
"""

_COLUMN = r"""
import json, sys, time
import numpy as np
from clipcache.stores import open_store
s = open_store(sys.argv[1]); keys = s.keys("videos")
col = s.read_column("videos", "emb", keys)
col.tofile(sys.argv[2]); nbytes = col.nbytes; del col
def best(fn, n=2):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); x = fn(); ts.append(time.perf_counter() - t0); del x
    return min(ts)
t_store = best(lambda: s.read_column("videos", "emb", keys))
t_plain = best(lambda: np.fromfile(sys.argv[2], dtype=np.float16))
print(json.dumps({"mb": nbytes / 1e6, "store_s": t_store, "plain_s": t_plain}))
"""

_EVAL = r"""
import json, sys, time
from cachekit.evaluate import EvalConfig, evaluate
t0 = time.perf_counter()
res = evaluate(sys.argv[1], EvalConfig(protocol="episodic", method="proto", metric="otam", ways=5, shots=(1,),
                                       queries=1, episodes=int(sys.argv[2]), seed=0))
dt = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"seconds": dt, "accuracy": res[0].accuracy, "episodes": res[0].episodes,
                  "peak_rss_mb": int(hwm) / 1024}))
"""


def _child(code: str, *args: str, env: dict | None = None, timeout: float = 7200) -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    r = subprocess.run([sys.executable, "-c", code, *args], env=e, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"step failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _s3_open(store: Path, timeout: float) -> dict:
    """Upload the store's metadata to a local moto S3 server and open it from there."""
    import s3fs

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import local_s3

    tmp = Path(tempfile.mkdtemp(prefix="clipcache-aws-"))
    try:
        with local_s3(tmp):
            fs = s3fs.S3FileSystem()
            fs.mkdir("bench")
            files = [store / "zarr.json", *sorted((store / "meta" / "index").rglob("*.part"))]
            t0 = time.perf_counter()
            fs.put([str(p) for p in files], [f"bench/m.zarr/{p.relative_to(store)}" for p in files])
            uploaded = {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 1e6,
                        "upload_s": time.perf_counter() - t0}
            return {**_child(_OPEN, "s3://bench/m.zarr", timeout=timeout), **uploaded}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _has_text(store: Path) -> bool:
    from clipcache.stores import open_store

    with open_store(str(store)) as s:
        return bool(s.keys("text"))


def run(videos: int, keep: str | None, s3: bool, episodes: int, train: bool = True) -> dict:
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="clipcache-million-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"m{videos}.zarr"
    r: dict = {"videos": videos, "cpu": cpu_model(), "load_start": load_average()}
    try:
        if not (store / "zarr.json").exists():
            r["write"] = _child(_WRITE, str(store), str(videos), str(BATCH))
        files = sum(len(f) for _, _, f in os.walk(store / "meta"))
        r["meta_files"] = files
        r["open"] = _child(_OPEN, str(store), "cache")
        if s3:
            r["s3"] = _s3_open(store, 3600)
        raw = work / "column.bin"
        r["column"] = _child(_COLUMN, str(store), str(raw))
        raw.unlink(missing_ok=True)
        r["eval"] = _child(_EVAL, str(store), str(episodes))
        if train:
            if not _has_text(store):
                raise SystemExit(f"{store} has no class text (written before the train step existed): "
                                 "remove it or use another --keep folder")
            shutil.rmtree(work / "run", ignore_errors=True)
            r["train"] = _child(_CLI, "train", "--method", "clip_fsar", "--store", str(store), "--out", str(work / "run"),
                                "--episodes", "20", "--val-episodes", "100", "--threads", "2")
            shutil.rmtree(work / "run", ignore_errors=True)
        r["verify"] = _child(_CLI, "verify", str(store))
        r["load_end"] = load_average()
        return r
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    n, rows = r["videos"], []
    emb_mb = n * T * D * 2 / 1e6
    if "write" in r:
        w = r["write"]
        first, last = w["rss"][0], w["rss"][-1]
        rows.append((f"write {n:,} videos in batches of {BATCH} (one writer)",
                     f"{1e3 * w['seconds'] / n:.2f} ms/video; RSS {first[1]:.0f} MB at {first[0]:,} videos, "
                     f"{last[1]:.0f} MB at {last[0]:,}", "flat"))
    o = r["open"]
    rows.append(("open + load the index (local)", f"{o['index_s']:.2f} s ({o['parts']} index parts, "
                 f"{o['records']} single records read; {r['meta_files']:,} files under meta/)", "≤ 2 s"))
    rows.append(("FeatureCache (keys, labels)", f"{o['cache_s']:.2f} s, {o['classes']} classes", ""))
    if "s3" in r:
        s = r["s3"]
        rows.append(("open + load the index over local S3 (moto, HTTP)", f"{s['index_s']:.2f} s ({s['parts']} parts, "
                     f"{s['mb']:.0f} MB of index)", "≤ 10 s"))
    c = r["column"]
    rows.append((f"read_column emb ({c['mb']:.0f} MB) / plain read of the same bytes",
                 f"{c['plain_s'] / c['store_s']:.2f} ({c['store_s']:.2f} s vs {c['plain_s']:.2f} s)", "≥ 0.5"))
    e = r["eval"]
    rows.append((f"evaluate {e['episodes']:,} episodes (5-way 1-shot, OTAM): peak RSS / emb column",
                 f"{e['peak_rss_mb'] / emb_mb:.2f} ({e['peak_rss_mb']:.0f} MB vs {emb_mb:.0f} MB; {e['seconds']:.1f} s)",
                 "< 2"))
    if "train" in r:
        t = r["train"]
        rows.append((f"train clip_fsar, 20 episodes + 100 validation episodes ({int(0.8 * n):,} videos read): "
                     "peak RSS / emb column",
                     f"{t['peak_rss_mb'] / emb_mb:.2f} ({t['peak_rss_mb']:.0f} MB vs {emb_mb:.0f} MB; launch to exit "
                     f"{t['seconds']:.1f} s)", "< 2"))
    if "verify" in r:
        v = r["verify"]
        rows.append(("clipcache verify (every array re-hashed), launch to exit",
                     f"{v['seconds']:.1f} s, {1e3 * v['seconds'] / n:.3f} ms/video, peak RSS {v['peak_rss_mb']:.0f} MB "
                     f"({v['summary']})", ""))
    head = (f"{n:,} videos, T = {T}, D' = {D}, float16 emb; {r['cpu']}; load average {r['load_start']:.1f} "
            f"at the start, {r.get('load_end', float('nan')):.1f} at the end")
    return "\n".join([head, "", "| what | measured | goal |", "| --- | --- | --- |",
                      *(f"| {a} | {b} | {c} |" for a, b, c in rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1_000_000)
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--keep", default=None, help="work folder to keep (the store is reused when it exists)")
    ap.add_argument("--no-s3", action="store_true", help="skip the S3 step (moto and s3fs not installed)")
    ap.add_argument("--no-train", action="store_true", help="skip the train step")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    a = ap.parse_args()
    r = run(a.videos, a.keep, not a.no_s3, a.episodes, not a.no_train)
    if a.json:
        print(json.dumps(r))
    print(table(r))


if __name__ == "__main__":
    main()

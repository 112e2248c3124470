"""Soak test of extraction under kill -9 (a script, not a test; see reliability.md T1).

Writes N generated clips with 10% faulty files, extracts them once uninterrupted (the
reference), then extracts them again into a second store, killing the extractor with SIGKILL at
random points K times and resuming, and finally checks that every good clip is cached exactly
once with the reference's features and every bad clip is reported. Prints one summary line:

    soak: videos=500 broken=50 kills=5 committed=450/450 failed_reported=50/50 lost=0 duplicated=0 mismatched=0 orphans_after_gc=0
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")


def make_clips(out: Path, n: int, broken_frac: float, seed: int) -> tuple[list[Path], list[Path]]:
    """n clips: (1 - broken_frac) good synthetic clips, the rest broken in several ways."""
    from cachekit.synth import CLASSES, SynthConfig, render_clip, write_mp4

    rng = random.Random(seed)
    names = list(CLASSES)
    n_bad = int(round(n * broken_frac))
    good, bad = [], []
    cfg = SynthConfig(frames=12, size=64, seed=seed)
    for i in range(n - n_bad):
        cls = names[i % len(names)]
        p = out / f"good_{i:04d}.mp4"
        write_mp4(p, render_clip(cls, i // len(names), cfg), fps=12)
        good.append(p)
    kinds = ["empty", "truncated", "text", "short"]
    for i in range(n_bad):
        kind = kinds[i % len(kinds)]
        p = out / f"bad_{kind}_{i:03d}.mp4"
        if kind == "empty":
            p.write_bytes(b"")
        elif kind == "truncated":
            src = good[rng.randrange(len(good))].read_bytes()
            p.write_bytes(src[: max(64, len(src) // 5)] + os.urandom(16) + str(i).encode())
        elif kind == "text":
            p.write_text(f"this is not a video {i}\n")
        else:
            write_mp4(p, render_clip(names[i % len(names)], 1000 + i, SynthConfig(frames=2, size=64, seed=seed)),
                      fps=12)
        bad.append(p)
    return good, bad


def extract_cmd(listing: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "clipcache.cli.main", "extract", str(listing), "--store", str(store), "--model", TINY,
            "--pretrained", "random", "--frames", "4", "--tokens-at", "1", "--batch-size", "16",
            "--commit-every", "4", "--no-progress"]


def batch_records(store: Path) -> list[dict]:
    """The batch commit records of a store's videos (each lists the entries it made visible)."""
    from clipcache.stores.base import Files
    from clipcache.stores.log import CommitLog

    return [doc for _name, doc in CommitLog(Files(store), "videos").all_docs()]


def n_commits(store: Path) -> int:
    return sum(len(r.get("entries", {})) for r in batch_records(store))


def run(n: int = 500, kills: int = 5, seed: int = 0, keep: str | None = None) -> dict:
    rng = random.Random(seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="clipcache-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    clips = work / "clips"
    clips.mkdir(exist_ok=True)
    good, bad = make_clips(clips, n, 0.1, seed)
    listing = work / "videos.txt"
    listing.write_text("\n".join(str(p) for p in sorted(good + bad, key=lambda p: rng.random())) + "\n")

    ref, soak = work / "reference.zarr", work / "soak.zarr"
    t0 = time.time()
    r = subprocess.run(extract_cmd(listing, ref), env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"reference run failed: {r.stderr[-2000:]}")
    t_ref = time.time() - t0

    done_kills = 0
    while done_kills < kills:
        before = n_commits(soak)
        remaining = len(good) - before
        if remaining < 10:
            break
        target = before + rng.randint(1, max(1, remaining // 3))
        proc = subprocess.Popen(extract_cmd(listing, soak), env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and n_commits(soak) < target:
            time.sleep(0.01)
        if proc.poll() is None:
            time.sleep(rng.random() * 0.3)  # land anywhere, also between commits
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done_kills += 1
    final = subprocess.run(extract_cmd(listing, soak), env=env, cwd=ROOT, capture_output=True, text=True)
    if final.returncode not in (0, 1):
        raise SystemExit(f"resume failed: {final.stderr[-2000:]}")

    from clipcache.stores import open_store

    with open_store(ref) as a, open_store(soak, "a") as b:
        ra, rb = a.records("videos"), b.records("videos")
        by_path_b: dict[str, int] = {}
        for doc in batch_records(soak):  # every committed copy, not only the index's first one
            for rec in doc.get("entries", {}).values():
                if not rec.get("extends"):
                    by_path_b[rec["path"]] = by_path_b.get(rec["path"], 0) + 1
        good_paths = {str(p.resolve()) for p in good}
        committed = sum(1 for p in good_paths if by_path_b.get(p, 0) >= 1)
        duplicated = sum(1 for p in good_paths if by_path_b.get(p, 0) > 1)
        lost = len(set(ra) - set(rb))
        mismatched = sum(1 for k in set(ra) & set(rb) if ra[k]["arrays"] != rb[k]["arrays"])
        failed_docs = {d["path"] for d in b.json_items("failed").values()}
        failed_reported = sum(1 for p in bad if str(p.resolve()) in failed_docs)
        checked, bad_entries = b.verify("videos")
        mismatched += len(bad_entries)
        b.gc()
        used = {loc[0].split("/", 1)[0] for rec in rb.values() for loc in rec["loc"].values()}
        segs = soak / "seg" / "videos"
        orphans = sum(1 for d in segs.iterdir() if d.is_dir() and d.name not in used) + \
            sum(1 for _ in soak.rglob("*.partial"))
    res = {"videos": n, "broken": len(bad), "kills": done_kills, "committed": committed, "good": len(good),
           "failed_reported": failed_reported, "lost": lost, "duplicated": duplicated,
           "mismatched": mismatched, "orphans_after_gc": orphans, "reference_seconds": round(t_ref, 1),
           "work_dir": str(work)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=500)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="work directory to keep (default: a temp dir)")
    a = ap.parse_args()
    r = run(a.videos, a.kills, a.seed, a.keep)
    print(f"soak: videos={r['videos']} broken={r['broken']} kills={r['kills']} "
          f"committed={r['committed']}/{r['good']} failed_reported={r['failed_reported']}/{r['broken']} "
          f"lost={r['lost']} duplicated={r['duplicated']} mismatched={r['mismatched']} "
          f"orphans_after_gc={r['orphans_after_gc']}")
    ok = (r["committed"] == r["good"] and r["failed_reported"] == r["broken"] and r["lost"] == 0
          and r["duplicated"] == 0 and r["mismatched"] == 0 and r["orphans_after_gc"] == 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Seconds per training step and peak memory of the methods that run inside the frozen encoder.

Compares, on one machine in one run, a training step of EZ-CLIP and MA-FSAR FgMA with the full
backbone (decoded frames, blocks 0..L-1) against ``--from-block 6`` and ``9`` (cached tokens
entering that block, only the remaining blocks run forward and backward), and EV-CLIP with mask
prompts (always the full backbone: the mask acts on pixels) and context prompts (cache only).
Goal: from block 6 at most 0.45 of the full step, from block 9 at most 0.25, peak memory falling.
"fetch share" is the part of a step spent fetching its batch (cached uint8 pixels, or cached
tokens read); the store caches the frames as pixels (``extract --pixels``), so no step decodes
video. Goal: fetch <= 10% of the step.

Setting: ViT-B-32 with random weights (``open_clip.create_model(..., pretrained=None)``; speed
and memory do not depend on the weight values), T = 8 frames, B = 2 videos per step (all-way
methods; MA-FSAR: a 2-way 1-shot 1-query episode = 4 videos), synthetic H.264 clips extracted
into a real Zarr store with tokens at blocks 6 and 9. A step = fetch the batch from the store
(``CacheData``: cached tokens, or the cached uint8 pixels) + forward + loss
+ backward + AdamW step; "compute" excludes the fetch. One warm-up step, then ``--steps`` timed
steps (the fastest: the machine may be shared); "CPU s" is the process CPU time of a step (all
threads), less sensitive to other load than the wall time. ``--quick`` uses the 4-block test model (``tests/assets/tiny-clip.json``), with
blocks 2 and 3 in place of 6 and 9, one CPU thread and 5 timed steps.

Peak memory ("peak", measured on one extra untimed step, so weights, optimizer state and lazily
initialised kernels are excluded): on CUDA ``torch.cuda.max_memory_allocated`` during that step
minus the memory allocated before it; on CPU each case runs in a fresh (spawned) interpreter
which then fixes glibc's mmap threshold (``mallopt``; freed tensors leave the resident set at
once), resets the kernel's peak resident set (``/proc/self/clear_refs``) and reports the peak
(``VmHWM``) minus the resident set before the step. "saved" is the
size of the tensors autograd keeps for the backward pass (deduplicated by storage), a
machine-independent measure of the activation memory.

Run: ``python benchmarks/backbone.py [--quick] [--steps N] [--videos 2] [--threads N] [--device auto]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from _machine import cpu_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "assets" / "tiny-clip.json"


@dataclass(frozen=True)
class Case:
    label: str
    group: str  # rows of one group are compared with its full-backbone row
    method: str
    overrides: dict = field(default_factory=dict)
    episodic: bool = False


def cases(mid: int, late: int) -> list[Case]:
    out = []
    for start in (0, mid, late):
        out.append(Case(f"ez_clip from block {start}" if start else "ez_clip full backbone", "ez_clip",
                        "ez_clip", {"from_block": start}))
    for start in (0, mid, late):
        out.append(Case(f"ma_fsar all from block {start}" if start else "ma_fsar all full backbone", "ma_fsar all",
                        "ma_fsar", {"modules": "all", "from_block": start}, episodic=True))
    out.append(Case("ev_clip mask full backbone", "ev_clip mask", "ev_clip", {"prompts": "mask", "z_block": mid}))
    out.append(Case("ev_clip context (cache only)", "ev_clip context", "ev_clip",
                    {"prompts": "context", "z_block": mid}))
    return out


# --------------------------------------------------------------------------- setup
def load_encoder(quick: bool, device: str):
    import open_clip
    import torch

    from cachekit.encoder import EncoderConfig, FrozenCLIP, load_clip, pick_device

    dev = pick_device(device)
    if quick:
        return load_clip(EncoderConfig(model=str(TINY), pretrained="random", device=dev))
    torch.manual_seed(0)
    name = "ViT-B-32"
    model = open_clip.create_model(name, pretrained=None).to(dev)
    return FrozenCLIP(model, open_clip.get_tokenizer(name), name, None, "random:0", "", False, dev)


def make_store(enc, root: Path, frames: int, tokens_at: tuple[int, ...], videos_per_class: int = 2,
               size: int = 256, clip_frames: int = 64) -> Path:
    """Synthetic clips of two classes, extracted with tokens at ``tokens_at``."""
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import SynthConfig, render_clip, write_mp4
    from cachekit.video import SamplerConfig

    classes = ("moving something from left to right", "something falling")
    cfg = SynthConfig(classes=classes, size=size, frames=clip_frames)
    for c, name in enumerate(classes):
        d = root / "videos" / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(videos_per_class):
            write_mp4(d / f"{i}.mp4", render_clip(name, i, cfg), fps=cfg.fps)
    store = root / "store.zarr"
    xcfg = ExtractConfig(sampler=SamplerConfig(frames=frames), tokens_at=tokens_at, workers=0, batch_size=16,
                         pixels=True)  # full-backbone steps read cached frames, never decode
    extract(collect_inputs([str(root / "videos")]), str(store), xcfg, progress=False, enc=enc)
    return store


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _return_freed_memory() -> None:
    """glibc: serve every block >= 64 KiB by mmap from now on (freed tensors leave the resident
    set at once) and give free heap memory back, so the resident set follows live memory."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set (VmHWM) to the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


# --------------------------------------------------------------------------- one case
def run_case(case: Case, enc, store: Path, videos: int, steps: int, frames: int) -> dict:
    import numpy as np
    import torch

    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeSpec
    from cachekit.methods import build_method

    torch.manual_seed(0)
    cuda = enc.device.type == "cuda"
    cache = FeatureCache(store)
    method = build_method(case.method, case.overrides, cache.model_info, frames,
                          enc if build_needs_backbone(case) else None).to(enc.device)
    method.bind_classes(cache.classes)
    data = CacheData(cache, method.needs, device=enc.device, encoder=enc)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-5, weight_decay=0.2)
    by_class = [np.flatnonzero(cache.labels == c) for c in range(len(cache.classes))]

    def fetch():
        if case.episodic:  # 2-way 1-shot 1-query
            spec = EpisodeSpec(class_ids=(0, 1), support=((int(by_class[0][0]),), (int(by_class[1][0]),)),
                               query=((int(by_class[0][1]),), (int(by_class[1][1]),)))
            return data.episode(spec)
        return data.batch(np.arange(videos) % len(cache))

    def step(item):
        opt.zero_grad(set_to_none=True)
        loss = (method.episode_loss(item) if case.episodic else method.video_loss(item, data.text))[0]
        loss.backward()
        opt.step()
        return float(loss.detach())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    method.train()
    item = fetch()
    saved = saved_bytes(lambda: step(item))  # warm-up: lazy initialisation, optimizer state
    t_fetch, t_step, t_cpu = [], [], []
    for _ in range(steps):
        sync()
        tic, cpu = time.perf_counter(), time.process_time()
        item = fetch()
        sync()
        mid = time.perf_counter()
        step(item)
        sync()
        t_fetch.append(mid - tic)
        t_step.append(time.perf_counter() - mid)
        t_cpu.append(time.process_time() - cpu)
    # one more step for the peak memory (not timed: the CPU measure changes how memory is allocated)
    item = fetch()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _return_freed_memory()
        _reset_peak_rss()
        base = _rss_bytes()
    step(item)
    sync()
    peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
    cache.close()
    return {"case": case.label, "group": case.group, "method": case.method, "from_block": case.overrides.get("from_block", 0),
            "trainable": method.num_trainable(), "needs": method.needs.to_dict(),
            "fetch_s": min(t_fetch), "compute_s": min(t_step), "cpu_s": min(t_cpu),
            "peak_bytes": max(0, peak), "saved_bytes": saved}


def build_needs_backbone(case: Case) -> bool:
    return not (case.method == "ev_clip" and case.overrides.get("prompts") == "context")


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves for the backward during ``fn()``."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _child(case, quick, device, store, videos, steps, frames, threads, queue):
    try:
        import torch

        torch.set_num_threads(threads)
        enc = load_encoder(quick, device)
        queue.put(run_case(case, enc, store, videos, steps, frames))
    except Exception as err:  # noqa: BLE001 - reported in the table, the other cases go on
        queue.put({"case": case.label, "error": f"{type(err).__name__}: {err}"})


# --------------------------------------------------------------------------- driver
def machine(enc) -> str:
    import torch

    cpu = cpu_model()
    dev = (torch.cuda.get_device_name(enc.device) if enc.device.type == "cuda"
           else f"CPU, torch threads: {torch.get_num_threads()}")
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores; device {dev}; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def run(quick: bool = False, steps: int = 2, videos: int = 2, frames: int = 8, device: str = "auto",
        only: str | None = None, threads: int | None = None) -> tuple[list[dict], str]:
    """Run every case; returns (rows, machine description)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    enc = load_encoder(quick, device)
    layers = enc.info.layers
    mid, late = (layers // 2, 3 * layers // 4)
    todo = [c for c in cases(mid, late) if only is None or only in c.label]
    rows = []
    with tempfile.TemporaryDirectory(prefix="clipcache-bench-") as tmp:
        store = make_store(enc, Path(tmp), frames, (mid, late))
        for case in todo:
            if enc.device.type == "cuda":
                rows.append(run_case(case, enc, store, videos, steps, frames))
            else:  # a fresh interpreter per case: its own peak resident set (fork would inherit
                # zarr's I/O thread and OpenMP state, and hang)
                ctx = mp.get_context("spawn")
                queue = ctx.Queue()
                proc = ctx.Process(target=_child, args=(case, quick, device, store, videos, steps, frames,
                                                        torch.get_num_threads(), queue))
                proc.start()
                rows.append(queue.get())
                proc.join()
            print(f"  {case.label}: done", file=sys.stderr, flush=True)
    return rows, machine(enc) + f"; model {enc.name}, {layers} blocks, T = {frames}"


def table(rows: list[dict]) -> str:
    full = {r["group"]: r for r in rows if "error" not in r and r["from_block"] == 0}
    partial = {r["group"] for r in rows if "error" not in r and r["from_block"] > 0}
    lines = ["| case | trainable | fetch s | compute s | step s | fetch share | step CPU s | step / full | CPU / full "
             "| peak MiB | saved MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} | | | | | | | | | |")
            continue
        ref = full.get(r["group"])
        step = r["fetch_s"] + r["compute_s"]
        ratio = cratio = "–"
        if ref is not None and r["group"] in partial:
            ratio = f"{step / (ref['fetch_s'] + ref['compute_s']):.2f}"
            cratio = f"{r['cpu_s'] / ref['cpu_s']:.2f}"
        lines.append(f"| {r['case']} | {r['trainable']:,} | {r['fetch_s']:.3f} | {r['compute_s']:.3f} | {step:.3f} "
                     f"| {r['fetch_s'] / step:.0%} | {r['cpu_s']:.3f} | {ratio} | {cratio} | {r['peak_bytes'] / 2**20:.0f} "
                     f"| {r['saved_bytes'] / 2**20:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 4-block test model instead of ViT-B-32")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per case, after one warm-up (default 2; 5 with --quick)")
    ap.add_argument("--videos", type=int, default=2, help="videos per all-way batch")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default=None, help="run the cases whose label contains this text")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 with --quick, whose millisecond steps "
                         "otherwise measure thread synchronisation on a shared machine)")
    args = ap.parse_args(argv)
    steps = args.steps or (5 if args.quick else 2)
    threads = args.threads or (1 if args.quick else None)
    rows, where = run(args.quick, steps, args.videos, args.frames, args.device, args.only, threads)
    print(f"Machine: {where}\n")
    print(table(rows))
    print("\nstep = fetch from the store (cached tokens, or frames cached as uint8 pixels) + compute "
          "(forward, loss, backward, AdamW); fetch share = fetch / step (goal <= 10%); ratios against the same method's full-backbone row; "
          "goal: from block 6 <= 0.45, from block 9 <= 0.25 (ViT-B-32).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

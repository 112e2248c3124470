"""Rows of the from-cache training benchmark, as functions a driver script can call.

Every function takes ``device`` ("auto", "cpu", "cuda", ...; CUDA paths are chosen at run time)
and ``tiny`` (the 4-block test model's sizes, for a quick check) and returns a list of dicts,
one per row; :func:`markdown` prints them. ``ROWS`` lists them in the order ``benchmarks/train.py``
prints them; a GPU script imports ``ROWS`` (or single functions) and calls each with its device.

- :func:`method_rows`: per from-cache episodic method (MA-FSAR TPCM, CLIP-FSAR), 5-way 1-shot,
  1 query per class, T = 8: the training step from resident features (what ``clipcache train``
  runs: episode indices drawn, features gathered on the device, forward, backward, AdamW) against
  - its FLOP floor: forward+backward FLOPs (``torch.utils.flop_counter``) divided by the GEMM rate
    measured here at the same thread count (the faster of the step's FFN product and a 1024³
    product), so ``step / floor`` is how far the step sits above pure matrix arithmetic. On the
    CPU also in process CPU seconds (step's CPU time / (FLOPs / GEMM FLOPs per CPU second)), at 1
    and 8 episodes per step: on a shared machine wall time mostly measures the other jobs;
  - the encoder-in-the-loop step: the same step after a frozen ViT forward over the episode's
    frames (random, already preprocessed pixels: no decoding, which favours the reference);
  - the per-episode cost at 1, 8 and 32 episodes per step, and the encoder-in-the-loop ratio
    per episode at 32.
- :func:`probe_rows`: the all-way linear probe's step on the same videos (ratio only).
- :func:`backbone_rows`: the fetch share of the backbone methods' steps (``benchmarks/backbone.py``).

Timings: median of ``steps`` timed steps after warm-up; wall time (CUDA synchronised). Sizes:
ViT-B-32 (D' = 512, 3.15M-parameter heads) with random weights, or the test model with ``tiny``.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TINY = ROOT / "tests" / "assets" / "tiny-clip.json"
PER_STEP = (1, 8, 32)


@dataclass
class SyntheticData:
    """What :class:`cachekit.resident.ResidentFeatures` reads from ``CacheData``, random, in memory:
    ``classes`` x ``per_class`` videos of T frames, one view, P templates per class."""

    needs: object
    device: object
    labels: object = None
    emb: object = None
    cls: object = None
    text: object = None
    views: int = 1
    cache: object = None
    rows: object = None  # [V] cache index -> row of emb (every video: arange)
    extra: dict = field(default_factory=dict)

    @classmethod
    def make(cls, needs, device, classes: int, per_class: int, frames: int, dim: int, templates: int = 16):
        import torch

        g = torch.Generator().manual_seed(0)
        n = classes * per_class
        return cls(needs=needs, device=device, labels=torch.arange(classes).repeat_interleave(per_class),
                   emb=torch.randn(n, 1, frames, dim, generator=g), rows=torch.arange(n),
                   text=torch.randn(classes, templates, dim, generator=g).to(device))


def _device(device: str):
    import torch

    from cachekit.encoder import pick_device

    return torch.device(pick_device(device))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_times(fn, device, steps: int, warmup: int = 2) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def _median_time(fn, device, steps: int, warmup: int = 2) -> float:
    return _median_times(fn, device, steps, warmup)[0]


def gemm_rate(device, shapes: list[tuple[int, int, int]], reps: int = 20) -> tuple[float, float]:
    """FLOP/s of the fastest of the ``(m, k, n)`` float32 products, timed on ``device`` now:
    (per wall second, per process CPU second: all threads' time, less sensitive to other load)."""
    import torch

    best = best_cpu = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        wall, cpu = _median_times(lambda: a @ b, device, reps, warmup=3)
        best = max(best, 2.0 * m * k * n / wall)
        best_cpu = max(best_cpu, 2.0 * m * k * n / max(cpu, 1e-9))
    return best, best_cpu


def _info(tiny: bool):
    from cachekit.train import model_info_for

    return model_info_for(str(TINY) if tiny else "ViT-B-32")


def _encoder(tiny: bool, device):
    from cachekit.encoder import EncoderConfig, load_clip

    logging.disable(logging.WARNING)  # "random weights" is the point here
    try:
        return load_clip(EncoderConfig(model=str(TINY) if tiny else "ViT-B-32", pretrained="random",
                                       device=str(device)))
    finally:
        logging.disable(logging.NOTSET)


class _Trainer:
    """One method trained the way ``clipcache train`` does: resident features, batched episodes."""

    def __init__(self, name: str, info, device, frames: int, ways: int, shots: int, queries: int,
                 overrides: dict | None = None):
        import torch

        from cachekit.methods import build_method
        from cachekit.resident import ResidentFeatures
        from cachekit.train import make_optimizer

        torch.manual_seed(0)
        self.device = device
        self.method = build_method(name, overrides or {}, info, frames).to(device).train()
        self.data = SyntheticData.make(self.method.needs, device, classes=64, per_class=10, frames=frames,
                                       dim=info.embed_dim)
        self.feats = ResidentFeatures.load(self.data, list(range(640)), device)
        self.opt = make_optimizer(self.method.trainable_parameters(), 1e-4, 0.01)
        self.frames, self.ways, self.shots, self.queries = frames, ways, shots, queries
        self._batchers = {}
        self.opt_times: list[tuple[float, float]] = []  # (wall, CPU) seconds of each optimiser step

    def batcher(self, per_step: int):
        from cachekit.episodes import EpisodeBatcher

        if per_step not in self._batchers:
            self._batchers[per_step] = EpisodeBatcher(self.data.labels.numpy(), list(range(640)), self.ways,
                                                      self.shots, self.queries, per_step, seed=0)
        return self._batchers[per_step]

    def step(self, per_step: int, i: int, encoder=None) -> None:
        """One optimiser step of ``per_step`` episodes; with ``encoder``, its frames go through
        the frozen encoder first (the reference loop)."""
        import torch

        from cachekit.resident import episode_batch

        index = self.batcher(per_step).sample(i)
        batch = episode_batch(self.feats, index)
        if encoder is not None:
            size = encoder.info.image_size
            for videos in (batch.support, batch.query):
                n = videos.emb.shape[0] * videos.emb.shape[1]
                with torch.no_grad():
                    pixels = torch.randn(n * self.frames, 3, size, size, device=self.device)
                    videos.emb = encoder.encode_frames(pixels).emb.float().view_as(videos.emb)
        loss, _ = self.method.episode_batch_loss(batch)
        loss.backward()
        _sync(self.device)
        t, c = time.perf_counter(), time.process_time()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        self.opt_times.append((time.perf_counter() - t, time.process_time() - c))

    def gemm_replay(self):
        """The matrix products of a 1-episode step's forward and backward (their shapes and
        layouts, recorded once), as a function that runs them alone on random inputs."""
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        from cachekit.resident import episode_batch

        products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                    torch.ops.aten.baddbmm.default}
        calls = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func in products:
                    calls.append((func, [torch.empty_strided(a.shape, a.stride(), device=a.device).normal_()
                                         if isinstance(a, torch.Tensor) else a for a in args], kwargs or {}))
                return func(*args, **(kwargs or {}))

        batch = episode_batch(self.feats, self.batcher(1).sample(0))
        with Record():
            loss, _ = self.method.episode_batch_loss(batch)
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return lambda: [func(*args, **kwargs) for func, args, kwargs in calls]

    def flops(self) -> int:
        """Forward + backward FLOPs of a 1-episode step."""
        from torch.utils.flop_counter import FlopCounterMode

        from cachekit.resident import episode_batch

        batch = episode_batch(self.feats, self.batcher(1).sample(0))
        with FlopCounterMode(display=False) as counter:
            loss, _ = self.method.episode_batch_loss(batch)
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


EPISODIC = (("ma_fsar", "MA-FSAR TPCM + OTAM", {}), ("clip_fsar", "CLIP-FSAR head", {}))


def method_rows(device: str = "auto", tiny: bool = False, steps: int = 10, ways: int = 5, shots: int = 1,
                queries: int = 1, frames: int = 8, per_step: tuple[int, ...] = PER_STEP,
                ref_steps: int = 3) -> list[dict]:
    """Step vs FLOP floor, vs the encoder in the loop, and per-episode cost at ``per_step``."""
    dev = _device(device)
    info = _info(tiny)
    enc = _encoder(tiny, dev)
    rows = []
    for name, label, overrides in EPISODIC:
        tr = _Trainer(name, info, dev, frames, ways, shots, queries, overrides)
        tokens = ways * (shots + queries) * frames  # rows of the FFN product in a 1-episode step
        ffn = getattr(tr.method.cfg, "ffn_dim", 2048)
        rate, rate_cpu = gemm_rate(dev, [(tokens, info.embed_dim, ffn), (1024, 1024, 1024)])
        flops = tr.flops()
        row = {"method": label, "device": str(dev), "threads": _threads(), "flops": flops, "gemm_flops_s": rate,
               "floor_s": flops / rate}
        counter = iter(range(10**9))
        for e in per_step:
            tr.opt_times.clear()
            t, c = _median_times(lambda: tr.step(e, next(counter)), dev, max(3, steps if e == 1 else steps // 2))
            row[f"step_s@{e}"] = t
            row[f"per_episode_s@{e}"] = t / e
            if dev.type == "cpu":  # CPU seconds against CPU seconds: robust to a shared machine
                row[f"cpu_over_floor@{e}"] = c / (e * flops / rate_cpu)
            if e == 1:
                opt_wall, opt_cpu = (statistics.median(x) for x in zip(*tr.opt_times))
        row["step_s"] = row.get("step_s@1")
        row["step_over_floor"] = row["step_s"] / row["floor_s"] if row["step_s"] else None
        # where the step's time goes, in the floor's units: its own products alone (their sizes run
        # below the 1024^3 rate), and the optimiser (memory-bound: AdamW reads and writes 7 x 4 bytes
        # per parameter); wall time, or CPU time on the CPU, as the step columns
        gemm_wall, gemm_cpu = _median_times(tr.gemm_replay(), dev, max(5, steps))
        cpu = dev.type == "cpu"
        row["gemms_over_floor"] = gemm_cpu / (flops / rate_cpu) if cpu else gemm_wall / row["floor_s"]
        row["optimizer_over_floor"] = opt_cpu / (flops / rate_cpu) if cpu else opt_wall / row["floor_s"]
        row["optimizer_s"] = opt_wall
        ref = _median_time(lambda: tr.step(1, next(counter), encoder=enc), dev, ref_steps, warmup=1)
        row["encoder_step_s"] = ref
        row["encoder_ratio"] = ref / row["step_s"] if row["step_s"] else None
        big = max(per_step)
        row[f"encoder_ratio_per_episode@{big}"] = ref / row[f"per_episode_s@{big}"]
        rows.append(row)
    return rows


def probe_rows(device: str = "auto", tiny: bool = False, steps: int = 10, videos: int = 10,
               frames: int = 8, ref_steps: int = 3) -> list[dict]:
    """The all-way linear probe: a batch of ``videos`` cached videos vs the encoder in the loop."""
    import torch

    from cachekit.methods import build_method
    from cachekit.train import make_optimizer

    dev = _device(device)
    info = _info(tiny)
    enc = _encoder(tiny, dev)
    torch.manual_seed(0)
    m = build_method("linear_probe", {}, info, frames).to(dev).train()
    data = SyntheticData.make(m.needs, dev, classes=64, per_class=10, frames=frames, dim=info.embed_dim)
    emb = data.emb[:, 0].to(dev)  # [V, T, D'] resident
    labels = data.labels.to(dev)
    from cachekit.methods.base import VideoBatch

    def batch(i):
        idx = (torch.arange(videos, device=dev) * 7 + i) % emb.shape[0]
        return VideoBatch(index=idx, labels=labels[idx], emb=emb[idx])

    with torch.no_grad():
        m.video_logits(batch(0), data.text)  # materialise the lazy classifier
    opt = make_optimizer(m.trainable_parameters(), 1e-4, 0.01)

    def step(i, encode=False):
        b = batch(i)
        if encode:
            size = enc.info.image_size
            with torch.no_grad():
                px = torch.randn(videos * frames, 3, size, size, device=dev)
                b.emb = enc.encode_frames(px).emb.float().view_as(b.emb)
        loss, _ = m.video_loss(b, data.text)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = iter(range(10**9))
    t = _median_time(lambda: step(next(counter)), dev, steps)
    ref = _median_time(lambda: step(next(counter), True), dev, ref_steps, warmup=1)
    return [{"method": "linear probe (all-way)", "device": str(dev), "threads": _threads(), "step_s": t,
             "encoder_step_s": ref, "encoder_ratio": ref / t}]


def backbone_rows(device: str = "auto", tiny: bool = False, steps: int = 2) -> list[dict]:
    """Fetch share of the backbone methods' steps (``benchmarks/backbone.py``, full backbone and
    cached-token rows): fetch = reading the batch (tokens from the store, or frames decoded again)."""
    bench_dir = str(Path(__file__).resolve().parent)
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import backbone

    rows, _ = backbone.run(quick=tiny, steps=steps, device=device, threads=1 if tiny else None)
    out = []
    for r in rows:
        if "error" in r:
            out.append({"method": r["case"], "error": r["error"]})
            continue
        step = r["fetch_s"] + r["compute_s"]
        out.append({"method": r["case"], "device": device, "fetch_s": r["fetch_s"], "compute_s": r["compute_s"],
                    "step_s": step, "fetch_share": r["fetch_s"] / step})
    return out


_STARTUP_CHILD = r"""
import json, sys, time
t_launch = float(sys.argv[1])
t0 = time.time()
import torch
t_torch = time.time()
# the modules `train` loads, imported here so that their cost is one part (not spread over the others)
import clipcache.cli.main, cachekit.train, cachekit.cache, cachekit.methods.ma_fsar, cachekit.protocols.episodic
import cachekit.resident, cachekit.tblog, clipcache.stores
from clipcache.stores import open_store
open_store(sys.argv[2], "r").close()  # the store's backend (zarr) loads with the first open
t_imports = time.time()
spans = {}

def timed(owner, name, part, once=True):
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.time()
        try:
            return fn(*a, **k)
        finally:
            if not (once and part in spans):
                spans[part] = spans.get(part, 0.0) + time.time() - t
    setattr(owner, name, wrapper)

first = {}
step = cachekit.tblog.TrainCurves.step
def first_step(self, *a, **k):
    first.setdefault("t", time.time())
    return step(self, *a, **k)
cachekit.tblog.TrainCurves.step = first_step
ep = cachekit.protocols.episodic.Episodic
timed(cachekit.cache.FeatureCache, "__init__", "store open")
timed(cachekit.methods.ma_fsar, "build", "method build")
timed(ep, "__init__", "episodes and resident features")
timed(cachekit.tblog.TrainCurves, "__init__", "TensorBoard writer")
timed(ep, "validate", "step-0 validation")
step_loss = ep.step_loss
def first_loss(self, *a, **k):
    first.setdefault("loss", time.time())
    return step_loss(self, *a, **k)
ep.step_loss = first_loss
try:
    clipcache.cli.main.cli(sys.argv[3:], prog_name="clipcache", standalone_mode=False)
finally:
    spans["first step"] = first["t"] - first["loss"]
    print(json.dumps({"interpreter": t0 - t_launch, "import torch": t_torch - t0,
                      "imports (cachekit, CLI, store backend)": t_imports - t_torch, **spans,
                      "after torch": first["t"] - t_torch}))
"""

STARTUP_PARTS = ("imports (cachekit, CLI, store backend)", "store open", "method build",
                 "episodes and resident features", "TensorBoard writer", "step-0 validation", "first step")


def startup_rows(videos: int = 60, classes: int = 20, repeats: int = 3,
                 val_episodes: tuple[int, ...] = (1000, 0)) -> list[dict]:
    """``clipcache train`` start-up on a small store of random embeddings, in fresh processes, part
    by part: interpreter launch, ``import torch``, the other imports, opening the store, building the
    method, drawing the episodes and loading the features, the TensorBoard writer, the step-0
    validation (the untrained baseline) and the first optimiser step; "other" is the rest of
    "after torch" (CLI parsing, split, run directory). One column per ``val_episodes`` (the default
    1,000, and none); each the run with the least time after ``import torch`` of ``repeats``.
    Beside them, a bare ``python -c "import torch"`` (best of ``repeats``): on a shared machine the
    ratio to it is what compares across runs."""
    import json
    import shutil
    import subprocess
    import tempfile
    import time

    bench_dir = str(Path(__file__).resolve().parent)
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    from eval import write_store

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    cols = {}
    bare = None
    with tempfile.TemporaryDirectory(prefix="clipcache-startup-") as tmp:
        store = write_store(Path(tmp) / "s.zarr", videos=videos, classes=classes, test_split=False)
        for r in range(repeats):
            t = time.time()
            subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True, cwd=root)
            bare = min(bare or 1e9, time.time() - t)
            for val in val_episodes:
                out = Path(tmp) / f"run{val}-{r}"
                args = ["train", "--method", "ma_fsar", "--store", store, "--out", str(out), "--episodes", "2",
                        "--queries", "1", "--val-episodes", str(val), "--no-progress", "--threads", "1"]
                p = subprocess.run([sys.executable, "-c", _STARTUP_CHILD, repr(time.time()), store, *args], env=env,
                                   capture_output=True, text=True, cwd=root)
                if p.returncode != 0:
                    raise RuntimeError(f"train failed: {p.stderr[-800:]}")
                parts = json.loads(p.stdout.strip().splitlines()[-1])
                if val not in cols or parts["after torch"] < cols[val]["after torch"]:
                    cols[val] = parts
                shutil.rmtree(out, ignore_errors=True)
    names = ["interpreter", "import torch", *STARTUP_PARTS]
    rows = []
    for name in names:
        row = {"part": name}
        for val, parts in cols.items():
            row[f"{val} val"] = parts.get(name)
        rows.append(row)
    other = {"part": "other (CLI, split, run directory)"}
    total = {"part": "after import torch, to the first step (goal <= 2 s)"}
    whole = {"part": "launch to the first step"}
    ratio = {"part": "after torch / bare `import torch` process"}
    for val, parts in cols.items():
        key = f"{val} val"
        other[key] = parts["after torch"] - sum(parts.get(n, 0.0) for n in STARTUP_PARTS)
        total[key] = parts["after torch"]
        whole[key] = parts["interpreter"] + parts["import torch"] + parts["after torch"]
        ratio[key] = parts["after torch"] / bare
    bare_row = {"part": "bare `python -c \"import torch\"` process", **{f"{v} val": bare for v in cols}}
    return rows + [other, total, whole, bare_row, ratio]


def startup_columns(val_episodes: tuple[int, ...] = (1000, 0)) -> list[tuple[str, str, float]]:
    return [("part", "train start-up, 60-video store (s)", 1.0)] + [
        (f"{v} val", f"--val-episodes {v}" if v else "no validation", 1.0) for v in val_episodes]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


ROWS = [method_rows, probe_rows, backbone_rows]
"""Row functions ``fn(device="auto", tiny=False) -> list[dict]`` in print order."""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict], columns: list[tuple[str, str, float]] | None = None) -> str:
    """A markdown table of ``rows``: ``columns`` = (key, header, scale) (default: every key as is)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        columns = [(k, k, 1.0) for k in keys]
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for key, _, scale in columns:
            v = r.get(key)
            cells.append(_fmt(v * scale if isinstance(v, (int, float)) and not isinstance(v, bool) and scale != 1.0
                              else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


METHOD_COLUMNS = [("method", "method", 1.0), ("device", "device", 1.0), ("threads", "threads", 1.0),
                  ("step_s", "step ms (1 ep)", 1e3), ("flops", "fwd+bwd GFLOP", 1e-9),
                  ("gemm_flops_s", "GEMM GFLOP/s", 1e-9), ("floor_s", "FLOP floor ms", 1e3),
                  ("step_over_floor", "step / floor", 1.0), ("cpu_over_floor@1", "CPU s / floor @1", 1.0),
                  ("gemms_over_floor", "of which its products alone", 1.0),
                  ("optimizer_over_floor", "of which AdamW", 1.0),
                  ("cpu_over_floor@8", "CPU s / floor @8", 1.0), ("encoder_step_s", "encoder-in-loop ms", 1e3),
                  ("encoder_ratio", "ratio (1 ep)", 1.0)] + [
    (f"per_episode_s@{e}", f"ms/episode @{e}", 1e3) for e in PER_STEP] + [
    (f"encoder_ratio_per_episode@{PER_STEP[-1]}", f"ratio/episode @{PER_STEP[-1]}", 1.0)]
PROBE_COLUMNS = [("method", "method", 1.0), ("device", "device", 1.0), ("step_s", "step ms", 1e3),
                 ("encoder_step_s", "encoder-in-loop ms", 1e3), ("encoder_ratio", "ratio", 1.0)]
BACKBONE_COLUMNS = [("method", "case", 1.0), ("fetch_s", "fetch ms", 1e3), ("compute_s", "compute ms", 1e3),
                    ("step_s", "step ms", 1e3), ("fetch_share", "fetch share", 1.0)]


if __name__ == "__main__":  # a quick look: python benchmarks/train_rows.py [device] [--tiny]
    import argparse

    ap = argparse.ArgumentParser(description="Step-time rows of every method and of the linear probe "
                                             "(the rows benchmarks/train.py prints).")
    ap.add_argument("device", nargs="?", default="auto", help="cpu, cuda or auto (default).")
    ap.add_argument("--tiny", action="store_true", help="A small random-init encoder instead of ViT-B-32.")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(markdown(method_rows(a.device, a.tiny), METHOD_COLUMNS))
    print(markdown(probe_rows(a.device, a.tiny), PROBE_COLUMNS))

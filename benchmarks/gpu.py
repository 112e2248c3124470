"""The GPU rows of the benchmarks, in one short script (about 7 minutes at most on one GPU).

Rows (each a function in ``ROWS``):

* ``encoder``: the image tower alone on preprocessed frames, fp16 autocast, batch 256, frames/s;
* ``decode``: decode + resize/crop + normalise alone with N worker threads (N = cores), frames/s;
* ``pipeline``: the whole ``extract`` call (decode, host-to-device copy, encode, batch commits
  into a fresh Zarr store), frames/s, and its ratio to decode alone and to the encoder;
* ``write``: the Zarr store's write cost per video (T = 8, no tokens; with tokens, MB/s against
  a plain write + fsync to the same disk) and files per video;
* ``train``: ``benchmarks/train_rows.py``: from-cache steps (MA-FSAR TPCM, CLIP-FSAR, linear
  probe) against the encoder in the loop, per-episode cost at 32 episodes per step, and the fetch
  share of the backbone methods' steps (frames cached as pixels).

Videos are synthetic H.264 clips (``cachekit.synth``), byte-distinct copies of a few rendered
ones, so no data is needed; the model is any open_clip name or JSON config with
``--pretrained random`` (speed does not depend on weight values, and nothing is downloaded).
Decoding is extract's ``auto`` (the seeking PyAV path on the CPU; the row names the decoders
used). ``--tiny`` runs every row on CPU in seconds with the 4-block test model, to check the
script anywhere.

Writes ``OUT/gpu-results.json`` and ``OUT/gpu-results.md`` (the card is named in both).

On the lent GPU machines (Python 3.12, torch, h5py, fsspec, click, tqdm, safetensors, timm
installed; nothing can be downloaded) carry these wheels (see the device tool's README):
``zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c open_clip_torch==3.3.0
ftfy==6.3.1 wcwidth av==18.1.0`` (decord is optional: PyAV decodes without it).

Run: ``python benchmarks/gpu.py --out results/ [--model ViT-B-32] [--videos 120] [--tiny]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT), str(Path(__file__).resolve().parent)) if p not in sys.path]

import _pipeline as bp  # noqa: E402


@dataclass
class Context:
    """What the rows share: options, the encoder, the videos, a scratch directory, the clock."""

    args: argparse.Namespace
    out: Path
    tmp: Path
    t0: float = field(default_factory=time.perf_counter)
    enc: object = None
    videos: list = field(default_factory=list)
    results: dict = field(default_factory=dict)  # row name -> numbers (later rows may read earlier ones)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def encoder(self):
        if self.enc is None:
            from cachekit.encoder import EncoderConfig, load_clip

            self.enc = load_clip(EncoderConfig(model=self.args.model, pretrained=self.args.pretrained,
                                               device=self.args.device))
        return self.enc

    def clips(self) -> list:
        if not self.videos:
            a = self.args
            self.videos = bp.synth_videos(self.tmp / "videos", a.videos, frames=a.clip_frames, size=a.size)
        return self.videos


Row = Callable[[Context], list[dict]]


def row_encoder(ctx: Context) -> list[dict]:
    a = ctx.args
    r = bp.encoder_alone(ctx.encoder(), a.encoder_frames, a.encoder_batch)
    ctx.results["encoder"] = r
    amp = "fp16 autocast" if ctx.encoder().device.type == "cuda" else "fp32"
    return [{"row": f"encoder alone, {amp}, batch {r['batch']}", "value": r["frames_s"], "unit": "frames/s"}]


def row_decode(ctx: Context) -> list[dict]:
    r = bp.decode_alone(ctx.encoder(), ctx.clips(), ctx.args.frames, ctx.args.workers)
    ctx.results["decode"] = r
    return [{"row": f"decode + preprocess alone, {r['workers']} workers ({bp.backends_label(r['backends'])})",
             "value": r["frames_s"],
             "unit": "frames/s"}]


def row_pipeline(ctx: Context) -> list[dict]:
    a = ctx.args
    r = bp.pipeline(ctx.encoder(), ctx.clips(), ctx.tmp, a.frames, a.workers, a.encoder_batch)
    ctx.results["pipeline"] = r
    rows = [{"row": f"extract pipeline, {r['videos']} videos, {r['workers']} workers", "value": r["frames_s"],
             "unit": "frames/s", "note": "stage seconds " + ", ".join(f"{k} {v:.2f}" for k, v in r["seconds"].items())}]
    if "decode" in ctx.results:
        rows.append({"row": "pipeline / decode alone (goal >= 0.8 on a GPU)",
                     "value": r["frames_s"] / ctx.results["decode"]["frames_s"], "unit": "ratio"})
    if "encoder" in ctx.results:
        rows.append({"row": "pipeline / encoder alone", "value": r["frames_s"] / ctx.results["encoder"]["frames_s"],
                     "unit": "ratio"})
    return rows


def row_write(ctx: Context) -> list[dict]:
    a = ctx.args
    info = ctx.encoder().info
    d, w, grid = info.embed_dim, info.width, info.grid[0] * info.grid[1]
    plain = bp.write_cost(ctx.tmp, a.write_videos, t=8, d=d, w=w)
    tok = bp.write_cost(ctx.tmp, max(16, a.write_videos // 5), t=8, d=d, w=w, tokens=(info.layers // 2,), grid=grid)
    disk = bp.disk_write_rate(ctx.tmp, a.disk_mb << 20)
    ctx.results["write"] = {"plain": plain, "tokens": tok, "disk_mb_s": disk}
    return [
        {"row": f"Zarr write, T=8, no tokens ({plain['videos']} videos, batches of 32)",
         "value": plain["ms_per_video"], "unit": "ms/video (goal <= 1)"},
        {"row": "files per video", "value": plain["files_per_video"], "unit": "files"},
        {"row": f"Zarr write with tokens at block {info.layers // 2}", "value": tok["mb_s"], "unit": "MB/s",
         "note": f"{tok['mb_s'] / disk:.2f} of the disk's {disk:.0f} MB/s"},
    ]


def row_train(ctx: Context) -> list[dict]:
    """Issue 13's rows (``benchmarks/train_rows.py``): from-cache steps against the encoder in the
    loop, per-episode cost at 32 episodes per step, and the fetch share of backbone steps."""
    import train_rows as tr

    dev, tiny = ctx.args.device, ctx.args.tiny
    big = max(tr.PER_STEP)
    out = []
    for r in tr.method_rows(device=dev, tiny=tiny):
        ctx.results.setdefault("train", []).append(r)
        out += [{"row": f"train: {r['method']} step, 1 episode", "value": 1e3 * r["step_s"], "unit": "ms",
                 "note": f"encoder in the loop {1e3 * r['encoder_step_s']:.2f} ms: x{r['encoder_ratio']:.1f}"},
                {"row": f"train: {r['method']} per episode at {big}/step", "value": 1e3 * r[f"per_episode_s@{big}"],
                 "unit": "ms", "note": f"x{r[f'encoder_ratio_per_episode@{big}']:.1f} vs the encoder in the loop "
                                       "(goals <= 0.3 ms, >= 20x)"}]
    for r in tr.probe_rows(device=dev, tiny=tiny):
        ctx.results.setdefault("train", []).append(r)
        out.append({"row": f"train: {r['method']} step", "value": 1e3 * r["step_s"], "unit": "ms",
                    "note": f"x{r['encoder_ratio']:.1f} vs the encoder in the loop"})
    for r in tr.backbone_rows(device=dev, tiny=tiny):
        ctx.results.setdefault("backbone", []).append(r)
        if "error" in r:
            out.append({"row": f"backbone: {r['method']}", "value": None, "unit": "", "note": r["error"]})
        else:
            out.append({"row": f"backbone: {r['method']} fetch share", "value": r["fetch_share"], "unit": "",
                        "note": f"step {1e3 * r['step_s']:.1f} ms, fetch from cached pixels/tokens (goal <= 0.10)"})
    return out


#: the rows, in order; later issues append theirs (a function taking the Context, returning rows)
ROWS: list[Row] = [row_encoder, row_decode, row_pipeline, row_write, row_train]


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU only: {platform.processor() or platform.machine()} (torch {torch.__version__})"


def markdown(meta: dict, rows: list[dict]) -> str:
    out = [f"# clipcache GPU benchmark ({meta['when']})", "",
           f"device: {meta['device']}; {meta['cores']} cores; model {meta['model']} "
           f"(weights: {meta['pretrained']}); {meta['videos']} synthetic videos, T = {meta['frames']}; "
           f"total {meta['seconds']:.0f} s", "",
           "| row | value | unit | note |", "| --- | ---: | --- | --- |"]
    for r in rows:
        v = r.get("value")
        val = "—" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}")
        out.append(f"| {r['row']} | {val} | {r.get('unit', '')} | {r.get('note', '')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu-results.json and gpu-results.md")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="random")
    p.add_argument("--device", default="auto")
    p.add_argument("--videos", type=int, default=120)
    p.add_argument("--frames", type=int, default=8, help="T sampled per video")
    p.add_argument("--clip-frames", type=int, default=64, help="frames in each synthetic clip")
    p.add_argument("--size", type=int, default=256, help="synthetic clip height and width")
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: the cores available)")
    p.add_argument("--encoder-batch", type=int, default=256)
    p.add_argument("--encoder-frames", type=int, default=20000)
    p.add_argument("--write-videos", type=int, default=2000)
    p.add_argument("--disk-mb", type=int, default=512)
    p.add_argument("--budget-s", type=float, default=400.0, help="rows not started by then are skipped")
    p.add_argument("--tiny", action="store_true", help="CPU, the 4-block test model, tiny sizes (seconds)")
    a = p.parse_args(argv)
    if a.tiny:
        a.model, a.pretrained, a.device = bp.TINY, "random", "cpu"
        a.videos, a.clip_frames, a.size = 8, 16, 64
        a.encoder_batch, a.encoder_frames, a.write_videos, a.disk_mb = 16, 64, 64, 8
    if a.workers is None:
        from cachekit.extract import ExtractConfig

        a.workers = ExtractConfig().n_workers
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args=a, out=out, tmp=bp.temp_dir("clipcache-gpu-"))
    rows: list[dict] = []
    try:
        for fn in ROWS:
            if ctx.elapsed > a.budget_s:
                rows.append({"row": fn.__name__, "value": None, "unit": "", "note": "skipped: time budget"})
                continue
            t1 = time.perf_counter()
            try:
                got = fn(ctx)
            except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
                got = [{"row": fn.__name__, "value": None, "unit": "", "note": f"failed: {type(err).__name__}: {err}"}]
            for r in got:
                r.setdefault("seconds", round(time.perf_counter() - t1, 2))
                print(f"{r['row']}: {r['value'] if r['value'] is None else round(r['value'], 3)} {r['unit']} "
                      f"{r.get('note', '')}", flush=True)
            rows.extend(got)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device_name(),
            "cores": a.workers, "model": a.model, "pretrained": a.pretrained, "videos": a.videos,
            "frames": a.frames, "seconds": ctx.elapsed, "tiny": a.tiny}
    (out / "gpu-results.json").write_text(json.dumps({"meta": meta, "rows": rows, "raw": ctx.results},
                                                     indent=1, default=str))
    (out / "gpu-results.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    return 1 if any(r["value"] is None for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

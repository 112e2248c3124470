"""``clipcache demo``: the main job end to end on an embedded default, for a first-time user.

It first prints the three commands that do the job on the user's own videos (:data:`THREE_COMMANDS`),
then, on its own clips: synth a small motion benchmark -> extract it once -> train a from-cache method (MA-FSAR's TPCM)
and a backbone method (EZ-CLIP from a cached block) -> evaluate episodes against the
no-training baseline -> build the FAISS index -> query one clip. Uses a small random-weight
model unless real weights are given, and says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from .caveat import TOY_CAVEAT
from .toy.files import TOY_TAG, toy_model_config

DEMO_CLASSES = None  # all synthetic classes: 10 train / 5 val / 5 test with the splits below

THREE_COMMANDS = (
    ("clipcache extract VIDEOS --store S", "decode and encode your videos once (a folder of class sub-folders, "
                                           "a CSV, a split file)"),
    ("clipcache train --method M --store S --out R", "train method M from the cache (`clipcache methods` lists them)"),
    ("clipcache query clip.mp4 --run R", "classify a new clip with the trained run (its index is built on first use)"),
)
"""The whole job on your own videos, shown first by the demo and the README."""


@dataclass(frozen=True)
class DemoConfig:
    out: str = "demo-out"
    model: str | None = None  # default: the embedded small config (random weights)
    pretrained: str = "random"
    videos_per_class: int = 6
    frames: int = 8
    episodes: int = 300  # training episodes of the from-cache method
    eval_episodes: int = 1000
    seed: int = 0
    progress: bool = False  # progress bars of the long steps (stderr)


@dataclass
class DemoResult:
    steps: list[dict] = field(default_factory=list)

    def add(self, name: str, seconds: float, **info) -> dict:
        row = {"step": name, "seconds": round(seconds, 2), **info}
        self.steps.append(row)
        return row


def demo_model_config() -> str:
    """Path of the embedded small open_clip config (random weights unless --pretrained is given)."""
    return str(resources.files("cachekit") / "data" / "demo-clip.json")


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    from .encoder import EncoderConfig
    from .evaluate import EvalConfig, evaluate
    from .extract import ExtractConfig, extract
    from .inputs import collect_inputs
    from .progress import scope
    from .index.build import IndexBuildConfig, build_index
    from .index.query import query_videos
    from .synth import SynthConfig, slugify, synth_dataset
    from .train import TrainConfig, train
    from .video import SamplerConfig

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = cfg.model or (str(toy_model_config()) if cfg.pretrained == TOY_TAG else demo_model_config())
    res = DemoResult()
    echo("On your own videos, the whole job is three commands:")
    width = max(len(c) for c, _ in THREE_COMMANDS)
    for command, what in THREE_COMMANDS:
        echo(f"  {command:<{width}}   # {what}")
    echo("This demo runs the same steps (and a few more) on synthetic clips, with real output under "
         f"{out}/; each step says where.")
    if cfg.pretrained == "random":
        echo("NOTE: the encoder has RANDOM weights (no pretrained CLIP here). Accuracies show what the "
             "pipeline learns from these clips, not what CLIP knows; pass --model/--pretrained for real weights.")
    elif cfg.pretrained == TOY_TAG:
        echo(f"NOTE: {TOY_CAVEAT}.")

    t = time.perf_counter()
    data = out / "synth"
    syn = synth_dataset(data, SynthConfig(classes=DEMO_CLASSES, videos_per_class=cfg.videos_per_class,
                                          frames=16, size=112, seed=cfg.seed, splits=(0.5, 0.25, 0.25),
                                          clutter="low" if cfg.pretrained == "random" else "full"),
                        progress=cfg.progress)
    row = res.add("synth", time.perf_counter() - t, videos=len(syn.videos), classes=len(syn.classes),
                  output=str(data))
    echo(f"[1/7] synth: {row['videos']} clips of {row['classes']} motion classes -> {data} ({row['seconds']}s)")

    t = time.perf_counter()
    store = str(out / "cache.zarr")
    splits = data / "splits" / "clip_fsar"
    inputs = collect_inputs([str(splits / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                            video_root=str(data), class_names=str(splits))
    ecfg = ExtractConfig(encoder=EncoderConfig(model=model, pretrained=cfg.pretrained, seed=cfg.seed),
                         sampler=SamplerConfig(frames=cfg.frames, seed=cfg.seed), tokens_at=(6,),
                         templates="ma_fsar16")
    s = extract(inputs, store, ecfg, progress=cfg.progress)
    row = res.add("extract", time.perf_counter() - t, extracted=s.extracted, cached_before=s.already_done,
                  failed=len(s.failed), output=store)
    echo(f"[2/7] extract: {s.extracted} videos encoded once ({s.already_done} already cached) -> {store} "
         f"({row['seconds']}s)")

    t = time.perf_counter()
    run_cache = str(out / "runs" / "ma_fsar")
    # alpha: the paper's 0.25 for temporal data sets; 0 with random weights, whose text is noise
    alpha = 0.0 if cfg.pretrained == "random" else 0.25
    tr = train(store, run_cache, "ma_fsar", {"modules": "tpcm", "alpha": alpha},
               TrainConfig(protocol="episodic", ways=5, shots=1, episodes=cfg.episodes, val_episodes=100,
                           val_every=max(1, cfg.episodes // 3), lr=1e-3, seed=cfg.seed), resume=True,
               progress=cfg.progress)
    row = res.add("train ma_fsar (from cache)", time.perf_counter() - t, steps=tr.step,
                  params=tr.trainable_params, best_val=tr.best_val_accuracy, output=run_cache)
    echo(f"[3/7] train MA-FSAR (TPCM only, frozen encoder) from the cache: {tr.step} episodes, "
         f"{tr.trainable_params:,} trainable parameters, best val {tr.best_val_accuracy or 0:.1f}% -> "
         f"{run_cache} ({row['seconds']}s)")

    t = time.perf_counter()
    run_bb = str(out / "runs" / "ez_clip")
    tb = train(store, run_bb, "ez_clip", {"from_block": 6},
               TrainConfig(protocol="zeroshot", epochs=2, batch_size=8, lr=1e-3, seed=cfg.seed),
               resume=True, pretrained=None if cfg.pretrained == "random" else cfg.pretrained, progress=cfg.progress)
    row = res.add("train ez_clip (backbone from block 6)", time.perf_counter() - t, steps=tb.step,
                  params=tb.trainable_params, output=run_bb)
    echo(f"[4/7] train EZ-CLIP through the backbone, from the cached tokens entering block 6, for zero-shot "
         f"transfer: {tb.step} steps, {tb.trainable_params:,} trainable parameters, unseen-class val "
         f"{tb.best_val_accuracy or 0:.1f}% -> {run_bb} ({row['seconds']}s)")

    t = time.perf_counter()
    report_dir = out / "eval"
    with scope(cfg.progress):  # evaluation's bars
        base = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric="otam", ways=5, shots=1,
                                          episodes=cfg.eval_episodes, seed=cfg.seed, out_dir=report_dir / "proto_otam"))
        mean = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric="mean", ways=5, shots=1,
                                          episodes=cfg.eval_episodes, seed=cfg.seed, out_dir=report_dir / "proto_mean"))
        trained = evaluate(store, EvalConfig(protocol="episodic", run_dir=run_cache, ways=5, shots=1,
                                             episodes=cfg.eval_episodes, seed=cfg.seed, out_dir=report_dir / "ma_fsar"))
    row = res.add("evaluate", time.perf_counter() - t, output=str(report_dir),
                  proto_mean=[mean.accuracy, mean.ci95], proto_otam=[base.accuracy, base.ci95],
                  ma_fsar=[trained.accuracy, trained.ci95])
    echo(f"[5/7] evaluate 5-way 1-shot on {cfg.eval_episodes} test episodes (chance 20%): "
         f"prototypes+mean {mean.accuracy:.1f}±{mean.ci95:.1f}%, prototypes+OTAM {base.accuracy:.1f}"
         f"±{base.ci95:.1f}%, MA-FSAR (TPCM) {trained.accuracy:.1f}±{trained.ci95:.1f}% -> {report_dir} "
         f"({row['seconds']}s)")

    t = time.perf_counter()
    index_dir = Path(run_cache) / "index"  # the run's own index: what `clipcache query --run` uses
    build_index(store, index_dir, run_dir=run_cache, cfg=IndexBuildConfig(split="test"), progress=cfg.progress)
    row = res.add("index", time.perf_counter() - t, output=str(index_dir))
    echo(f"[6/7] index: test-class prototypes of the MA-FSAR run in FAISS -> {index_dir} ({row['seconds']}s)")

    t = time.perf_counter()
    test_names = syn.splits["test"]
    clip = next(p for p in syn.videos if p.parent.name == slugify(test_names[0]))
    result = next(iter(query_videos([str(clip)], run_dir=run_cache)))
    top = [(h.label, round(h.score, 3)) for h in result.top[:3]]
    row = res.add("query", time.perf_counter() - t, video=str(clip), truth=test_names[0], top=top)
    echo(f"[7/7] query {clip.name} (true class: {test_names[0]}): "
         + ", ".join(f"{lab} {sc:.3f}" for lab, sc in top) + f" ({row['seconds']}s)")
    echo(f"try the third command on this run: clipcache query {clip} --run {run_cache}")
    (out / "demo.json").write_text(json.dumps(res.steps, indent=1, default=str))
    echo(f"done: every step's output is under {out}/ (summary: {out / 'demo.json'})")
    return res

"""``clipcache demo``: the main job end to end on an embedded default, for a first-time user.

It first prints the three commands that do the job on the user's own videos (:data:`THREE_COMMANDS`),
then, on its own clips of the compositional benchmark (an object x a motion): synth -> extract ->
frozen zero-shot on classes that differ only by object, and only by motion -> prototypes with
mean pooling against OTAM on time-reversed pairs -> train a from-cache few-shot head (CLIP-FSAR's,
or MA-FSAR's TPCM) against its no-training baseline -> on a base-to-novel set of its own (16 clips per class, of
three objects), train a backbone method (EZ-CLIP from a cached block) on base compositions
against frozen zero-shot -> build the FAISS index -> query a clip that was never cached. The encoder is the toy CLIP (pretrained by clipcache on drawn still images)
unless other weights are given; every line says which.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

DEMO_MOTIONS = None  # every motion of the benchmark
BLOCK = 4  # EZ-CLIP starts from the cached tokens entering this block of the toy CLIP (6 blocks)

THREE_COMMANDS = (
    ("clipcache extract VIDEOS --store S", "decode and encode your videos once (a folder of class sub-folders, "
                                           "a CSV, a split file)"),
    ("clipcache train --method M --store S --out R", "train method M from the cache (`clipcache methods` lists them)"),
    ("clipcache query clip.mp4 --run R", "classify a new clip with the trained run (its index is built on first use)"),
)
"""The whole job on your own videos, shown first by the demo and the README."""

FEWSHOT_HEADS = {"clip_fsar": ("CLIP-FSAR", "CLIP-FSAR's head", False),
                 "ma_fsar": ("MA-FSAR", "MA-FSAR's TPCM", True)}
"""The from-cache few-shot heads the demo can train (its step 5): method name -> (paper name, what
it trains, whether it is TPCM at the config's ``alpha``)."""


def _beyond(trained, baseline) -> bool:
    """Whether a trained row clears its baseline beyond both intervals (what each training step shows)."""
    return trained.accuracy - trained.ci95 > baseline.accuracy + baseline.ci95


@dataclass(frozen=True)
class DemoConfig:
    out: str = "demo-out"
    model: str | None = None  # default: the toy config (toy weights) or the small demo config (random)
    pretrained: str = "toy"
    objects: int = 4  # the first objects of the benchmark's list (colour x shape)
    videos_per_class: int = 5
    frames: int = 8
    episodes: int = 1200  # training episodes of the from-cache method
    eval_episodes: int = 600
    epochs: int = 10  # EZ-CLIP epochs over the base compositions
    # The base-to-novel step's own set: 16 clips per class (at 5, EZ-CLIP memorises its few base
    # clips and stays at frozen zero-shot on novel compositions), of three objects (with two, 13 novel
    # compositions left intervals too wide to show the shape-knowing toy's gain: 8.2 +- 4.8 -> 17.7 +- 4.8)
    b2n_objects: int = 3
    b2n_videos_per_class: int = 16
    # The from-cache few-shot head: CLIP-FSAR's (with the shape-knowing toy, MA-FSAR's TPCM stays at
    # prototypes + OTAM at this size: README, demo), or ma_fsar (TPCM at ``alpha``).
    fewshot: str = "clip_fsar"
    alpha: float = 0.25  # TPCM's text weight: MA-FSAR's own choice for temporal data sets (SSv2)
    seed: int = 0
    progress: bool = False  # progress bars of the long steps (stderr)

    def __post_init__(self) -> None:
        if self.fewshot not in FEWSHOT_HEADS:
            from .errors import InputError

            raise InputError(f"unknown few-shot head {self.fewshot!r} for the demo; choose one of "
                             f"{', '.join(FEWSHOT_HEADS)}")


@dataclass
class DemoResult:
    steps: list[dict] = field(default_factory=list)

    def add(self, name: str, seconds: float, **info) -> dict:
        row = {"step": name, "seconds": round(seconds, 2), **info}
        self.steps.append(row)
        return row


def demo_model_config() -> str:
    """Path of the embedded small open_clip config, for random weights (the toy CLIP has its own)."""
    return str(resources.files("cachekit") / "data" / "demo-clip.json")


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    from .caveat import encoder_caveat
    from .encoder import DEFAULT_MODEL, EncoderConfig
    from .evaluate import EvalConfig, evaluate
    from .extract import ExtractConfig, extract
    from .index.build import IndexBuildConfig, build_index
    from .index.query import query_videos
    from .inputs import collect_inputs
    from .probes import reversal_episodes, zeroshot_groups
    from .progress import scope
    from .synth import DEFAULT_OBJECTS, SynthConfig, render_clip, slugify, synth_dataset, write_mp4
    from .train import TrainConfig, train
    from .video import SamplerConfig

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    random_weights = cfg.pretrained == "random"
    model = cfg.model or (demo_model_config() if random_weights else DEFAULT_MODEL)
    weights = None if random_weights else cfg.pretrained
    res = DemoResult()
    echo("On your own videos, the whole job is three commands:")
    width = max(len(c) for c, _ in THREE_COMMANDS)
    for command, what in THREE_COMMANDS:
        echo(f"  {command:<{width}}   # {what}")
    echo("This demo runs the same steps (and a few more) on synthetic clips, with real output under "
         f"{out}/; each step says where.")
    enc = EncoderConfig(model=model, pretrained=cfg.pretrained, seed=cfg.seed)
    caveat = encoder_caveat({"weights": "toy" if cfg.pretrained == "toy" else
                             (f"random:{cfg.seed}" if random_weights else cfg.pretrained)})
    if caveat:
        echo(f"NOTE: {caveat}")
    steps = 9

    def say(i: int, text: str, row: dict) -> None:
        echo(f"[{i}/{steps}] {text} ({row['seconds']}s)")

    t = time.perf_counter()
    data = out / "synth"
    scfg = SynthConfig(objects=DEFAULT_OBJECTS[:cfg.objects], videos_per_class=cfg.videos_per_class, frames=16,
                       size=112, seed=cfg.seed, splits=(0.5, 0.25, 0.25))
    syn = synth_dataset(data, scfg, progress=cfg.progress)
    meta = json.loads((data / "synth.json").read_text())
    row = res.add("synth", time.perf_counter() - t, videos=len(syn.videos), classes=len(syn.classes), output=str(data))
    say(1, f"synth: {row['videos']} clips of {row['classes']} classes, each an object x a motion "
           f"(e.g. {syn.classes[0]!r}) -> {data}", row)

    t = time.perf_counter()
    store = str(out / "cache.zarr")
    fsar = data / "splits" / "clip_fsar"
    sampler = SamplerConfig(frames=cfg.frames, seed=cfg.seed)
    inputs = collect_inputs([str(fsar / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                            video_root=str(data), class_names=str(fsar))
    s = extract(inputs, store, ExtractConfig(encoder=enc, sampler=sampler, templates="ma_fsar16"),
                progress=cfg.progress)
    row = res.add("extract", time.perf_counter() - t, extracted=s.extracted, cached_before=s.already_done,
                  failed=len(s.failed), output=store)
    say(2, f"extract: {s.extracted} videos encoded once ({s.already_done} already cached) -> {store}", row)

    t = time.perf_counter()
    groups = data / "splits" / "groups"
    with scope(cfg.progress):
        by_object = zeroshot_groups(store, sorted(groups.glob("motion_*.txt")), data, cfg.seed)
        by_motion = zeroshot_groups(store, sorted(groups.glob("object_*.txt")), data, cfg.seed)
    row = res.add("zero-shot probes", time.perf_counter() - t, only_object=by_object.cell(),
                  only_motion=by_motion.cell())
    say(3, f"frozen zero-shot, no training: classes that differ only by object {by_object.accuracy:.1f}"
           f"±{by_object.ci95:.1f}% (chance {by_object.chance:.0f}%), only by motion {by_motion.accuracy:.1f}"
           f"±{by_motion.ci95:.1f}% (chance {by_motion.chance:.0f}%): the encoder knows looks and words, not motion",
        row)

    t = time.perf_counter()
    report_dir = out / "eval"
    pairs_file = report_dir / "reversal_pairs.json"
    report_dir.mkdir(parents=True, exist_ok=True)
    n_pairs = reversal_episodes(store, meta["reversal_pairs"], cfg.eval_episodes, cfg.seed, pairs_file)
    with scope(cfg.progress):
        pm = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric="mean", episodes_file=str(pairs_file),
                                        out_dir=report_dir / "pairs_mean"))
        po = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric="otam", episodes_file=str(pairs_file),
                                        out_dir=report_dir / "pairs_otam"))
        pc = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric="otam_centred",
                                        episodes_file=str(pairs_file), out_dir=report_dir / "pairs_otam_centred"))
    row = res.add("time-reversed pairs", time.perf_counter() - t, pairs=n_pairs, mean=[pm.accuracy, pm.ci95],
                  otam=[po.accuracy, po.ci95], otam_centred=[pc.accuracy, pc.ci95], output=str(report_dir))
    say(4, f"2-way 1-shot episodes of {n_pairs} time-reversed pairs (chance 50%), no training: prototypes+mean "
           f"{pm.accuracy:.1f}±{pm.ci95:.1f}%, prototypes+OTAM {po.accuracy:.1f}±{po.ci95:.1f}%, OTAM on clip-centred "
           f"frames {pc.accuracy:.1f}±{pc.ci95:.1f}% (each clip's mean frame removed: the scene no longer counts)", row)

    t = time.perf_counter()
    head_short, head_label, tpcm = FEWSHOT_HEADS[cfg.fewshot]
    head_options = {"modules": "tpcm", "alpha": cfg.alpha} if tpcm else {}
    head_label += f" (alpha {cfg.alpha})" if tpcm else ""
    run_cache = str(out / "runs" / cfg.fewshot)
    tr = train(store, run_cache, cfg.fewshot, head_options,
               TrainConfig(protocol="episodic", ways=5, shots=1, queries=min(5, cfg.videos_per_class - 1),
                           episodes=cfg.episodes, val_episodes=100,
                           val_every=max(1, cfg.episodes // 4), lr=1e-3, seed=cfg.seed), resume=True,
               progress=cfg.progress, pretrained=weights)
    with scope(cfg.progress):
        ep = dict(protocol="episodic", ways=5, shots=1, episodes=cfg.eval_episodes, seed=cfg.seed)
        mean = evaluate(store, EvalConfig(method="proto", metric="mean", out_dir=report_dir / "proto_mean", **ep))
        base = evaluate(store, EvalConfig(method="proto", metric="otam", out_dir=report_dir / "proto_otam", **ep))
        trained = evaluate(store, EvalConfig(run_dir=run_cache, out_dir=report_dir / cfg.fewshot, **ep))
    row = res.add("train few-shot head (from cache) + evaluate", time.perf_counter() - t, method=cfg.fewshot,
                  steps=tr.step,
                  params=tr.trainable_params, proto_mean=[mean.accuracy, mean.ci95, mean.video_ci95],
                  proto_otam=[base.accuracy, base.ci95, base.video_ci95],
                  trained=[trained.accuracy, trained.ci95, trained.video_ci95], output=run_cache)
    say(5, f"{head_label} trained from the cache ({tr.step} episodes, {tr.trainable_params:,} parameters, frozen "
           f"encoder), then 5-way 1-shot on {cfg.eval_episodes} test episodes (chance 20%): prototypes+mean "
           f"{mean.accuracy:.1f}±{mean.ci95:.1f}, prototypes+OTAM {base.accuracy:.1f}±{base.ci95:.1f}, {head_short} "
           f"{trained.accuracy:.1f}±{trained.ci95:.1f} (video-level ±{trained.video_ci95 or 0:.1f})"
           + ("" if _beyond(trained, base) else "; no gain beyond the intervals")
           + f" -> {run_cache}", row)

    t = time.perf_counter()
    b2n_data = out / "synth-b2n"
    b2n_cfg = SynthConfig(objects=DEFAULT_OBJECTS[:cfg.b2n_objects], videos_per_class=cfg.b2n_videos_per_class,
                          frames=16, size=112, seed=cfg.seed, splits=(0.5, 0.25, 0.25))
    b2n_syn = synth_dataset(b2n_data, b2n_cfg, progress=cfg.progress)
    b2n_store = str(out / "cache-b2n.zarr")
    b2n = b2n_data / "splits" / "b2n"
    s2 = extract(collect_inputs([str(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")],
                                video_root=str(b2n_data), class_names=str(b2n / "labels.csv")),
                 b2n_store, ExtractConfig(encoder=enc, sampler=sampler, tokens_at=(BLOCK,), templates="ma_fsar16"),
                 progress=cfg.progress)
    row = res.add("synth + extract base-to-novel", time.perf_counter() - t, videos=len(b2n_syn.videos),
                  extracted=s2.extracted, base=len(b2n_syn.b2n["base"]), novel=len(b2n_syn.b2n["novel"]),
                  output=b2n_store)
    say(6, f"base-to-novel set: {cfg.b2n_videos_per_class} clips per class of {len(b2n_syn.classes)} compositions "
           f"({cfg.b2n_objects} objects; {row['novel']} novel = object x motion compositions never trained on, whose "
           f"object and motion both appear in base) -> {b2n_data}; {s2.extracted} videos extracted -> {b2n_store}", row)

    t = time.perf_counter()
    run_bb = str(out / "runs" / "ez_clip")
    tb = train(b2n_store, run_bb, "ez_clip", {"from_block": BLOCK},
               TrainConfig(protocol="base2novel", epochs=cfg.epochs, batch_size=16, lr=3e-3, val_episodes=0,
                           seed=cfg.seed), resume=True, pretrained=weights, progress=cfg.progress)
    with scope(cfg.progress):
        zs = evaluate(b2n_store, EvalConfig(protocol="base2novel", method="zeroshot", seed=cfg.seed,
                                            out_dir=report_dir / "b2n_zeroshot"))
        ez = evaluate(b2n_store, EvalConfig(protocol="base2novel", run_dir=run_bb, seed=cfg.seed,
                                            out_dir=report_dir / "b2n_ez_clip"))
    row = res.add(f"train ez_clip (backbone from block {BLOCK}) + evaluate", time.perf_counter() - t, steps=tb.step,
                  params=tb.trainable_params, zeroshot=zs.base_novel(), ez_clip=ez.base_novel(), output=run_bb)
    gain = _beyond(ez, zs)  # on the harmonic mean, base-to-novel's headline
    say(7, f"EZ-CLIP trained through the backbone from the cached tokens entering block {BLOCK} on the base "
           f"compositions ({tb.step} steps, {tb.trainable_params:,} parameters), against frozen zero-shot: "
           f"harmonic mean of base and novel {zs.accuracy:.1f}±{zs.ci95:.1f} -> {ez.accuracy:.1f}±{ez.ci95:.1f}% "
           f"(novel compositions {zs.extra['novel']:.1f} -> {ez.extra['novel']:.1f}, base {zs.extra['base']:.1f} -> "
           f"{ez.extra['base']:.1f})" + ("" if gain else "; no gain beyond the intervals") + f" -> {run_bb}", row)

    t = time.perf_counter()
    index_dir = Path(run_cache) / "index"  # the run's own index: what `clipcache query --run` uses
    build_index(store, index_dir, run_dir=run_cache, cfg=IndexBuildConfig(split="test", pretrained=weights),
                progress=cfg.progress)
    row = res.add("index", time.perf_counter() - t, output=str(index_dir))
    say(8, f"index: test-class prototypes of the {head_short} run in FAISS -> {index_dir}", row)

    t = time.perf_counter()
    # one new clip per test class (rendered past the data set's clips: no store has seen them)
    truths = syn.splits["test"]
    clips = [out / "query" / f"new_{slugify(c)}.mp4" for c in truths]
    for c, path in zip(truths, clips):
        write_mp4(path, render_clip(c, cfg.videos_per_class, scfg), 16)
    results = list(query_videos([str(p) for p in clips], run_dir=run_cache))
    tops = [[(h.label, round(h.score, 3)) for h in r.top[:3]] for r in results]
    right = [bool(top and top[0][0] == c) for c, top in zip(truths, tops)]
    shown = right.index(True) if any(right) else 0
    clip, truth, top = clips[shown], truths[shown], tops[shown]
    row = res.add("query", time.perf_counter() - t, videos=len(clips), top1_right=sum(right), video=str(clip),
                  truth=truth, top=top, right=right[shown])
    say(9, f"query {len(clips)} new clips, one per test class: top class right for {sum(right)} of {len(clips)} "
           f"(chance {100 / len(truths):.0f}%); e.g. {clip.name}: " + ", ".join(f"{lab} {sc:.3f}" for lab, sc in top)
        + (" (top class right)" if row["right"] else " (top class WRONG)"), row)
    echo(f"try the third command on this run: clipcache query {clip} --run {run_cache}")
    if caveat:
        echo(f"NOTE: {caveat}")
    from clipcache.stores.base import atomic_write_bytes

    atomic_write_bytes(out / "demo.json", json.dumps({"encoder": caveat or model, "steps": res.steps}, indent=1,
                                                     default=str).encode())
    echo(f"done: every step's output is under {out}/ (summary: {out / 'demo.json'})")
    return res


"""Accuracy of every method on the compositional synthetic benchmark, with the toy CLIP by default.

Classes are an object x a motion ("moving a red square from left to right"); the toy encoder was
pretrained on still images, so it knows the objects' words and looks but no motion. Per visual
challenge: synth the clips once, extract two stores (the class-disjoint few-shot split, and the
base-to-novel split over unseen compositions), then measure:

* frozen zero-shot among classes that differ only by object, and only by motion;
* prototypes with mean pooling against OTAM, on raw and on clip-centred frames, on 2-way episodes of
  time-reversed pairs (same episodes);
* 5-way 1-shot on the test classes: the no-training baselines, MA-FSAR's TPCM and the CLIP-FSAR head;
* base-to-novel: frozen zero-shot against EV-CLIP (context, mask) and EZ-CLIP (with and without its
  motion loss), trained on the base compositions (a set of its own; its clip count and each row's
  epochs are settled on a selection set by b2n_select.py, never on these test lists).

Every cell is accuracy ± the episode interval [± the video-level interval]. The toy encoder says
nothing about real CLIP on real videos; ``--pretrained random`` gives the random-weight numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHALLENGES = ("none", "dark", "shake", "blur", "occlusion", "mixed")
BLOCK = 4  # cached tokens entering this block feed EV-CLIP's z and EZ-CLIP's start (toy CLIP: 6 blocks)

EPISODIC_ROWS = [
    ("Prototypes + mean pooling (no training)", ("eval", "proto", "mean")),
    ("Prototypes + OTAM (no training)", ("eval", "proto", "otam")),
    ("Prototypes + OTAM on clip-centred frames (no training)", ("eval", "proto", "otam_centred")),
    ("Frozen CLIP zero-shot, 5-way (no training)", ("eval", "zeroshot", None)),
    ("MA-FSAR TPCM, α = 0.75 (frozen encoder; paper: spatial data sets)", ("train", "ma_fsar", {"modules": "tpcm"})),
    ("MA-FSAR TPCM, α = 0.25 (paper: temporal data sets)", ("train", "ma_fsar", {"modules": "tpcm", "alpha": 0.25})),
    ("MA-FSAR TPCM, α = 0 (no text branch)", ("train", "ma_fsar", {"modules": "tpcm", "alpha": 0.0})),
    ("CLIP-FSAR head (frozen encoder)", ("train", "clip_fsar", {})),
]
# Time-reversed pairs: proto metric -> row label. OTAM is the papers'; on clip-centred frames it is
# clipcache's answer to scene differences swamping the frame distances (README, "Why OTAM ...").
PAIR_ROWS = {"mean": "Prototypes + mean pooling", "otam": "Prototypes + OTAM",
             "otam_centred": "Prototypes + OTAM on clip-centred frames"}
# Base-to-novel rows: (label, how, epochs). From-cache steps cost milliseconds, so those rows get
# many epochs; backbone rows run the encoder forward and backward every step.
B2N_ROWS = [
    ("Frozen CLIP zero-shot (no training)", ("eval", "zeroshot", None), 0),
    ("EV-CLIP context prompts, clip-mid z (from cache)",
     ("train", "ev_clip", {"prompts": "context", "z_block": BLOCK}), 100),
    ("EV-CLIP context prompts, clip-trend z (from cache)",
     ("train", "ev_clip", {"prompts": "context", "z_block": BLOCK, "aux_encoder": "clip-trend"}), 100),
    ("EV-CLIP mask prompts (through the backbone)", ("train", "ev_clip", {"prompts": "mask", "z_block": BLOCK}), 4),
    (f"EZ-CLIP from block {BLOCK} (through the backbone)", ("train", "ez_clip", {"from_block": BLOCK}), 12),
    (f"EZ-CLIP from block {BLOCK}, no motion loss", ("train", "ez_clip", {"from_block": BLOCK, "motion_weight": 0.0}),
     12),
]
B2N_LR = 3e-3
# Where benchmarks/b2n_select.py writes the base-to-novel choices it settles on its selection set
# (clips per class, each row's epochs, the variant b2n_clips.py shows per method); without the
# file, the values above (chosen before issue 23 after seeing test results), and the tables say so.
SELECTION_FILE = Path(__file__).resolve().parent / "b2n_selection.json"
B2N_VIDEOS_PER_CLASS = 16
B2N_BEST = {"EV-CLIP": "EV-CLIP context prompts, clip-trend z (from cache)",
            "EZ-CLIP": f"EZ-CLIP from block {BLOCK}, no motion loss"}


def weights_id(pretrained: str, seed: int = 0) -> str:
    """Which encoder weights a selection was settled with: ``toy:<sha256 prefix>`` of the file
    ``--pretrained toy`` loads (new toy weights call for a new selection), ``random:<seed>``, else
    ``pretrained`` as given."""
    if pretrained == "toy":
        from cachekit.toy.files import toy_weights
        from clipcache.stores import file_sha256

        return f"toy:{file_sha256(toy_weights())[:16]}"
    return f"random:{seed}" if pretrained == "random" else pretrained


def b2n_choices(path: Path | None = None, pretrained: str = "toy", seed: int = 0) -> dict:
    """The base-to-novel choices the measurement uses: ``videos_per_class``, ``epochs`` (row label
    -> epochs), ``best`` (method -> row label), ``settled`` (a line saying where they come from;
    it says so when the file was settled with other encoder weights than ``pretrained``)."""
    path = SELECTION_FILE if path is None else Path(path)
    if path.is_file():
        doc = json.loads(path.read_text())
        settled = (f"settled on a selection set drawn with seed {doc['seed']} ({doc['pseudo_split']}; "
                   f"benchmarks/b2n_select.py, {doc.get('date', '?')}), then measured once here")
        here = weights_id(pretrained, seed)
        if doc.get("weights") != here:
            settled = (f"settled on a selection set with OTHER encoder weights ({doc.get('weights', '?')}; this run: "
                       f"{here}): re-run benchmarks/b2n_select.py before these numbers count")
            print(f"warning: {path.name} {settled}", file=sys.stderr, flush=True)
        return {"videos_per_class": int(doc["videos_per_class"]), "epochs": dict(doc["epochs"]),
                "best": dict(doc["best"]), "settled": settled}
    return {"videos_per_class": B2N_VIDEOS_PER_CLASS, "epochs": {label: e for label, _, e in B2N_ROWS},
            "best": dict(B2N_BEST),
            "settled": "NOT settled on a selection set (no benchmarks/b2n_selection.json: run benchmarks/"
                       "b2n_select.py first); the defaults were chosen after seeing test results"}


# Rows run under every challenge; the others only on clean clips (the goals are stated there).
CHALLENGE_ROWS = {"Prototypes + mean pooling (no training)", "Prototypes + OTAM (no training)",
                  "MA-FSAR TPCM, α = 0.75 (frozen encoder; paper: spatial data sets)", "CLIP-FSAR head (frozen encoder)"}


def run_name(method: str, overrides: dict) -> str:
    return "-".join([method] + [f"{k}{v}" for k, v in overrides.items()])


def cell(r) -> list:
    return [round(r.accuracy, 1), round(r.ci95, 1), round(r.video_ci95 if r.video_ci95 is not None else r.ci95, 1)]


def benchmark_config(videos_per_class: int, challenge: str = "none", seed: int = 0):
    """The benchmark's :class:`SynthConfig`: every object x motion, 16 frames at 112 px, cluttered
    scenes, 50/25/25 class splits. accuracy.py and b2n_clips.py draw their sets from it."""
    from cachekit.synth import DEFAULT_OBJECTS, SynthConfig

    return SynthConfig(objects=DEFAULT_OBJECTS, videos_per_class=videos_per_class, frames=16, size=112,
                       challenge=challenge, seed=seed, splits=(0.5, 0.25, 0.25), clutter="full")


def run(challenges=CHALLENGES, videos_per_class: int = 8, episodes: int = 1000, train_episodes: int = 600,
        model: str | None = None, pretrained: str = "toy", work: str | None = None, seed: int = 0,
        epoch_scale: float = 1.0, b2n_videos_per_class: int | None = None, choices: dict | None = None) -> dict:
    """``b2n_videos_per_class``: clips per class of the base-to-novel part (its own synthetic set,
    clean clips; None: what ``choices`` says). ``choices``: :func:`b2n_choices` (default: the
    selection file, else the old defaults)."""
    from cachekit.demo import demo_model_config
    from cachekit.encoder import EncoderConfig
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.probes import reversal_episodes, zeroshot_groups
    from cachekit.synth import DEFAULT_OBJECTS, SynthConfig, synth_dataset
    from cachekit.train import TrainConfig, train
    from cachekit.video import SamplerConfig

    toy = pretrained == "toy"
    root = Path(work or tempfile.mkdtemp(prefix="clipcache-acc-"))
    if model is None and not toy:
        model = demo_model_config()
    enc = EncoderConfig(model=model or "ViT-B-32", pretrained=pretrained, seed=seed)
    weights = None if pretrained == "random" else pretrained
    choices = choices or b2n_choices(pretrained=pretrained, seed=seed)
    res: dict = {"model": model or "toy", "pretrained": pretrained, "probes": {}, "pairs": {}, "episodic": {},
                 "b2n": {}, "seconds": {}, "b2n_settled": choices["settled"]}
    for ch in challenges:
        t0 = time.perf_counter()
        data = root / ch
        syn = synth_dataset(data, benchmark_config(videos_per_class, ch, seed))
        meta = json.loads((data / "synth.json").read_text())
        res["classes"] = len(syn.classes)
        ep_store, fsar = str(root / f"{ch}.zarr"), data / "splits" / "clip_fsar"
        sampler = SamplerConfig(frames=8, seed=seed)
        extract(collect_inputs([str(fsar / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                               video_root=str(data), class_names=str(fsar)),
                ep_store, ExtractConfig(encoder=enc, sampler=sampler, templates="ma_fsar16"),
                progress=False)
        clean = ch == "none"

        if clean:  # zero-shot probes: groups of classes that differ in one factor only
            for kind, prefix in (("object", "motion_"), ("motion", "object_")):
                p = zeroshot_groups(ep_store, sorted((data / "splits" / "groups").glob(f"{prefix}*.txt")), data, seed)
                res["probes"][kind] = p.cell() + [p.groups, round(p.chance, 1)]
                print(f"zero-shot, differ only by {kind}: {res['probes'][kind]}", file=sys.stderr, flush=True)
            # time-reversed pairs: on the benchmark's cluttered clips, and on the same pairs drawn on a
            # plain background without distractors (what the scene costs temporal alignment)
            pair_classes = tuple(c for p in meta["reversal_pairs"] for c in p)
            plain = root / f"{ch}-plain"
            synth_dataset(plain, SynthConfig(objects=DEFAULT_OBJECTS, classes=pair_classes,
                                             videos_per_class=videos_per_class, frames=16, size=112, challenge=ch,
                                             seed=seed, clutter="low"))
            plain_store = str(root / f"{ch}-plain.zarr")
            extract(collect_inputs([str(plain / "videos.csv")], video_root=str(plain)), plain_store,
                    ExtractConfig(encoder=enc, sampler=sampler), progress=False)
            for scene, store in (("cluttered scenes (the benchmark's clips)", ep_store),
                                 ("plain background, no distractors", plain_store)):
                ep_file = root / f"{ch}-{'plain' if store == plain_store else 'full'}-pairs.json"
                res["pairs_count"] = reversal_episodes(store, meta["reversal_pairs"], episodes, seed, ep_file)
                for metric, label in PAIR_ROWS.items():
                    r = evaluate(store, EvalConfig(protocol="episodic", method="proto", metric=metric,
                                                   episodes_file=str(ep_file)))
                    res["pairs"].setdefault(label, {})[scene] = cell(r)
                    print(f"reversal pairs, {scene}, proto {metric}: {cell(r)}", file=sys.stderr, flush=True)

        for label, how in EPISODIC_ROWS:
            if not clean and label not in CHALLENGE_ROWS:
                continue
            if how[0] == "eval":
                r = evaluate(ep_store, EvalConfig(protocol="episodic", method=how[1], metric=how[2], ways=5,
                                                  shots=1, episodes=episodes, seed=seed))
            else:
                run_dir = str(root / "runs" / ch / run_name(how[1], how[2]))
                train(ep_store, run_dir, how[1], dict(how[2]),
                      TrainConfig(protocol="episodic", episodes=train_episodes, val_episodes=200, lr=1e-3, seed=seed,
                                  queries=min(5, videos_per_class - 1)),
                      resume=True, progress=False, pretrained=weights)
                r = evaluate(ep_store, EvalConfig(protocol="episodic", run_dir=run_dir, ways=5, shots=1,
                                                  episodes=episodes, seed=seed))
            res["episodic"].setdefault(label, {})[ch] = cell(r)
            print(f"{ch} {label}: {cell(r)}", file=sys.stderr, flush=True)

        if clean:  # base-to-novel over unseen compositions
            b2n_vpc = b2n_videos_per_class or choices["videos_per_class"]
            b2n_data = data
            if b2n_vpc != videos_per_class:
                b2n_data = root / f"{ch}-b2n"
                synth_dataset(b2n_data, benchmark_config(b2n_vpc, ch, seed))
            res["b2n_videos_per_class"] = b2n_vpc
            b2n_meta = json.loads((b2n_data / "synth.json").read_text())
            res["b2n_chance"] = factor_chance(b2n_meta["compositions"], b2n_meta["b2n"]["novel"])
            rows = [(label, how, choices["epochs"].get(label, e)) for label, how, e in B2N_ROWS]
            res["b2n_epochs"] = {label: max(1, round(e * epoch_scale)) if e else 0 for label, _, e in rows}
            res["b2n"] = base_to_novel(b2n_data, str(root / f"{ch}-b2n.zarr"), enc, sampler, rows,
                                       root / "runs" / ch, seed, weights, epoch_scale, pixels=True)
        res["seconds"][ch] = round(time.perf_counter() - t0, 1)
    return res


def base_to_novel(data: Path, store: str, enc, sampler, rows, run_root: Path, seed: int, weights: str | None,
                  epoch_scale: float = 1.0, pixels: bool = False, prefix: str = "b2n ",
                  novel: list[str] | None = None) -> dict:
    """Extract the base-to-novel split of the synthetic data set ``data`` into ``store`` and measure
    ``rows`` ((label, how, epochs), as :data:`B2N_ROWS`): label -> :meth:`EvalResult.base_novel` cells.
    ``pixels``: cache frames as pixels too (the rows that train through the backbone from pixels).
    ``novel``: the novel classes of its ``splits/b2n`` lists (default: synth.json's)."""
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.train import TrainConfig, train

    b2n = data / "splits" / "b2n"
    meta = json.loads((data / "synth.json").read_text())
    novel = meta["b2n"]["novel"] if novel is None else novel
    extract(collect_inputs([str(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")],
                           video_root=str(data), class_names=str(b2n / "labels.csv")),
            store, ExtractConfig(encoder=enc, sampler=sampler, tokens_at=(BLOCK,), pixels=pixels,
                                 templates="ma_fsar16"), progress=False)
    out = {}
    for label, how, row_epochs in rows:
        if how[0] == "eval":
            r = evaluate(store, EvalConfig(protocol="base2novel", method=how[1], seed=seed))
        else:
            run_dir = str(run_root / ("b2n-" + run_name(how[1], how[2]) + f"-e{row_epochs}"))
            train(store, run_dir, how[1], dict(how[2]),
                  TrainConfig(protocol="base2novel", epochs=max(1, round(row_epochs * epoch_scale)),
                              batch_size=16, lr=B2N_LR, seed=seed, val_episodes=0),
                  resume=True, progress=False, pretrained=weights)
            r = evaluate(store, EvalConfig(protocol="base2novel", run_dir=run_dir, seed=seed))
        out[label] = {**r.base_novel(1), **factor_hits(r, meta["compositions"], novel)}
        print(f"{prefix}{label}: {out[label]}", file=sys.stderr, flush=True)
    return out


def factor_hits(r, compositions: dict, classes: list[str]) -> dict:
    """Of the videos of ``classes`` (the novel compositions), the percent whose predicted class has
    the right object and the right motion, read off ``r``'s confusion matrix: where a method's
    gain comes from. ``compositions``: class name -> (object, motion), as synth.json lists them."""
    names = list(r.class_names)
    obj = np.array([compositions[n][0] for n in names])
    motion = np.array([compositions[n][1] for n in names])
    wanted = set(classes)
    rows = [i for i, n in enumerate(names) if n in wanted]
    total = max(int(r.confusion[rows].sum()), 1)
    hits = {"right object": sum(int(r.confusion[i][obj == obj[i]].sum()) for i in rows),
            "right motion": sum(int(r.confusion[i][motion == motion[i]].sum()) for i in rows)}
    return {k: round(100.0 * v / total, 1) for k, v in hits.items()}


def factor_chance(compositions: dict, classes: list[str]) -> dict:
    """What :func:`factor_hits` gives a uniform random guess among ``classes``."""
    chance = {}
    for k, i in (("right object", 0), ("right motion", 1)):
        counts = np.unique([compositions[c][i] for c in classes], return_counts=True)[1]
        chance[k] = round(100.0 * float((counts ** 2).sum()) / len(classes) ** 2, 1)
    return chance


def _cell(v: list) -> str:
    """accuracy ± episode interval (the papers' 1.96·s/√E) [± video-level interval]."""
    return f"{v[0]:.1f} ± {v[1]:.1f}" + (f" [± {v[2]:.1f}]" if len(v) > 2 else "")


def _table(title: str, rows: dict, first: str = "method") -> list[str]:
    """A markdown table of ``rows`` (label -> column -> cell: a measured list or a plain value),
    columns in first-seen order."""
    cols = list(dict.fromkeys(c for row in rows.values() for c in row))
    fmt = lambda v: _cell(v) if isinstance(v, list) else str(v)  # noqa: E731
    out = [title + "\n", f"| {first} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    out += [f"| {label} | " + " | ".join(fmt(row[c]) if c in row else "–" for c in cols) + " |"
            for label, row in rows.items()]
    return out + [""]


def encoder_note(model: str, pretrained: str, seed: int = 0) -> str:
    """What every table of these scripts says about its encoder: the caveat of toy and random
    weights (:mod:`cachekit.caveat`, the line every clipcache output carries), else the model."""
    from cachekit.caveat import encoder_caveat

    weights = "toy" if pretrained == "toy" else (f"random:{seed}" if pretrained == "random" else pretrained)
    return encoder_caveat({"weights": weights}) or f"{model} / {pretrained}"


def markdown(res: dict) -> str:
    out = []
    out.append(f"Encoder: {encoder_note(res['model'], res['pretrained'])}. {res.get('classes', '?')} classes "
               "(object x motion).\n")
    if res["probes"]:
        out += _table("**Frozen zero-shot probes (clean clips)**",
                      {kind: {"groups": v[3], "chance": f"{v[4]:.1f}", "accuracy": v[:3]}
                       for kind, v in res["probes"].items()}, first="classes in a group differ only by")
    if res["pairs"]:
        out += _table(f"**2-way 1-shot episodes of time-reversed pairs ({res.get('pairs_count')} pairs, same "
                      "episodes, chance 50%)**", res["pairs"])
    if res["episodic"]:
        out += _table("**5-way 1-shot episodes on the test classes (chance 20%; same episodes per column)**",
                      res["episodic"])
    if res["b2n"]:
        epochs = res.get("b2n_epochs", {})
        out.append(f"Base-to-novel choices ({res.get('b2n_videos_per_class', '?')} clips per class; epochs: "
                   f"{', '.join(f'{k} {v}' for k, v in epochs.items() if v)}): {res.get('b2n_settled', '?')}.\n")
        out += _table(f"**Base-to-novel over unseen compositions (trained on base compositions; clean clips, "
                      f"{res.get('b2n_videos_per_class', '?')} per class; a random guess has the right object "
                      f"{res.get('b2n_chance', {}).get('right object', '?')}%, the right motion "
                      f"{res.get('b2n_chance', {}).get('right motion', '?')}%)**",
                      {label: {"base": v["base"], "novel": v["novel"], "harmonic mean": v["hm"],
                               **{f"novel, {k}": v[k] for k in ("right object", "right motion") if k in v}}
                       for label, v in res["b2n"].items()})
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--challenges", default=",".join(CHALLENGES))
    ap.add_argument("--videos-per-class", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--train-episodes", type=int, default=600)
    ap.add_argument("--b2n-videos-per-class", type=int, default=None,
                    help="clips per class of the base-to-novel part (default: b2n_selection.json's, else 16)")
    ap.add_argument("--epoch-scale", type=float, default=1.0, help="scale every base-to-novel row's epochs")
    ap.add_argument("--selection", default=None, help="the base-to-novel choices to read (default: "
                                                      "benchmarks/b2n_selection.json, written by b2n_select.py)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None)
    ap.add_argument("--quick", action="store_true", help="clean clips only, fewer episodes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.selection and not Path(a.selection).is_file():
        ap.error(f"--selection {a.selection}: no such file")
    chs = tuple(c for c in a.challenges.split(",") if c)
    if a.quick:
        chs, a.episodes, a.train_episodes, a.videos_per_class, a.epoch_scale = ("none",), 300, 200, 4, 0.1
        a.b2n_videos_per_class = 4
    res = run(chs, a.videos_per_class, a.episodes, a.train_episodes, a.model, a.pretrained, a.work,
              epoch_scale=a.epoch_scale, b2n_videos_per_class=a.b2n_videos_per_class,
              choices=b2n_choices(a.selection, a.pretrained))
    print(json.dumps(res) if a.json else markdown(res))


if __name__ == "__main__":
    main()

"""Accuracy of every method on the compositional synthetic benchmark, with the toy CLIP by default.

Classes are an object x a motion ("moving a red square from left to right"); the toy encoder was
pretrained on still images, so it knows the objects' words and looks but no motion. Per visual
challenge: synth the clips once, extract two stores (the class-disjoint few-shot split, and the
base-to-novel split over unseen compositions), then measure:

* frozen zero-shot among classes that differ only by object, and only by motion;
* prototypes with mean pooling against OTAM on 2-way episodes of time-reversed pairs (same episodes);
* 5-way 1-shot on the test classes: the no-training baselines, MA-FSAR's TPCM and the CLIP-FSAR head;
* base-to-novel: frozen zero-shot against EV-CLIP (context, mask) and EZ-CLIP (with and without its
  motion loss), trained on the base compositions.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHALLENGES = ("none", "dark", "shake", "blur", "occlusion", "mixed")
BLOCK = 4  # cached tokens entering this block feed EV-CLIP's z and EZ-CLIP's start (toy CLIP: 6 blocks)

EPISODIC_ROWS = [
    ("Prototypes + mean pooling (no training)", ("eval", "proto", "mean")),
    ("Prototypes + OTAM (no training)", ("eval", "proto", "otam")),
    ("Frozen CLIP zero-shot, 5-way (no training)", ("eval", "zeroshot", None)),
    ("MA-FSAR (TPCM only, frozen encoder)", ("train", "ma_fsar", {"modules": "tpcm"})),
    ("CLIP-FSAR head (frozen encoder)", ("train", "clip_fsar", {})),
]
# Base-to-novel rows; trained rows run ``epochs`` times the --epochs budget over the base videos
# (a from-cache step costs milliseconds, a backbone step a forward and backward of the encoder).
CACHE_EPOCHS = 8  # x --epochs for the from-cache rows
B2N_ROWS = [
    ("Frozen CLIP zero-shot (no training)", ("eval", "zeroshot", None)),
    ("EV-CLIP context prompts (from cache)", ("train", "ev_clip", {"prompts": "context", "z_block": BLOCK})),
    ("EV-CLIP mask prompts (through the backbone)", ("train", "ev_clip", {"prompts": "mask", "z_block": BLOCK})),
    (f"EZ-CLIP from block {BLOCK} (through the backbone)", ("train", "ez_clip", {"from_block": BLOCK})),
    (f"EZ-CLIP from block {BLOCK}, no motion loss", ("train", "ez_clip", {"from_block": BLOCK,
                                                                           "motion_weight": 0.0})),
]
# Rows run under every challenge; the others only on clean clips (the goals are stated there).
CHALLENGE_ROWS = {"Prototypes + mean pooling (no training)", "Prototypes + OTAM (no training)",
                  "MA-FSAR (TPCM only, frozen encoder)", "CLIP-FSAR head (frozen encoder)"}


def cell(r) -> list:
    return [round(r.accuracy, 1), round(r.ci95, 1), round(r.video_ci95 if r.video_ci95 is not None else r.ci95, 1)]


def run(challenges=CHALLENGES, videos_per_class: int = 6, episodes: int = 1000, train_episodes: int = 600,
        model: str | None = None, pretrained: str = "toy", work: str | None = None, seed: int = 0,
        epochs: int = 4) -> dict:
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
    res: dict = {"model": model or "toy", "pretrained": pretrained, "probes": {}, "pairs": {}, "episodic": {},
                 "b2n": {}, "seconds": {}}
    for ch in challenges:
        t0 = time.perf_counter()
        data = root / ch
        syn = synth_dataset(data, SynthConfig(objects=DEFAULT_OBJECTS, videos_per_class=videos_per_class,
                                              frames=16, size=112, challenge=ch, seed=seed,
                                              splits=(0.5, 0.25, 0.25), clutter="full"))
        meta = json.loads((data / "synth.json").read_text())
        res["classes"] = len(syn.classes)
        ep_store, b2n_store = str(root / f"{ch}.zarr"), str(root / f"{ch}-b2n.zarr")
        fsar, b2n = data / "splits" / "clip_fsar", data / "splits" / "b2n"
        sampler = SamplerConfig(frames=8, seed=seed)
        extract(collect_inputs([str(fsar / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                               video_root=str(data), class_names=str(fsar)),
                ep_store, ExtractConfig(encoder=enc, sampler=sampler, tokens_at=(BLOCK,), templates="ma_fsar16"),
                progress=False)
        clean = ch == "none"

        if clean:  # zero-shot probes: groups of classes that differ in one factor only
            for kind, prefix in (("object", "motion_"), ("motion", "object_")):
                p = zeroshot_groups(ep_store, sorted((data / "splits" / "groups").glob(f"{prefix}*.txt")), data, seed)
                res["probes"][kind] = p.cell() + [p.groups, round(p.chance, 1)]
                print(f"zero-shot, differ only by {kind}: {res['probes'][kind]}", file=sys.stderr, flush=True)
            ep_file = root / f"{ch}-pairs.json"
            n_pairs = reversal_episodes(ep_store, meta["reversal_pairs"], episodes, seed, ep_file)
            res["pairs_count"] = n_pairs
            for metric in ("mean", "otam"):
                r = evaluate(ep_store, EvalConfig(protocol="episodic", method="proto", metric=metric,
                                                  episodes_file=str(ep_file)))
                res["pairs"].setdefault(f"Prototypes + {metric.upper() if metric == 'otam' else 'mean pooling'}",
                                        {})[ch] = cell(r)
                print(f"reversal pairs, proto {metric}: {cell(r)}", file=sys.stderr, flush=True)

        for label, how in EPISODIC_ROWS:
            if not clean and label not in CHALLENGE_ROWS:
                continue
            if how[0] == "eval":
                r = evaluate(ep_store, EvalConfig(protocol="episodic", method=how[1], metric=how[2], ways=5,
                                                  shots=1, episodes=episodes, seed=seed))
            else:
                run_dir = str(root / "runs" / ch / how[1])
                train(ep_store, run_dir, how[1], dict(how[2]),
                      TrainConfig(protocol="episodic", episodes=train_episodes, val_episodes=200, lr=1e-3, seed=seed,
                                  queries=min(5, videos_per_class - 1)),
                      resume=True, progress=False, pretrained=weights)
                r = evaluate(ep_store, EvalConfig(protocol="episodic", run_dir=run_dir, ways=5, shots=1,
                                                  episodes=episodes, seed=seed))
            res["episodic"].setdefault(label, {})[ch] = cell(r)
            print(f"{ch} {label}: {cell(r)}", file=sys.stderr, flush=True)

        if clean:  # base-to-novel over unseen compositions
            extract(collect_inputs([str(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")],
                                   video_root=str(data), class_names=str(b2n / "labels.csv")),
                    b2n_store, ExtractConfig(encoder=enc, sampler=sampler, tokens_at=(BLOCK,), pixels=True,
                                             templates="ma_fsar16"), progress=False)
            for label, how in B2N_ROWS:
                if how[0] == "eval":
                    r = evaluate(b2n_store, EvalConfig(protocol="base2novel", method=how[1], seed=seed))
                else:
                    run_dir = str(root / "runs" / ch / ("b2n-" + "-".join([how[1]] + [f"{k}{v}" for k, v in
                                                                                    how[2].items()])))
                    from_cache = how[1] == "ev_clip" and how[2].get("prompts") == "context"
                    train(b2n_store, run_dir, how[1], dict(how[2]),
                          TrainConfig(protocol="base2novel", epochs=epochs * (CACHE_EPOCHS if from_cache else 1),
                                      batch_size=16, lr=1e-3, seed=seed,
                                      val_episodes=0), resume=True, progress=False, pretrained=weights)
                    r = evaluate(b2n_store, EvalConfig(protocol="base2novel", run_dir=run_dir, seed=seed))
                x = r.extra
                res["b2n"][label] = {"base": [round(x["base"], 1), round(x["base_ci95"], 1)],
                                     "novel": [round(x["novel"], 1), round(x["novel_ci95"], 1)],
                                     "hm": [round(r.accuracy, 1), round(r.ci95, 1)]}
                print(f"b2n {label}: {res['b2n'][label]}", file=sys.stderr, flush=True)
        res["seconds"][ch] = round(time.perf_counter() - t0, 1)
    return res


def _cell(v: list) -> str:
    """accuracy ± episode interval (the papers' 1.96·s/√E) [± video-level interval]."""
    return f"{v[0]:.1f} ± {v[1]:.1f}" + (f" [± {v[2]:.1f}]" if len(v) > 2 else "")


def markdown(res: dict) -> str:
    out = []
    enc = "the toy CLIP (pretrained by clipcache on drawn still images; not real CLIP)" \
        if res["pretrained"] == "toy" else f"{res['model']} / {res['pretrained']}"
    out.append(f"Encoder: {enc}. {res.get('classes', '?')} classes (object x motion).\n")
    if res["probes"]:
        out.append("**Frozen zero-shot probes (clean clips)**\n")
        out.append("| classes in a group differ only by | groups | chance | accuracy |")
        out.append("|---|---|---|---|")
        for kind, v in res["probes"].items():
            out.append(f"| {kind} | {v[3]} | {v[4]:.1f} | {_cell(v[:3])} |")
        out.append("")
    if res["pairs"]:
        out.append(f"**2-way 1-shot episodes of time-reversed pairs ({res.get('pairs_count')} pairs, same "
                   "episodes, chance 50%)**\n")
        out.append("| method | accuracy |")
        out.append("|---|---|")
        for label, row in res["pairs"].items():
            out.append(f"| {label} | {_cell(row['none'])} |")
        out.append("")
    chs = list(next(iter(res["episodic"].values())).keys()) if res["episodic"] else []
    if chs:
        out.append("**5-way 1-shot episodes on the test classes (chance 20%; same episodes per column)**\n")
        out.append("| method | " + " | ".join(chs) + " |")
        out.append("|---|" + "---|" * len(chs))
        for label, row in res["episodic"].items():
            out.append(f"| {label} | " + " | ".join(_cell(row[c]) if c in row else "–" for c in chs) + " |")
        out.append("")
    if res["b2n"]:
        out.append("**Base-to-novel over unseen compositions (trained on base compositions; clean clips)**\n")
        out.append("| method | base | novel | harmonic mean |")
        out.append("|---|---|---|---|")
        for label, v in res["b2n"].items():
            out.append(f"| {label} | {_cell(v['base'])} | {_cell(v['novel'])} | {_cell(v['hm'])} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--challenges", default=",".join(CHALLENGES))
    ap.add_argument("--videos-per-class", type=int, default=6)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--train-episodes", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None)
    ap.add_argument("--quick", action="store_true", help="clean clips only, fewer episodes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    chs = tuple(c for c in a.challenges.split(",") if c)
    if a.quick:
        chs, a.episodes, a.train_episodes, a.videos_per_class = ("none",), 300, 200, 4
    res = run(chs, a.videos_per_class, a.episodes, a.train_episodes, a.model, a.pretrained, a.work,
              epochs=a.epochs)
    print(json.dumps(res) if a.json else markdown(res))


if __name__ == "__main__":
    main()

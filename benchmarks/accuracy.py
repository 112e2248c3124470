"""Accuracy of every method on the synthetic motion benchmark, per visual challenge.

For each challenge: synth a small data set (class-disjoint train/val/test classes), extract it
once with the embedded small model (random weights unless --model/--pretrained say otherwise),
then evaluate the no-training baselines, train and evaluate the from-cache methods, and train and
evaluate one backbone method. Episodic (5-way 1-shot) and all-way numbers go in separate tables:
the protocols are never mixed. With random weights the numbers show what each pipeline learns
from these clips, not what CLIP knows.
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

# (label, how): how = ("eval", method, metric) for no training, ("train", method, config overrides)
EPISODIC_ROWS = [
    ("Prototypes + mean pooling (no training)", ("eval", "proto", "mean")),
    ("Prototypes + OTAM (no training)", ("eval", "proto", "otam")),
    ("Frozen CLIP zero-shot, 5-way (no training)", ("eval", "zeroshot", None)),
    ("MA-FSAR (TPCM only, frozen encoder)", ("train", "ma_fsar", {"modules": "tpcm", "alpha": None})),
    ("CLIP-FSAR head (frozen encoder)", ("train", "clip_fsar", {})),
]
# zero-shot transfer: trained on the train classes (--protocol zeroshot), scored on all the
# unseen test classes at once (the linear probe needs the test classes' training videos: no row)
ZEROSHOT_ROWS = [
    ("Frozen CLIP zero-shot (no training)", ("eval", "zeroshot", None)),
    ("EV-CLIP context prompts (from cache)", ("train", "ev_clip", {"prompts": "context"})),
    ("EZ-CLIP from block 6 (through the backbone)", ("train", "ez_clip", {"from_block": 6})),
]


def run(challenges=CHALLENGES, videos_per_class: int = 8, episodes: int = 1000, train_episodes: int = 400,
        model: str | None = None, pretrained: str = "random", work: str | None = None, seed: int = 0) -> dict:
    from cachekit.demo import demo_model_config
    from cachekit.encoder import EncoderConfig
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import SynthConfig, synth_dataset
    from cachekit.train import TrainConfig, train
    from cachekit.video import SamplerConfig

    root = Path(work or tempfile.mkdtemp(prefix="clipcache-acc-"))
    model = model or demo_model_config()
    results: dict = {"model": model, "pretrained": pretrained, "episodic": {}, "zeroshot": {}}
    for ch in challenges:
        t0 = time.perf_counter()
        data = root / ch
        syn = synth_dataset(data, SynthConfig(videos_per_class=videos_per_class, frames=16, size=112,
                                              challenge=ch, seed=seed, splits=(0.5, 0.25, 0.25),
                                              clutter="low" if pretrained == "random" else "full"))
        store = str(root / f"{ch}.zarr")
        splits = data / "splits" / "clip_fsar"
        extract(collect_inputs([str(splits / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                               video_root=str(data), class_names=str(splits)),
                store, ExtractConfig(encoder=EncoderConfig(model=model, pretrained=pretrained, seed=seed),
                                     sampler=SamplerConfig(frames=8, seed=seed), tokens_at=(6,),
                                     templates="ma_fsar16"), progress=False)
        for protocol, rows in (("episodic", EPISODIC_ROWS), ("zeroshot", ZEROSHOT_ROWS)):
            for label, how in rows:
                if how[0] == "eval":
                    r = evaluate(store, EvalConfig(protocol=protocol, method=how[1], metric=how[2], ways=5,
                                                   shots=1, episodes=episodes, seed=seed))
                else:
                    overrides = dict(how[2])
                    if "alpha" in overrides:  # MA-FSAR's text fusion: noise with random text, 0.25 on temporal data
                        overrides["alpha"] = 0.0 if pretrained == "random" else 0.25
                    run_dir = str(root / "runs" / ch / f"{how[1]}-{protocol}")
                    tcfg = (TrainConfig(protocol="episodic", episodes=train_episodes, val_episodes=200, lr=1e-3,
                                        seed=seed) if protocol == "episodic" else
                            TrainConfig(protocol="zeroshot", epochs=5, batch_size=16, lr=1e-3, seed=seed))
                    train(store, run_dir, how[1], overrides, tcfg, resume=True, progress=False,
                          pretrained=None if pretrained == "random" else pretrained)
                    r = evaluate(store, EvalConfig(protocol=protocol, run_dir=run_dir, ways=5, shots=1,
                                                   episodes=episodes, seed=seed))
                results[protocol].setdefault(label, {})[ch] = [round(r.accuracy, 1), round(r.ci95, 1),
                                                              round(r.video_ci95, 1)]
        results.setdefault("seconds", {})[ch] = round(time.perf_counter() - t0, 1)
        results.setdefault("classes", len(syn.classes))
    return results


def _cell(v: list) -> str:
    """accuracy ± episode interval (the papers' 1.96·s/√E) [± video-level interval]."""
    return f"{v[0]:.1f} ± {v[1]:.1f}" + (f" [± {v[2]:.1f}]" if len(v) > 2 else "")


def markdown(res: dict) -> str:
    chs = list(next(iter(res["episodic"].values())).keys()) if res["episodic"] else []
    out = []
    for protocol, title in (("episodic", "5-way 1-shot episodes on the test classes (chance 20%)"),
                            ("zeroshot", "zero-shot on the 5 unseen test classes, all at once (chance 20%; "
                                         "methods trained on the train classes)")):
        out.append(f"**{title}**\n")
        out.append("| method | " + " | ".join(chs) + " |")
        out.append("|---|" + "---|" * len(chs))
        for label, row in res[protocol].items():
            out.append(f"| {label} | " + " | ".join(_cell(row[c]) for c in chs) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--challenges", default=",".join(CHALLENGES))
    ap.add_argument("--videos-per-class", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--train-episodes", type=int, default=400)
    ap.add_argument("--model", default=None)
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--work", default=None)
    ap.add_argument("--quick", action="store_true", help="two challenges, fewer episodes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    chs = tuple(c for c in a.challenges.split(",") if c)
    if a.quick:
        chs, a.episodes, a.train_episodes, a.videos_per_class = chs[:2], 300, 100, 6
    res = run(chs, a.videos_per_class, a.episodes, a.train_episodes, a.model, a.pretrained, a.work)
    print(json.dumps(res) if a.json else markdown(res))


if __name__ == "__main__":
    main()

"""clipcache used from Python: synth -> extract -> baseline -> train from the cache -> evaluate.

Runs as is (the toy CLIP that ships with clipcache, 2-3 minutes on 2 CPU cores, seconds when run again
into the same OUT_DIR, which reuses its store and run; its numbers say
nothing about real CLIP on real videos):

    python examples/library.py [OUT_DIR]

With real weights, pass them to EncoderConfig (model="ViT-B-32", pretrained="/path/weights.safetensors"
or "local-dir:/path"). Every object below is a plain dataclass or nn.Module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cachekit.cache import FeatureCache
from cachekit.encoder import EncoderConfig
from cachekit.evaluate import EvalConfig, evaluate
from cachekit.extract import ExtractConfig, extract
from cachekit.inputs import collect_inputs
from cachekit.metrics import otam_distance
from cachekit.synth import DEFAULT_OBJECTS, SynthConfig, synth_dataset
from cachekit.train import TrainConfig, train
from cachekit.video import SamplerConfig


def main(out: Path) -> None:
    # 1. A labelled data set with class-disjoint CLIP-FSAR split files (or point at your own).
    # Classes are an object x a motion ("moving a red square from left to right").
    data = synth_dataset(out / "synth", SynthConfig(objects=DEFAULT_OBJECTS[:2], videos_per_class=4, frames=16,
                                                    size=112, splits=(0.5, 0.25, 0.25)))
    splits = data.out_dir / "splits" / "clip_fsar"

    # 2. One pass of the frozen encoder; resumable, crash-safe, refuses a different config.
    inputs = collect_inputs([str(splits / f"{s}_few_shot.txt") for s in ("train", "val", "test")],
                            video_root=str(data.out_dir), class_names=str(splits))
    cfg = ExtractConfig(encoder=EncoderConfig(pretrained="toy"),
                        sampler=SamplerConfig(frames=8), templates="ma_fsar16")
    summary = extract(inputs, str(out / "cache.zarr"), cfg, progress=False)
    print(f"extracted {summary.extracted} videos, {len(summary.failed)} failed")

    # 3. Arrays with named axes, straight from the store.
    with FeatureCache(out / "cache.zarr") as cache:
        emb = cache.emb()  # [V, T, D']
        text = cache.text()  # [C, P, D'] one row per class, one column per template
        print(f"{len(cache)} videos, emb {emb.shape}, text {text.shape}, splits {sorted(cache.splits())}")
        import torch

        d = otam_distance(torch.from_numpy(emb[:3]), torch.from_numpy(emb[:3]))  # [3, 3]
        print("OTAM distances of the first three videos:\n", d.numpy().round(3))

    # 4. The no-training baseline, then a method trained from the cache, on the same episodes.
    base = evaluate(out / "cache.zarr", EvalConfig(protocol="episodic", method="proto", metric="otam", ways=5,
                                                   shots=1, episodes=500, out_dir=out / "eval" / "proto"))
    # resume=True: run again, the script reuses the finished run (or finishes an interrupted one)
    run = train(str(out / "cache.zarr"), str(out / "runs" / "clip_fsar"), "clip_fsar", {},
                TrainConfig(protocol="episodic", queries=1, episodes=200, val_episodes=50, lr=1e-3), progress=False,
                resume=True)
    trained = evaluate(out / "cache.zarr", EvalConfig(protocol="episodic", run_dir=run.run_dir,
                                                      episodes_file=out / "eval" / "proto" / "episodes.json"))
    print(f"prototypes+OTAM {base.accuracy:.1f} ± {base.ci95:.1f} %; {trained.method} {trained.accuracy:.1f} "
          f"± {trained.ci95:.1f} % ({run.trainable_params:,} trainable parameters; TOY encoder)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "library-example-out"))

"""Base-to-novel over unseen compositions as the clips per class grow (the toy CLIP by default).

`accuracy.py` trains on about 6 clips per base composition, and every trained row memorises them
(its training loss falls far, held-out videos barely move). This script repeats the base-to-novel
part alone at other clip counts: frozen zero-shot, EZ-CLIP from block 4 without its motion loss
(the best row there) and EV-CLIP's context prompt with the clip-trend z, same recipe as
`accuracy.py`. Each cell: accuracy ± its 95% interval (per video).
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

ROWS = [
    ("EZ-CLIP from block 4, no motion loss", "ez_clip", {"from_block": 4, "motion_weight": 0.0}, 12),
    ("EV-CLIP context prompts, clip-trend z", "ev_clip", {"prompts": "context", "z_block": 4,
                                                          "aux_encoder": "clip-trend"}, 100),
]


def run(videos_per_class: int, work: Path, pretrained: str = "toy", seed: int = 0) -> dict:
    from cachekit.encoder import EncoderConfig
    from cachekit.evaluate import EvalConfig, evaluate
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.synth import DEFAULT_OBJECTS, SynthConfig, synth_dataset
    from cachekit.train import TrainConfig, train
    from cachekit.video import SamplerConfig

    t0 = time.perf_counter()
    data = work / "data"
    synth_dataset(data, SynthConfig(objects=DEFAULT_OBJECTS, videos_per_class=videos_per_class, frames=16, size=112,
                                    seed=seed, splits=(0.5, 0.25, 0.25)))
    b2n, store = data / "splits" / "b2n", str(work / "b2n.zarr")
    extract(collect_inputs([str(b2n / f"{s}.txt") for s in ("train", "base_val", "novel_val")], video_root=str(data),
                           class_names=str(b2n / "labels.csv")), store,
            ExtractConfig(encoder=EncoderConfig(pretrained=pretrained, seed=seed), sampler=SamplerConfig(frames=8, seed=seed),
                          tokens_at=(4,), templates="ma_fsar16"), progress=False)
    out = {"Frozen CLIP zero-shot (no training)": evaluate(store, EvalConfig(protocol="base2novel", method="zeroshot",
                                                                             seed=seed)).base_novel(1)}
    for label, method, options, epochs in ROWS:
        run_dir = work / f"run-{method}-{len(out)}"
        train(store, run_dir, method, dict(options),
              TrainConfig(protocol="base2novel", epochs=epochs, batch_size=16, lr=3e-3, val_episodes=0, seed=seed),
              resume=True, progress=False, pretrained=None if pretrained == "random" else pretrained)
        out[label] = evaluate(store, EvalConfig(protocol="base2novel", run_dir=str(run_dir), seed=seed)).base_novel(1)
        print(f"{videos_per_class} clips/class {label}: {out[label]}", file=sys.stderr, flush=True)
    return {"videos_per_class": videos_per_class, "rows": out, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-per-class", default="16", help="comma-separated clip counts per class")
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    root = Path(a.work or tempfile.mkdtemp(prefix="clipcache-b2n-"))
    results = [run(int(v), root / f"v{v}", a.pretrained) for v in a.videos_per_class.split(",") if v]
    if a.json:
        print(json.dumps(results))
        return
    for res in results:
        print(f"**{res['videos_per_class']} clips per class** ({res['seconds']} s)\n")
        print("| method | base | novel |\n|---|---|---|")
        for label, v in res["rows"].items():
            print(f"| {label} | {v['base'][0]:.1f} ± {v['base'][1]:.1f} | {v['novel'][0]:.1f} ± {v['novel'][1]:.1f} |")
        print()


if __name__ == "__main__":
    main()

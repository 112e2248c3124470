"""Base-to-novel over unseen compositions as the clips per class grow (the toy CLIP by default).

With few clips per base composition every trained row memorises them (its training loss falls
far, held-out videos barely move), which is why `accuracy.py` draws its base-to-novel set with 16
clips per class. This script repeats that part alone at other clip counts: frozen zero-shot,
EZ-CLIP from block 4 without its motion loss and EV-CLIP's context prompt with the clip-trend z,
the recipes of `accuracy.py`. Each cell: accuracy ± its 95% interval (per video).
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

from accuracy import B2N_ROWS, BLOCK, base_to_novel, benchmark_config, encoder_note  # noqa: E402  (benchmarks/ is the script's folder)

# Rows of accuracy.py's B2N_ROWS (same recipes) -> the label this script prints.
ROWS = {
    "Frozen CLIP zero-shot (no training)": "Frozen CLIP zero-shot (no training)",
    f"EZ-CLIP from block {BLOCK}, no motion loss": f"EZ-CLIP from block {BLOCK}, no motion loss",
    "EV-CLIP context prompts, clip-trend z (from cache)": "EV-CLIP context prompts, clip-trend z",
}


def run(videos_per_class: int, work: Path, pretrained: str = "toy", seed: int = 0) -> dict:
    from cachekit.encoder import EncoderConfig
    from cachekit.synth import synth_dataset
    from cachekit.video import SamplerConfig

    t0 = time.perf_counter()
    data = work / "data"
    synth_dataset(data, benchmark_config(videos_per_class, seed=seed))
    by_label = {row[0]: row for row in B2N_ROWS}
    rows = [by_label[label] for label in ROWS]
    enc = EncoderConfig(pretrained=pretrained, seed=seed)
    cells = base_to_novel(data, str(work / "b2n.zarr"), enc,
                          SamplerConfig(frames=8, seed=seed), rows, work, seed,
                          None if pretrained == "random" else pretrained, prefix=f"{videos_per_class} clips/class ")
    return {"videos_per_class": videos_per_class, "encoder": encoder_note(enc.model, pretrained, seed),
            "rows": {ROWS[k]: v for k, v in cells.items()}, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-per-class", default="8,16", help="comma-separated clip counts per class")
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
        print(f"**{res['videos_per_class']} clips per class** ({res['seconds']} s). Encoder: {res['encoder']}\n")
        print("| method | base | novel |\n|---|---|---|")
        for label, v in res["rows"].items():
            print(f"| {label} | {v['base'][0]:.1f} ± {v['base'][1]:.1f} | {v['novel'][0]:.1f} ± {v['novel'][1]:.1f} |")
        print()


if __name__ == "__main__":
    main()

"""Base-to-novel over unseen compositions as the clips per class grow (the toy CLIP by default).

With few clips per base composition every trained row memorises them (its training loss falls
far, held-out videos barely move). This script repeats the base-to-novel part of `accuracy.py`
alone at other clip counts: frozen zero-shot and, of EV-CLIP and EZ-CLIP, the variant that
`b2n_select.py` settled on its selection set (with its epochs; without `b2n_selection.json`, the
old defaults, and the output says so). Each cell: accuracy ± its 95% interval (per video).
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

from accuracy import B2N_ROWS, base_to_novel, b2n_choices, benchmark_config, encoder_note  # noqa: E402  (benchmarks/ is the script's folder)

FROZEN = "Frozen CLIP zero-shot (no training)"


def shown_rows(choices: dict) -> dict[str, str]:
    """Rows of accuracy.py's B2N_ROWS this script measures -> the label it prints: frozen zero-shot
    and the settled variant of each trained method."""
    out = {FROZEN: FROZEN}
    for label in choices["best"].values():
        out[label] = label.replace(" (from cache)", "").replace(" (through the backbone)", "")
    return out


def run(videos_per_class: int, work: Path, pretrained: str = "toy", seed: int = 0, choices: dict | None = None) -> dict:
    from cachekit.encoder import EncoderConfig
    from cachekit.synth import synth_dataset
    from cachekit.video import SamplerConfig

    t0 = time.perf_counter()
    data = work / "data"
    synth_dataset(data, benchmark_config(videos_per_class, seed=seed))
    choices = choices or b2n_choices(pretrained=pretrained, seed=seed)
    names = shown_rows(choices)
    by_label = {row[0]: row for row in B2N_ROWS}
    rows = [(label, by_label[label][1], choices["epochs"].get(label, by_label[label][2])) for label in names]
    enc = EncoderConfig(pretrained=pretrained, seed=seed)
    cells = base_to_novel(data, str(work / "b2n.zarr"), enc,
                          SamplerConfig(frames=8, seed=seed), rows, work, seed,
                          None if pretrained == "random" else pretrained, prefix=f"{videos_per_class} clips/class ")
    return {"videos_per_class": videos_per_class, "encoder": encoder_note(enc.model, pretrained, seed),
            "settled": choices["settled"], "epochs": {names[label]: e for label, _, e in rows},
            "rows": {names[k]: v for k, v in cells.items()}, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos-per-class", default="8,16", help="comma-separated clip counts per class")
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None)
    ap.add_argument("--selection", default=None, help="the base-to-novel choices to read (default: "
                                                      "benchmarks/b2n_selection.json, written by b2n_select.py)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.selection and not Path(a.selection).is_file():
        ap.error(f"--selection {a.selection}: no such file")
    root = Path(a.work or tempfile.mkdtemp(prefix="clipcache-b2n-"))
    choices = b2n_choices(a.selection, a.pretrained)
    results = [run(int(v), root / f"v{v}", a.pretrained, choices=choices) for v in a.videos_per_class.split(",") if v]
    if a.json:
        print(json.dumps(results))
        return
    for res in results:
        print(f"**{res['videos_per_class']} clips per class** ({res['seconds']} s). Encoder: {res['encoder']}. "
              f"Variants and epochs ({', '.join(f'{k} {v}' for k, v in res['epochs'].items() if v)}): "
              f"{res['settled']}.\n")
        print("| method | base | novel |\n|---|---|---|")
        for label, v in res["rows"].items():
            print(f"| {label} | {v['base'][0]:.1f} ± {v['base'][1]:.1f} | {v['novel'][0]:.1f} ± {v['novel'][1]:.1f} |")
        print()


if __name__ == "__main__":
    main()

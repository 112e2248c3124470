"""Settle the base-to-novel choices of accuracy.py and b2n_clips.py on a selection set, never on
the test lists (issue 23: they had been settled after seeing test results).

The selection set is drawn apart from the benchmark's: every clip with another seed
(:data:`SELECTION_SEED`), and only the benchmark's *base* compositions, split again by the same
Latin-square rule shifted by one (``base_novel_compositions(..., offset=1)``) into pseudo-base and
pseudo-novel compositions. No test clip, and no composition the benchmark holds out as novel, is
read. On it, for each candidate clip count, every trained row of ``accuracy.B2N_ROWS`` is
trained at each candidate epoch budget and scored by the harmonic mean of pseudo-base and
pseudo-novel accuracy. Settled:

* each row's epochs: the best harmonic mean at the chosen clip count (ties: fewer epochs);
* the clip count: the smallest at which the best trained row beats frozen zero-shot on the
  pseudo-novel compositions beyond both intervals (what the table exists to show), else the
  largest candidate; counts are measured in increasing order and the first that qualifies ends
  the measuring;
* the variant b2n_clips.py shows per method (EV-CLIP, EZ-CLIP): its row with the best harmonic mean.

They go to ``benchmarks/b2n_selection.json``, which accuracy.py and b2n_clips.py read; the test
lists are then measured once, and their tables say where the choices came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accuracy import (B2N_ROWS, SELECTION_FILE, _table, base_to_novel, benchmark_config,  # noqa: E402
                      encoder_note, weights_id)

SELECTION_SEED = 1  # the benchmark draws its clips with seed 0
CANDIDATES = {
    "videos_per_class": (8, 16),
    # row label -> epoch budgets tried (from-cache rows cost milliseconds a step; backbone rows not)
    "epochs": {label: ((25, 50, 100, 200) if "from cache" in label else (4, 8) if "mask" in label else (6, 12, 18))
               for label, how, _ in B2N_ROWS if how[0] == "train"},
}
QUICK = {"videos_per_class": (4,), "epochs": {label: ((10, 20) if "from cache" in label else (1, 2))
                                              for label in CANDIDATES["epochs"]}}


def selection_data(root: Path, full, seed: int = SELECTION_SEED) -> tuple[Path, dict]:
    """Synth the selection set under ``root``: the *base* compositions of the benchmark config
    ``full`` (:func:`accuracy.benchmark_config`), every clip drawn with ``seed`` instead of
    ``full.seed``, and its pseudo base-to-novel lists in ``splits/b2n`` (the Latin-square rule
    shifted by one, a reversal pair holding out the same clips as in the benchmark's lists).
    Returns (data dir, {"base": [...], "novel": [...]} of its pseudo split)."""
    from cachekit.synth import base_novel_compositions, base_novel_videos, slugify, synth_dataset

    test_split = base_novel_compositions(full.class_names, full.objects)
    cfg = dataclasses.replace(full, classes=tuple(test_split["base"]), seed=seed)
    quiet = logging.getLogger("cachekit.synth.dataset")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it would warn that it writes no b2n lists: every composition here is base
    try:
        synth_dataset(root, cfg)
    finally:
        quiet.setLevel(level)
    split = base_novel_compositions(cfg.class_names, cfg.objects, offset=1)
    if split is None or not split["novel"]:
        raise SystemExit(f"no pseudo-novel composition among {len(cfg.class_names)} base compositions")
    classes = list(cfg.class_names)
    label = {c: i for i, c in enumerate(classes)}
    b2n = root / "splits" / "b2n"
    b2n.mkdir(parents=True, exist_ok=True)
    for name, clips in base_novel_videos(split, cfg.videos_per_class, seed).items():
        lines = [f"videos/{slugify(c)}/{slugify(c)}_{i:03d}.mp4 {label[c]}\n" for c, i in clips]
        (b2n / f"{name}.txt").write_text("".join(lines))
    (b2n / "labels.csv").write_text("id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    return root, split


def beats(row: dict, frozen: dict) -> bool:
    """Novel accuracy beyond both intervals of frozen zero-shot's."""
    return row["novel"][0] - row["novel"][1] > frozen["novel"][0] + frozen["novel"][1]


def best_epochs(by_e: dict[int, dict]) -> int:
    """A row's epoch budget with the best harmonic mean (ties: fewer epochs)."""
    return max(sorted(by_e), key=lambda e: (by_e[e]["hm"][0], -e))


def qualifies(rows: dict[str, dict[int, dict]], frozen: dict) -> bool:
    """Whether some trained row, at its best budget, beats frozen zero-shot (:func:`beats`) at one clip count."""
    return any(beats(by_e[best_epochs(by_e)], frozen) for by_e in rows.values())


def settle(measured: dict[int, dict[str, dict[int, dict]]], frozen: dict[int, dict]) -> tuple[int, dict, dict]:
    """The choices from the selection set's cells (clips per class -> row label -> epochs -> cell;
    frozen zero-shot's cell per clip count): (clips per class, row label -> epochs, method -> row
    label), by the rules of the module docstring."""
    counts = sorted(measured)
    chosen = next((vpc for vpc in counts if qualifies(measured[vpc], frozen[vpc])), counts[-1])
    epochs = {label: best_epochs(by_e) for label, by_e in measured[chosen].items()}
    best = {}
    for method in ("EV-CLIP", "EZ-CLIP"):
        labels = [lab for lab in measured[chosen] if lab.startswith(method)]
        best[method] = max(labels, key=lambda lab: measured[chosen][lab][epochs[lab]]["hm"][0])
    return chosen, epochs, best


def select(work: Path, pretrained: str = "toy", candidates: dict | None = None, seed: int = SELECTION_SEED) -> dict:
    """Measure the candidates, clip counts in increasing order, and stop at the first count at which
    a trained row beats frozen zero-shot (:func:`settle` chooses it whatever larger counts give)."""
    from cachekit.encoder import EncoderConfig
    from cachekit.video import SamplerConfig

    candidates = candidates or CANDIDATES
    enc = EncoderConfig(pretrained=pretrained, seed=0)
    weights = None if pretrained == "random" else pretrained
    t0 = time.perf_counter()
    measured: dict[int, dict[str, dict[int, dict]]] = {}
    frozen: dict[int, dict] = {}
    split = {}
    for vpc in sorted(candidates["videos_per_class"]):
        data, split = selection_data(work / f"v{vpc}", benchmark_config(vpc), seed)
        rows = [(label, how, 0) for label, how, _ in B2N_ROWS if how[0] == "eval"]
        rows += [(f"{label} @{e}", how, e) for label, how, _ in B2N_ROWS if how[0] == "train"
                 for e in candidates["epochs"][label]]
        cells = base_to_novel(data, str(work / f"v{vpc}.zarr"), enc, SamplerConfig(frames=8, seed=0), rows,
                              work / f"v{vpc}-runs", 0, weights, pixels=True, prefix=f"selection, {vpc} clips/class ",
                              novel=split["novel"])
        frozen[vpc], measured[vpc] = cells_by_epochs(cells)
        if qualifies(measured[vpc], frozen[vpc]):
            break  # the smallest count at which a trained row beats frozen zero-shot: larger ones cannot change it
    return document(measured, frozen, split, pretrained, candidates, seed, round(time.perf_counter() - t0, 1))


def cells_by_epochs(cells: dict[str, dict]) -> tuple[dict, dict[str, dict[int, dict]]]:
    """One clip count's cells (``"label @epochs"`` or frozen's plain label -> cell) as (frozen
    zero-shot's cell, row label -> epochs -> cell)."""
    frozen = next(v for k, v in cells.items() if "@" not in k)
    rows: dict[str, dict[int, dict]] = {}
    for key, v in cells.items():
        if "@" in key:
            label, e = key.rsplit(" @", 1)
            rows.setdefault(label, {})[int(e)] = v
    return frozen, rows


def document(measured: dict, frozen: dict, split: dict, pretrained: str, candidates: dict, seed: int,
             seconds: float | None) -> dict:
    """What ``b2n_selection.json`` holds: the choices (:func:`settle`) and every measured cell."""
    from cachekit.encoder import EncoderConfig

    chosen, epochs, best = settle(measured, frozen)
    return {"seed": seed, "weights": weights_id(pretrained), "videos_per_class": chosen, "epochs": epochs, "best": best,
            "pseudo_split": f"{len(split['base'])} pseudo-base and {len(split['novel'])} pseudo-novel compositions, "
                            "all base compositions of the benchmark",
            "encoder": encoder_note(EncoderConfig(pretrained=pretrained, seed=0).model, pretrained), "candidates": {
                "videos_per_class": sorted(candidates["videos_per_class"]),
                "epochs": {k: list(v) for k, v in candidates["epochs"].items()}},
            "measured": {str(vpc): {"frozen": frozen[vpc], **{lab: {str(e): v for e, v in by_e.items()}
                                                               for lab, by_e in rows_.items()}}
                         for vpc, rows_ in measured.items()},
            "seconds": seconds, "date": time.strftime("%Y-%m-%d")}


def markdown(doc: dict) -> str:
    out = [f"Encoder: {doc['encoder']}. Selection set: clips drawn with seed {doc['seed']}, {doc['pseudo_split']}; "
           f"{doc['seconds']} s; clip counts measured: {', '.join(doc['measured'])} of "
           f"{', '.join(map(str, doc['candidates']['videos_per_class']))}.\n"]
    for vpc, rows in doc["measured"].items():
        table = {"Frozen CLIP zero-shot (no training)": {"epochs": "–", "base": rows["frozen"]["base"],
                                                         "novel": rows["frozen"]["novel"], "hm": rows["frozen"]["hm"]}}
        for label, by_e in rows.items():
            if label != "frozen":
                for e, v in by_e.items():
                    table[f"{label} @{e}"] = {"epochs": e, "base": v["base"], "novel": v["novel"], "hm": v["hm"]}
        out += _table(f"**Selection set, {vpc} clips per class (pseudo-base / pseudo-novel)**", table)
    out.append(f"Settled: {doc['videos_per_class']} clips per class; epochs "
               + ", ".join(f"{k} {v}" for k, v in doc["epochs"].items())
               + "; shown by b2n_clips.py: " + ", ".join(doc["best"].values()) + ".")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="where the choices go (default: benchmarks/b2n_selection.json, "
                                                "which accuracy.py reads; with --quick: inside --work)")
    ap.add_argument("--quick", action="store_true", help="4 clips per class, two tiny epoch budgets per row "
                                                         "(a try of the step; its choices mean nothing)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="clipcache-b2n-select-"))
    out = Path(a.out or (work / "b2n_selection.json" if a.quick else SELECTION_FILE))
    doc = select(work, a.pretrained, QUICK if a.quick else CANDIDATES)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc) if a.json else markdown(doc) + f"\n\nwrote {out}")


if __name__ == "__main__":
    main()

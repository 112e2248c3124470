"""Do the few-shot heads trained on the benchmark transfer to clips of another style?

Meta-trained heads (MA-FSAR's TPCM, the CLIP-FSAR head) are meant for classes they never saw.
This trains each of them on the compositional benchmark exactly as ``accuracy.py`` does (its
train classes, checkpoints selected on its val classes), then scores them, frozen, on the
second synthetic style (``SynthConfig(style="doodle")``: other motions, shapes, backgrounds and
speeds, drawn by another renderer; 15 motion classes), 5-way 1-shot, every row on the same
episodes, beside the untrained baselines (prototypes + OTAM, the metric every trained head
aligns frames with, and prototypes + mean pooling) and frozen zero-shot (what the class names
alone tell the encoder).

Rows that locate a loss: each TPCM run with a text branch is also scored with the same weights
and ``text_check`` (clipcache's: the text branch weighed per episode by how well the class texts
name the labelled supports, :func:`cachekit.layers.tpcm.checked_alpha`), and with its text weight
lowered at prediction (α = 0.25, α = 0; the α ablation). The α = 0 run is trained on the same
classes and scenes as the others: if it keeps its baseline, the learnt projection, the
benchmark's scenes and the number of training classes are not where a loss comes from. A second
table scores every run on the benchmark's own test classes (the same episodes in every row), to
show what ``text_check`` costs where the class names are readable.

Every cell: accuracy ± the episode interval [± the video-level interval]; the difference columns
are the row minus each untrained baseline ± the interval of a difference of two independent estimates
from the two video-level intervals (conservative: the rows share their episodes). The toy
encoder says nothing about real CLIP on real videos.

Run: ``python benchmarks/transfer.py [--quick] [--threads 1] [--json]``; ``--quick`` (fewer clips,
episodes and training episodes) took 334 s and the defaults 510 s on 2 cores at load 4–7.
Under load, ``--threads 1`` (it sets ``OMP_WAIT_POLICY=PASSIVE``) is faster than torch's default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accuracy import EPISODIC_ROWS, benchmark_config, cell, run_name  # noqa: E402  (benchmarks/ is the script's folder)

BASELINES = [("Prototypes + mean pooling (no training)", "proto", "mean"),
             ("Prototypes + OTAM (no training)", "proto", "otam"),
             ("Frozen CLIP zero-shot, 5-way (no training)", "zeroshot", None)]
BASELINE = "Prototypes + OTAM (no training)"  # the metric every trained head aligns frames with
TRAINED = [(label, how) for label, how in EPISODIC_ROWS if how[0] == "train"]


def _extract(data: Path, lists: list[Path], store: str, enc, sampler, class_names: Path | None = None) -> str:
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs

    extract(collect_inputs([str(p) for p in lists], video_root=str(data),
                           class_names=None if class_names is None else str(class_names)),
            store, ExtractConfig(encoder=enc, sampler=sampler, templates="ma_fsar16"), progress=False)
    return store


def _train(store: str, run_dir: Path, method: str, options: dict, train_episodes: int, val_episodes: int,
           queries: int, seed: int, weights: str | None, threads: int) -> str:
    from cachekit.train import TrainConfig, train

    train(store, str(run_dir), method, dict(options),
          TrainConfig(protocol="episodic", episodes=train_episodes, val_episodes=val_episodes, lr=1e-3, seed=seed,
                      queries=queries), resume=True, progress=False, pretrained=weights, threads=threads)
    return str(run_dir)


def _score(store: str, episodes: Path, run_dir: str | None = None, method=None, name: str | None = None,
           metric: str | None = None) -> list:
    """One cell on the episodes of ``episodes``: a trained run, a built method or one by name."""
    from cachekit.evaluate import EvalConfig, evaluate

    if method is not None:
        return cell(evaluate(store, EvalConfig(protocol="episodic", episodes_file=str(episodes)), method=method))
    if run_dir is not None:
        return cell(evaluate(store, EvalConfig(run_dir=run_dir, episodes_file=str(episodes))))
    return cell(evaluate(store, EvalConfig(protocol="episodic", method=name, metric=metric,
                                           episodes_file=str(episodes))))


def _variant(run_dir: str, store: str, alpha: float | None = None, text_check: bool | None = None):
    """The trained method of ``run_dir`` with its prediction's text weight or ``text_check``
    changed (prediction only; the weights are the run's)."""
    from cachekit.cache import FeatureCache
    from cachekit.runs import load_run

    with FeatureCache(store) as cache:
        method, _ = load_run(run_dir, cache_key=cache.key, device="cpu")
    if alpha is not None:
        method.head.alpha = alpha
    if text_check is not None:
        method.head.text_check = text_check
    return method


def _max_diff(a: Path, b: Path) -> float:
    """The largest absolute difference between two checkpoints' tensors (the same names)."""
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def _checked(label: str, on: bool) -> str:
    return f"{label}, text_check {'on' if on else 'off (the paper)'}"


def _episodes(store: str, out: Path, episodes: int, seed: int, part: str, indices=None) -> Path:
    """5-way 1-shot episodes (one query) over ``indices`` of ``store`` (None: every clip), saved to ``out``."""
    import numpy as np

    from cachekit.cache import FeatureCache
    from cachekit.episodes import EpisodeSampler, save_episodes

    with FeatureCache(store) as cache:
        labels = np.asarray(cache.labels)
    idx = np.arange(len(labels)) if indices is None else indices
    eps = EpisodeSampler(labels, idx, 5, 1, 1, seed).sample(episodes)
    save_episodes(out, eps, {"seed": seed, "ways": 5, "shots": 1, "queries": 1, "split": part})
    return out


QUICK = {"doodle_videos_per_class": 12, "episodes": 500, "train_episodes": 300, "val_episodes": 100}


def run(videos_per_class: int = 8, doodle_videos_per_class: int = 16, episodes: int = 1000,
        train_episodes: int = 600, val_episodes: int = 200, pretrained: str = "toy", work: str | None = None,
        seed: int = 0, threads: int = 0) -> dict:
    """Every row of both tables (accuracy ± intervals), the sizes, the seconds and the load."""
    import os

    from cachekit.cache import FeatureCache
    from cachekit.encoder import EncoderConfig
    from cachekit.protocols.plan import SplitPlan
    from cachekit.synth import SynthConfig, synth_dataset
    from cachekit.video import SamplerConfig

    t0 = time.perf_counter()
    root = Path(work or tempfile.mkdtemp(prefix="clipcache-transfer-"))
    enc = EncoderConfig(pretrained=pretrained, seed=seed)
    weights = None if pretrained == "random" else pretrained
    sampler = SamplerConfig(frames=8, seed=seed)
    queries = min(5, videos_per_class - 1)
    res: dict = {"pretrained": pretrained, "rows": {}, "diagnosis": {}, "benchmark": {}, "seconds": {},
                 "sizes": {"videos_per_class": videos_per_class, "doodle_videos_per_class": doodle_videos_per_class,
                           "episodes": episodes, "train_episodes": train_episodes, "val_episodes": val_episodes,
                           "threads": threads, "seed": seed},
                 "load": [round(os.getloadavg()[0], 1)]}

    def log(part: str, label: str, table: dict) -> None:
        print(f"{part} {label}: {table[label]}  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    # the benchmark, as accuracy.py draws and splits it
    bench = root / "benchmark"
    bcfg = benchmark_config(videos_per_class, "none", seed)
    bsyn = synth_dataset(bench, bcfg)
    fsar = bench / "splits" / "clip_fsar"
    bench_store = _extract(bench, [fsar / f"{s}_few_shot.txt" for s in ("train", "val", "test")],
                           str(root / "benchmark.zarr"), enc, sampler, class_names=fsar)
    res["benchmark_classes"] = {part: len(v) for part, v in bsyn.splits.items()}
    # the second style: every class is an evaluation class
    doodle = root / "doodle"
    dcfg = SynthConfig(style="doodle", videos_per_class=doodle_videos_per_class, frames=16, size=112, seed=seed)
    syn = synth_dataset(doodle, dcfg)
    doodle_store = _extract(doodle, [doodle / "videos.csv"], str(root / "doodle.zarr"), enc, sampler)
    ep_file = _episodes(doodle_store, root / "doodle-episodes.json", episodes, seed, "all doodle clips")
    res["classes"], res["videos"] = len(syn.classes), len(syn.videos)
    res["seconds"]["data"] = round(time.perf_counter() - t0, 1)

    rows, diag, bmark = res["rows"], res["diagnosis"], res["benchmark"]
    for label, name, metric in BASELINES:
        rows[label] = _score(doodle_store, ep_file, name=name, metric=metric)
        log("doodle", label, rows)
    runs, tpcm = {}, []
    for label, (_, method, options) in TRAINED:
        t = time.perf_counter()
        runs[label] = _train(bench_store, root / "runs" / run_name(method, options), method, options,
                             train_episodes, val_episodes, queries, seed, weights, threads)
        res["seconds"][label] = round(time.perf_counter() - t, 1)
        if method == "ma_fsar" and options.get("alpha", 0.75) > 0:  # the text branch with and without the check
            tpcm.append(label)
            for on in (False, True):
                rows[_checked(label, on)] = _score(doodle_store, ep_file, method=_variant(runs[label], doodle_store,
                                                                                           text_check=on))
                log("doodle", _checked(label, on), rows)
        else:
            rows[label] = _score(doodle_store, ep_file, run_dir=runs[label])
            log("doodle", label, rows)

    # the α ablation on the same weights: where the loss comes from
    for label in tpcm:
        alpha = _variant(runs[label], doodle_store).head.alpha
        for a in (0.25, 0.0):
            if a < alpha and (a > 0 or label == tpcm[0]):  # α = 0 once: the trained α = 0 row is beside it
                key = f"{label}: the same weights scored with α = {a:g}, text_check off"
                diag[key] = _score(doodle_store, ep_file, method=_variant(runs[label], doodle_store, alpha=a,
                                                                          text_check=False))
                log("doodle", key, diag)

    # with a frozen encoder the text terms of Eq. 16 (raw features against frozen text) give the head no
    # gradient, and AdamW is blind to the loss's scale (1 − α): α should leave the trained weights alone
    if len(tpcm) > 1:
        res["weights_max_diff"] = _max_diff(*(Path(runs[label]) / "last.safetensors" for label in tpcm[:2]))

    # every trained run where the class names are readable: the benchmark's test classes, the same episodes
    if runs:
        with FeatureCache(bench_store) as cache:
            test = SplitPlan.load(next(iter(runs.values())), cache).indices["test"]
        bench_eps = _episodes(bench_store, root / "benchmark-test-episodes.json", episodes, seed, "benchmark test",
                              test)
        for label, name, metric in BASELINES[:2]:
            bmark[label] = _score(bench_store, bench_eps, name=name, metric=metric)
            log("benchmark", label, bmark)
        for label in runs:
            for key, kw in ([(_checked(label, on), {"text_check": on}) for on in (False, True)] if label in tpcm
                            else [(label, {})]):
                bmark[key] = _score(bench_store, bench_eps, method=_variant(runs[label], bench_store, **kw))
                log("benchmark", key, bmark)
    res["seconds"]["all"] = round(time.perf_counter() - t0, 1)
    res["load"].append(round(os.getloadavg()[0], 1))
    return res


def difference(row: list, base: list) -> list:
    """Row minus baseline, ± 1.96·sqrt(se_row² + se_base²) from the two video-level intervals."""
    return [round(row[0] - base[0], 1), round(math.hypot(row[2], base[2]), 1)]


def _table(rows: dict, title: str) -> list[str]:
    """One table: each row beside both untrained baselines (the difference ± its interval)."""
    mean, otam = rows[BASELINES[0][0]], rows[BASELINE]
    out = [title + "\n", "| method | accuracy ± episodes [± videos] | vs prototypes + mean | vs prototypes + OTAM |",
           "|---|---|---|---|"]
    for label, v in rows.items():
        d = ["–", "–"] if "no training" in label else [
            "{:+.1f} ± {:.1f}".format(*difference(v, b)) for b in (mean, otam)]
        out.append(f"| {label} | {v[0]:.1f} ± {v[1]:.1f} [± {v[2]:.1f}] | {d[0]} | {d[1]} |")
    return out


def markdown(res: dict) -> str:
    z = res["sizes"]
    out = _table({**res["rows"], **res["diagnosis"]},
                 f"**5-way 1-shot on the second style (doodle: {res['classes']} motion classes, {res['videos']} clips, "
                 f"{z['episodes']} episodes, the same in every row; chance 20%). Heads trained on the benchmark's "
                 f"train classes ({z['videos_per_class']} clips a class, {z['train_episodes']} training episodes, "
                 f"checkpoint on {z['val_episodes']} val episodes), frozen**")
    if res["benchmark"]:
        out += [""] + _table(res["benchmark"], f"**The same runs on the benchmark's own test classes (5-way 1-shot, "
                                               f"{z['episodes']} episodes, the same in every row)**")
    if "weights_max_diff" in res:
        out += ["", f"The α = 0.75 and α = 0.25 runs' final weights (the same step) differ by at most "
                    f"{res['weights_max_diff']:.1e} (the loss's text terms give a frozen-encoder head no gradient)."]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items() if k != "all")
    return "\n".join(out + ["", f"{res['seconds']['all']:.0f} s in all ({secs}); {z['threads'] or 'default'} torch "
                                 f"threads; 1-minute load average {res['load'][0]} at the start, {res['load'][-1]} at "
                                 "the end."])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="reduced sizes: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    ap.add_argument("--videos-per-class", type=int, default=8, help="benchmark clips per class (accuracy.py's)")
    ap.add_argument("--doodle-videos-per-class", type=int, default=None, help="default 16 (--quick 12)")
    ap.add_argument("--episodes", type=int, default=None, help="test episodes, default 1000 (--quick 500)")
    ap.add_argument("--train-episodes", type=int, default=None, help="default 600 (--quick 300)")
    ap.add_argument("--pretrained", default="toy")
    ap.add_argument("--work", default=None, help="folder for the data, stores and runs (reused: runs resume)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); under load use 1 with OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sizes = dict(QUICK) if a.quick else {}
    for key in ("doodle_videos_per_class", "episodes", "train_episodes"):
        if getattr(a, key) is not None:
            sizes[key] = getattr(a, key)
    if a.threads:
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (lazily, in run)
        import torch

        torch.set_num_threads(a.threads)
    res = run(a.videos_per_class, pretrained=a.pretrained, work=a.work, threads=a.threads, **sizes)
    print(json.dumps(res) if a.json else markdown(res))


if __name__ == "__main__":
    main()

"""Two evaluations of the synthetic benchmark that separate what an encoder sees from what a method
adds (used by ``clipcache demo`` and ``benchmarks/accuracy.py``):

* :func:`zeroshot_groups`: frozen zero-shot inside groups of classes that differ in one factor
  only (object, or motion), pooled over the groups;
* :func:`reversal_episodes`: 2-way 1-shot episodes each made of one time-reversed pair, which
  mean pooling cannot separate and temporal alignment can.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

_SCENE = re.compile(r"_(\d+)\.[A-Za-z0-9]+$")  # clip number of a synthetic file name


@dataclass(frozen=True)
class Pooled:
    """Accuracy over groups scored separately; ``ci95`` is the video-level interval (each video
    one independent trial, each group's binomial variance weighted by its videos)."""

    accuracy: float
    ci95: float
    groups: int
    videos: int
    chance: float  # mean of 1 / classes per group, percent

    def cell(self) -> list:
        return [round(self.accuracy, 1), round(self.ci95, 1), round(self.ci95, 1)]


def pool(results: Sequence) -> Pooled:
    """Pool :class:`~cachekit.report.EvalResult` of all-way evaluations by their video counts."""
    if not results:
        raise InputError("no groups to pool")
    n = sum(r.videos for r in results)
    acc = sum(r.accuracy * r.videos for r in results) / n
    var = sum(r.videos * (r.accuracy / 100) * (1 - r.accuracy / 100) for r in results) / n**2
    chance = float(np.mean([100.0 / max(1, r.classes or len(r.class_names)) for r in results]))
    return Pooled(acc, 100 * 1.96 * math.sqrt(var), len(results), n, chance)


def zeroshot_groups(store: str, files: Sequence[str | os.PathLike], video_root: str | os.PathLike,
                    seed: int = 0, method: str = "zeroshot") -> Pooled:
    """Zero-shot accuracy of ``method`` inside each group (a split file of videos whose classes
    differ in one factor), pooled. Each video is classified among its own group's classes."""
    from .evaluate import EvalConfig, evaluate

    files = list(files)
    if not files:
        raise InputError("no group split files given")
    return pool([evaluate(store, EvalConfig(protocol="zeroshot", method=method, split_file=str(f),
                                            video_root=str(video_root), seed=seed)) for f in files])


def reversal_episodes(store: str, pairs: Sequence[Sequence[str]], episodes: int, seed: int,
                      path: str | os.PathLike) -> int:
    """Write ``episodes`` 2-way 1-shot, 1-query episodes to ``path``, each made of one
    time-reversed pair (cycling over the pairs the store holds); returns how many pairs it used.
    Evaluate methods on the file (``EvalConfig(episodes_file=path)``) to compare them on the
    same episodes.

    Clip ``i`` of a reversed class is clip ``i`` of its forward class played backwards (same
    scene), so the four clips of an episode come from four different scenes (the ``_<i>.mp4``
    number of the synthetic file names): otherwise a query would share its background with the
    other class's support, and appearance alone would pick the wrong class."""
    from .cache import FeatureCache
    from .episodes import EpisodeSpec, save_episodes

    with FeatureCache(store) as cache:
        names, labels, paths = list(cache.classes), np.asarray(cache.labels), cache.paths
    scene = np.array([int(m.group(1)) if (m := _SCENE.search(str(p))) else -1 - i for i, p in enumerate(paths)])
    ids = [(names.index(a), names.index(b)) for a, b in pairs if a in names and b in names]
    ids = [p for p in ids if len(np.union1d(scene[labels == p[0]], scene[labels == p[1]])) >= 4]
    if not ids:
        raise InputError(f"store {store} holds no time-reversed pair with clips of 4 different scenes")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA1]))
    eps = []
    for e in range(episodes):
        pair = ids[e % len(ids)]
        while True:
            a, b = (rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in pair)
            if len(set(scene[np.concatenate([a, b])].tolist())) == 4:
                break
        support, query = ((int(a[0]),), (int(b[0]),)), ((int(a[1]),), (int(b[1]),))
        eps.append(EpisodeSpec(tuple(int(c) for c in pair), support, query))
    save_episodes(Path(path), eps, {"seed": seed, "ways": 2, "shots": 1, "queries": 1,
                                    "split": "time-reversed pairs"})
    return len(ids)

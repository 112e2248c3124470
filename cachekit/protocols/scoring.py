"""What an evaluation reads (:class:`Pools`), what a protocol evaluator is handed
(:class:`EvalJob`), the overlap guard between a run's recorded plan and an evaluation set, and
the scoring helpers of the video-level evaluators.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..ids import unique_ids
from ..progress import bar
from .plan import SPLITS_FILE, SplitPlan

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache
    from ..methods.base import Method


def overlap_problems(run: SplitPlan, cache: FeatureCache, eval_idx: np.ndarray,
                     disjoint_idx: np.ndarray | None) -> list[str]:
    """What an evaluation set shares with the run's training (``run``: its recorded plan,
    :meth:`SplitPlan.load`): videos (training or selection) and, for the videos in ``disjoint_idx``
    (a class-disjoint protocol's test videos), training classes."""
    keys, labels, names = cache.video_keys, cache.labels, cache.classes
    seen = run.seen_keys
    out = []
    evaluated = unique_ids(eval_idx)
    n = sum(1 for i in evaluated if keys[i] in seen)
    if n:
        out.append(f"{n:,} of the {evaluated.size:,} evaluated videos were training or selection "
                   "videos of the run")
    if disjoint_idx is not None and disjoint_idx.size:
        trained = set(run.class_names.get("train", []))
        shared = sorted({names[int(c)] for c in np.unique(labels[disjoint_idx])} & trained)
        if shared:
            out.append(f"{len(shared)} evaluated classes were training classes of the run (e.g. {shared[0]!r}), "
                       "in a protocol that tests on unseen classes")
    return out



@dataclass
class Pools:
    """Which videos an evaluation reads, and what the report must say about them."""

    eval_name: str | None  # None: all labelled videos of the store, or the run's test split
    eval_idx: np.ndarray  # [N] labelled videos to evaluate on
    splits: dict  # name -> cachekit.cache.Split
    notes: list[str] = field(default_factory=list)
    run: SplitPlan | None = None  # the trained run's recorded plan (scored on its own test split)
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # base2novel: the run's base / novel test parts

    def get(self, name: str):
        return self.splits.get(name)

    @classmethod
    def of_run(cls, cache: FeatureCache, run: SplitPlan, part_names: tuple[str, ...]) -> Pools | None:
        """The run's own test split on this store (``part_names``: the protocol's
        :attr:`~.base.Protocol.test_parts`); None when the store holds none of the run's videos
        (another data set: a cross-dataset evaluation, scored on the store's own test split)."""
        from ..errors import InputError

        labels = cache.labels
        if not any(idx.size for idx in run.indices.values()):
            return None
        idx = run.test[labels[run.test] >= 0]
        if idx.size == 0:
            raise InputError("the run has no test videos in this store (its notes say why); evaluate it on another "
                             "store, or pass --split / --split-file (checked for overlap with its training)")
        notes = [f"evaluated on the run's own test split ({SPLITS_FILE}): {plural(idx.size, 'video')}, "
                 f"{plural(np.unique(labels[idx]).size, 'class', 'classes')}"]
        if run.missing.get("test"):
            listed = idx.size + run.missing["test"]
            notes.append(f"the run's test split: {run.missing['test']:,} of {listed:,} videos are missing from the "
                         f"store (coverage {100.0 * idx.size / listed:.1f}%)")
        parts = {}
        if part_names and all(n in run.test_parts for n in part_names):
            parts = {n: run.test_parts[n] for n in part_names}
        return cls(None, idx, dict(cache.splits()), notes, run, parts)


@dataclass
class EvalJob:
    """Everything one protocol evaluator needs."""

    cache: FeatureCache
    method: Method
    metric: str
    pools: Pools
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int
    batch_episodes: int
    device: object
    loaded: tuple | None = None  # (episodes, meta, file name) from --episodes-file
    out_dir: str | os.PathLike | None = None
    file_name: str = "episodes.json"
    data: object = None  # CacheData for the video-level protocols


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural_form or word + 's')}"


def confusion(true: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Counts ``[C, C]`` (rows = true class) of global class ids over ``classes`` [C]."""
    pos = np.full(int(max(classes.max(), true.max(), pred.max())) + 1, -1, dtype=np.int64)
    pos[classes] = np.arange(classes.size)
    t, p = pos[true], pos[pred]
    conf = np.zeros((classes.size, classes.size), dtype=np.int64)
    np.add.at(conf, (t, p), 1)
    return conf


def per_class(conf: np.ndarray, names: list[str]) -> dict[str, float]:
    rows = conf.sum(axis=1)
    return {n: (100.0 * conf[i, i] / rows[i] if rows[i] else float("nan")) for i, n in enumerate(names)}


def class_names(cache: FeatureCache, classes: np.ndarray) -> list[str]:
    return [cache.classes[int(c)] for c in classes]


def video_predictions(method: Method, data, idx: np.ndarray, text, classes: np.ndarray,
                      names: list[str], batch: int = 512) -> np.ndarray:
    """Global class id predicted for each video ``idx`` [N] among ``classes`` [C] (text [C, P, D'],
    class names ``names`` [C])."""
    method.bind_classes(list(names))
    out = np.empty(idx.size, dtype=np.int64)
    with bar(total=idx.size, desc="eval", unit="video") as progress:  # on in a progress scope
        for a in range(0, idx.size, batch):
            b = data.batch(idx[a:a + batch], view=0)
            logits = method.video_logits(b, text)  # [B, C]
            out[a:a + batch] = classes[logits.argmax(dim=-1).cpu().numpy()]
            progress.update(len(b.labels))
    return out


def class_text(data, classes: np.ndarray, dim: int, device):
    """``[C, P, D']`` text of ``classes``; an empty ``[C, 0, D']`` when the method reads no text."""
    import torch

    if data.text is None:
        return torch.zeros(classes.size, 0, dim, device=device)
    return data.text[torch.from_numpy(classes).to(data.text.device)]


def video_result(protocol: str, job: EvalJob, shots: int | None, idx: np.ndarray, pred: np.ndarray,
                 classes: np.ndarray, notes: list[str], extra: dict | None = None):
    """An :class:`EvalResult` over test videos scored once each: both intervals are per video."""
    from ..episodes import accuracy_ci
    from ..report import EvalResult

    cache = job.cache
    true = cache.labels[idx]
    acc, ci = accuracy_ci((pred == true).astype(np.float64))
    conf = confusion(true, pred, classes)
    names = class_names(cache, classes)
    return EvalResult(protocol=protocol, method=job.method.display_name, metric=job.metric, ways=None, shots=shots,
                      queries=None, episodes=int(true.size), accuracy=acc, ci95=ci, video_ci95=ci,
                      videos=int(unique_ids(idx).size), classes=int(np.unique(true).size),
                      per_class=per_class(conf, names), confusion=conf, class_names=names,
                      notes=list(notes), extra=dict(extra or {}))

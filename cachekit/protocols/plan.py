"""A run's split plan: which videos train, which select the checkpoint, which test, and the
``splits.json`` record of it that ``train --resume`` and ``eval --run`` both read back
(:meth:`SplitPlan.load`): one object for "which videos play which role", from planning to scoring.

Held-out lists of a store (:func:`held_out_names`): ``test`` is the test list; without one, the
store's ``val`` list *is* the test list (ViFi-CLIP names its test lists ``val1.txt``, SSv2 ships
only ``validation.txt``), and checkpoint selection then uses a seeded part of the training
videos, never that list.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import RunError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache

SPLITS_FILE = "splits.json"  # also named in cachekit.runs
SPLITS_FORMAT = "clipcache-split"
PARTS = ("train", "val", "test")  # val: the videos that select the checkpoint


@dataclass
class SplitPlan:
    """Video indices (into the cache) per role, for one protocol.

    ``train``: the videos (and, through their labels, the only classes) training reads.
    ``val``: the videos that select the checkpoint; never test data.
    ``test``: the videos a run is scored on; ``test_parts`` splits them where the protocol
    reports parts (base-to-novel: ``base`` and ``novel``).
    ``generated``: some part was drawn here from ``seed`` rather than read from split files.
    ``class_disjoint``: no test class (novel class, for base-to-novel) trains or selects.

    A plan read back from a run (:meth:`load`) also carries what the run recorded, whatever the
    store holds now: ``keys`` (part -> video keys), ``class_names`` (part -> class names) and
    ``missing`` (part -> recorded videos this store lacks); parts are named as in the record
    (``train``, ``val``, ``test``, ``test_<part>``).
    """

    protocol: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    seed: int
    generated: bool = False
    notes: list[str] = field(default_factory=list)
    test_parts: dict[str, np.ndarray] = field(default_factory=dict)
    class_disjoint: bool = False
    keys: dict[str, set[str]] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)

    @property
    def indices(self) -> dict[str, np.ndarray]:
        """Every part by its recorded name (``train``, ``val``, ``test``, ``test_<part>``)."""
        parts = {name: getattr(self, name) for name in PARTS}
        parts.update({f"test_{k}": v for k, v in self.test_parts.items()})
        return parts

    def classes(self, labels: np.ndarray, part: str) -> np.ndarray:
        idx = getattr(self, part) if part in PARTS else self.test_parts[part]
        return np.unique(labels[idx])

    @property
    def seen_keys(self) -> set[str]:
        """Videos the run trained on or selected its checkpoint with (as recorded)."""
        return self.keys.get("train", set()) | self.keys.get("val", set())

    def shots(self, labels: np.ndarray) -> int | None:
        """Training videos per class when every class has the same number (the run's K), else None."""
        idx = self.train
        if self.missing.get("train") or idx.size == 0:
            return None
        counts = np.unique(np.bincount(labels[idx])[np.unique(labels[idx])])
        return int(counts[0]) if counts.size == 1 else None

    def summary(self, labels: np.ndarray) -> dict:
        """Counts per part, for ``run.json``."""
        out: dict = {"protocol": self.protocol, "source": self.source, "file": SPLITS_FILE, "seed": self.seed,
                     "generated": self.generated, "class_disjoint": self.class_disjoint}
        for name in (*PARTS, *self.test_parts):
            idx = getattr(self, name) if name in PARTS else self.test_parts[name]
            out[name] = {"videos": int(idx.size), "classes": int(np.unique(labels[idx]).size)}
        return out

    def record(self, cache: FeatureCache) -> dict:
        """The ``splits.json`` document: every part by video key and by class name."""
        keys, names, labels = cache.video_keys, cache.classes, cache.labels
        parts = self.indices
        return {"format": SPLITS_FORMAT, "protocol": self.protocol, "source": self.source, "seed": self.seed,
                "generated": self.generated, "class_disjoint": self.class_disjoint, "notes": list(self.notes),
                "videos": {n: [keys[i] for i in idx] for n, idx in parts.items()},
                "classes": {n: [names[c] for c in np.unique(labels[idx])] for n, idx in parts.items()}}

    @classmethod
    def load(cls, run_dir: str | os.PathLike, cache: FeatureCache, *, resume_as: str | None = None) -> SplitPlan:
        """The split a run recorded (``splits.json``), mapped onto ``cache`` by video key.

        ``eval --run`` scores it on any store (a recorded video the store lacks is counted in
        :attr:`missing`). ``resume_as``: the protocol of a run being resumed; a resumed run keeps
        its split whatever the store holds now (videos added since would otherwise re-plan it, and
        a class the record lists as test could train), so a one-line error when the record is for
        another protocol, or the store no longer holds a recorded video, or labels one with
        another class.
        """
        path = Path(run_dir) / SPLITS_FILE
        why = f"cannot resume {run_dir}: " if resume_as is not None else ""
        if not path.is_file() and resume_as is None:
            raise RunError(f"run {run_dir} does not record the split it was trained on (no {SPLITS_FILE}: trained by "
                           "an older clipcache); train it again, or pass --allow-overlap to evaluate it unchecked")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            videos, classes = doc["videos"], doc["classes"]
            parts = {name: list(videos[name]) for name in videos}
            recorded = {name: list(c) for name, c in classes.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise RunError(f"{why}{path} is not a clipcache split record ({err})") from err
        protocol = doc.get("protocol", "?")
        if resume_as is not None and protocol != resume_as:
            raise RunError(f"{why}its split record is for the {doc.get('protocol')} protocol, not {resume_as}")
        pos = {k: i for i, k in enumerate(cache.video_keys)}
        names, labels = cache.classes, cache.labels
        idx: dict[str, np.ndarray] = {}
        missing: dict[str, int] = {}
        for part, keys in parts.items():
            idx[part] = np.array(sorted(pos[k] for k in keys if k in pos), dtype=np.int64)
            missing[part] = len(keys) - idx[part].size
            if resume_as is None:
                continue
            lost = [k for k in keys if k not in pos]
            if lost:
                raise RunError(f"{why}the store {cache.store.path} no longer holds {len(lost):,} of the "
                               f"{len(keys):,} {part} videos its recorded split ({SPLITS_FILE}) lists (e.g. video "
                               f"key {lost[0][:16]}); resume on the store it was trained on, or train a new run")
            now = sorted(names[int(c)] for c in np.unique(labels[idx[part]]))  # as record() names them
            if now != sorted(recorded.get(part, now)):
                raise RunError(f"{why}the store labels the {part} videos of its recorded split with other classes "
                               f"than {SPLITS_FILE} lists; resume on the store it was trained on, or train a new run")
        empty = np.zeros(0, np.int64)
        return cls(protocol, idx.get("train", empty), idx.get("val", empty), idx.get("test", empty),
                   str(doc.get("source", "recorded")), int(doc.get("seed", 0)), bool(doc.get("generated", False)),
                   list(doc.get("notes", [])),
                   {k[len("test_"):]: v for k, v in idx.items() if k.startswith("test_")},
                   bool(doc.get("class_disjoint", False)), {p: set(k) for p, k in parts.items()}, recorded, missing)


def rng(*keys: int) -> np.random.Generator:
    """A generator seeded by ``keys`` (a run's seed and the purpose / step it draws for)."""
    return np.random.default_rng(np.random.SeedSequence(keys))

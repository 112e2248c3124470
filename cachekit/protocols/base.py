"""What every protocol shares: the resolved split, the seeded splits, the run's split record, the
overlap guard, the all-way training feed and the scoring helpers of the video-level evaluators.

A protocol module (:mod:`.episodic`, :mod:`.allway`, :mod:`.zeroshot`, :mod:`.base2novel`) owns
its whole policy through one :class:`Protocol` object: :meth:`Protocol.plan` says which videos
train, which select the checkpoint and which test; :meth:`Protocol.feed` is its training feed;
:meth:`Protocol.evaluate` its evaluator. ``train`` and ``eval`` both call :meth:`Protocol.plan`
(``eval`` through the record the run left, :func:`load_run_split`), so the split a run is scored
on is the one it was trained for.

Held-out lists of a store (:func:`held_out_names`): ``test`` is the test list; without one, the
store's ``val`` list *is* the test list (ViFi-CLIP names its test lists ``val1.txt``, SSv2 ships
only ``validation.txt``), and checkpoint selection then uses a seeded part of the training
videos, never that list.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from ..errors import InputError, RunError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..cache import FeatureCache
    from ..methods.base import Method

SPLITS_FILE = "splits.json"  # also named in cachekit.runs
SPLITS_FORMAT = "clipcache-split"
PARTS = ("train", "val", "test")  # val: the videos that select the checkpoint


# --------------------------------------------------------------------------- resolved split
@dataclass
class SplitPlan:
    """Video indices (into the cache) per role, for one protocol.

    ``train``: the videos (and, through their labels, the only classes) training reads.
    ``val``: the videos that select the checkpoint; never test data.
    ``test``: the videos a run is scored on; ``test_parts`` splits them where the protocol
    reports parts (base-to-novel: ``base`` and ``novel``).
    ``generated``: some part was drawn here from ``seed`` rather than read from split files.
    ``class_disjoint``: no test class (novel class, for base-to-novel) trains or selects.
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

    def classes(self, labels: np.ndarray, part: str) -> np.ndarray:
        idx = getattr(self, part) if part in PARTS else self.test_parts[part]
        return np.unique(labels[idx])

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
        parts = {name: getattr(self, name) for name in PARTS}
        parts.update({f"test_{k}": v for k, v in self.test_parts.items()})
        return {"format": SPLITS_FORMAT, "protocol": self.protocol, "source": self.source, "seed": self.seed,
                "generated": self.generated, "class_disjoint": self.class_disjoint, "notes": list(self.notes),
                "videos": {n: [keys[i] for i in idx] for n, idx in parts.items()},
                "classes": {n: [names[c] for c in np.unique(labels[idx])] for n, idx in parts.items()}}


@dataclass
class RunSplit:
    """A run's recorded split mapped onto the store being evaluated."""

    protocol: str
    keys: dict[str, set[str]]  # part -> video keys
    classes: dict[str, list[str]]  # part -> class names
    indices: dict[str, np.ndarray]  # part -> indices of the store's videos among them
    missing: dict[str, int]  # part -> recorded videos this store lacks
    notes: list[str]
    class_disjoint: bool = False  # the run's test classes were never training classes

    @property
    def seen_keys(self) -> set[str]:
        """Videos the run trained on or selected its checkpoint with."""
        return self.keys.get("train", set()) | self.keys.get("val", set())

    def shots(self, labels: np.ndarray) -> int | None:
        """Training videos per class when every class has the same number (the run's K), else None."""
        idx = self.indices.get("train", np.zeros(0, np.int64))
        if self.missing.get("train") or idx.size == 0:
            return None
        counts = np.unique(np.bincount(labels[idx])[np.unique(labels[idx])])
        return int(counts[0]) if counts.size == 1 else None


def load_run_split(run_dir: str | os.PathLike, cache: FeatureCache) -> RunSplit:
    """The split a run recorded (``splits.json``), mapped onto ``cache`` by video key."""
    path = Path(run_dir) / SPLITS_FILE
    if not path.is_file():
        raise RunError(f"run {run_dir} does not record the split it was trained on (no {SPLITS_FILE}: trained by "
                       "an older clipcache); train it again, or pass --allow-overlap to evaluate it unchecked")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        videos, classes = doc["videos"], doc["classes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path} is not a clipcache split record ({err})") from err
    pos = {k: i for i, k in enumerate(cache.video_keys)}
    idx, missing = {}, {}
    for part, keys in videos.items():
        found = [pos[k] for k in keys if k in pos]
        idx[part] = np.array(sorted(found), dtype=np.int64)
        missing[part] = len(keys) - len(found)
    return RunSplit(doc.get("protocol", "?"), {p: set(k) for p, k in videos.items()},
                    {p: list(c) for p, c in classes.items()}, idx, missing, list(doc.get("notes", [])),
                    bool(doc.get("class_disjoint", False)))


def recorded_plan(run_dir: str | os.PathLike, cache: FeatureCache, protocol: str) -> SplitPlan:
    """The split a run recorded (``splits.json``) as the plan it resumes with: a resumed run keeps
    its split whatever the store holds now (videos added since would otherwise re-plan it, and a
    class the record lists as test could train). A one-line error when the store no longer holds
    a recorded video, or labels one with another class."""
    path = Path(run_dir) / SPLITS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        videos, classes = doc["videos"], doc["classes"]
        parts = {name: list(videos[name]) for name in videos}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"cannot resume {run_dir}: {path} is not a clipcache split record ({err})") from err
    if doc.get("protocol") != protocol:
        raise RunError(f"cannot resume {run_dir}: its split record is for the {doc.get('protocol')} protocol, "
                       f"not {protocol}")
    pos = {k: i for i, k in enumerate(cache.video_keys)}
    names, labels = cache.classes, cache.labels
    idx: dict[str, np.ndarray] = {}
    for part, keys in parts.items():
        lost = [k for k in keys if k not in pos]
        if lost:
            raise RunError(f"cannot resume {run_dir}: the store {cache.store.path} no longer holds {len(lost):,} of the "
                           f"{len(keys):,} {part} videos its recorded split ({SPLITS_FILE}) lists (e.g. video key "
                           f"{lost[0][:16]}); resume on the store it was trained on, or train a new run")
        idx[part] = np.array(sorted(pos[k] for k in keys), dtype=np.int64)
        now = sorted(names[int(c)] for c in np.unique(labels[idx[part]]))  # as SplitPlan.record names them
        if now != sorted(classes.get(part, now)):
            raise RunError(f"cannot resume {run_dir}: the store labels the {part} videos of its recorded split with "
                           f"other classes than {SPLITS_FILE} lists; resume on the store it was trained on, or "
                           "train a new run")
    empty = np.zeros(0, np.int64)
    plan = SplitPlan(protocol, idx.get("train", empty), idx.get("val", empty), idx.get("test", empty),
                     str(doc.get("source", "recorded")), int(doc.get("seed", 0)), bool(doc.get("generated", False)),
                     list(doc.get("notes", [])), {k[len("test_"):]: v for k, v in idx.items() if k.startswith("test_")},
                     bool(doc.get("class_disjoint", False)))
    return plan


# --------------------------------------------------------------------------- store lists
def store_lists(cache: FeatureCache) -> dict[str, np.ndarray]:
    """Labelled videos of every split the store was extracted with (name -> sorted indices)."""
    labels = cache.labels
    return {name: s.indices[labels[s.indices] >= 0] for name, s in cache.splits().items()}


def held_out_names(names) -> tuple[str | None, str | None]:
    """(test list, selection list) among a store's split names.

    ``test`` is the test list and ``val`` then selects; without ``test``, ``val`` is the test
    list (ViFi-CLIP ``val1.txt``, SSv2 ``validation.txt``) and there is no selection list.
    """
    names = set(names)
    if "test" in names:
        return "test", ("val" if "val" in names else None)
    if "val" in names:
        return "val", None
    return None, None


def labelled_videos(cache: FeatureCache) -> np.ndarray:
    """Every labelled video of a store without split files; an error when there is none."""
    labelled = np.flatnonzero(cache.labels >= 0)
    if labelled.size == 0:
        raise InputError(f"store {cache.store.path} holds no labelled videos; training needs class labels")
    return labelled


NO_TEST_LIST = ("the store has no test list: the run has no test split (score it with --split / --split-file on "
                "videos it never saw, or on another store; eval checks them for overlap)")


def listed_plan(protocol: str, cache: FeatureCache, lists: dict[str, np.ndarray],
                seed: int) -> tuple["SplitPlan", str | None, str | None]:
    """A plan that trains on the store's ``train`` list, and the (test, selection) list names
    (:func:`held_out_names`); the caller decides what tests and what selects."""
    if "train" not in lists:
        raise InputError(f"store {cache.store.path} has split files but no 'train' split "
                         f"({', '.join(sorted(lists))}); training needs one")
    test_name, sel_name = held_out_names(lists)
    plan = SplitPlan(protocol, lists["train"], np.zeros(0, np.int64), np.zeros(0, np.int64),
                     f"store split files ({', '.join(sorted(lists))})", seed)
    return plan, test_name, sel_name


def rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(keys))


def split_classes(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int,
                  least: int = 1):
    """Seeded class-disjoint split of ``pool`` into (train, val, test) by fractions (val, test).

    Val (and test, when its fraction is > 0) get at least ``least`` classes (the episode ways)
    where the class count allows, so that validation episodes can be drawn.
    """
    classes = np.unique(labels[pool])
    n = classes.size
    n_val = round(fractions[0] * n)
    n_test = round(fractions[1] * n)
    held = 2 if fractions[1] > 0 else 1
    if n - held * least >= 1:
        n_val, n_test = max(n_val, least), (max(n_test, least) if fractions[1] > 0 else 0)
    n_val = max(n_val, 1)
    n_test = max(n_test, 1) if fractions[1] > 0 else 0
    if n - n_val - n_test < 1:
        raise InputError(f"cannot split {n} classes into train/val{'/test' if fractions[1] else ''} "
                         "class-disjointly; give the store split files")
    perm = rng(seed, 0x5917).permutation(classes)
    val_c, test_c = perm[:n_val], perm[n_val:n_val + n_test]
    lab = labels[pool]
    return (np.sort(pool[~np.isin(lab, np.concatenate([val_c, test_c]))]),
            np.sort(pool[np.isin(lab, val_c)]), np.sort(pool[np.isin(lab, test_c)]))


def split_videos(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int):
    """Seeded per-class split of ``pool``'s videos into (train, val, test); train keeps >= 1 per class."""
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(labels[pool]):
        vids = rng(seed, 0x5918, int(c)).permutation(pool[labels[pool] == c])
        n = vids.size
        n_val = min(n - 1, max(1 if n >= 2 else 0, round(fractions[0] * n)))
        n_test = min(n - 1 - n_val, round(fractions[1] * n))
        parts[1].append(vids[:n_val])
        parts[2].append(vids[n_val:n_val + n_test])
        parts[0].append(vids[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def disjoint_videos(plan: SplitPlan, where: str) -> None:
    """Drop test videos from train and val, and val videos from train, saying how many.

    Published lists overlap (ViFi-CLIP's train split 1 and its test splits 2 and 3,
    protocols.md §6.2): a video never trains or selects and also tests.
    """
    held = np.concatenate([plan.test, *plan.test_parts.values()]) if plan.test_parts else plan.test
    for part, against in (("train", held), ("val", held)):
        idx = getattr(plan, part)
        shared = np.intersect1d(idx, against)
        if shared.size and part == "train" and shared.size == idx.size:
            raise InputError(f"every video of {where} training list is also a test video: nothing is left to "
                             "train on without training on the test list; give split files whose train and test "
                             "lists differ")
        if shared.size:
            setattr(plan, part, np.setdiff1d(idx, shared))
            plan.notes.append(f"{shared.size} videos of {where} {part} list are also test videos: left out of {part}")
    shared = np.intersect1d(plan.train, plan.val)
    if shared.size:
        plan.train = np.setdiff1d(plan.train, shared)
        plan.notes.append(f"{shared.size} videos are in both the training and the selection list: left out of training")


def disjoint_classes(plan: SplitPlan, labels: np.ndarray, names: list[str], test_part: str = "test") -> None:
    """Class-disjoint protocols: no test class trains or selects (one-line error naming one)."""
    plan.class_disjoint = True
    test_c = plan.classes(labels, test_part)
    for part in ("train", "val"):
        shared = np.intersect1d(plan.classes(labels, part), test_c)
        if shared.size:
            raise InputError(
                f"the {plan.protocol} protocol tests on classes never seen in training, but {shared.size} test "
                f"classes are also {'training' if part == 'train' else 'selection'} classes (e.g. "
                f"{names[int(shared[0])]!r}); use --protocol allway for a test list of the training classes")


def finish(plan: SplitPlan, cache: FeatureCache) -> SplitPlan:
    if plan.train.size == 0:
        raise InputError(f"the {plan.protocol} protocol found no labelled training videos in {cache.store.path}")
    return plan


# --------------------------------------------------------------------------- overlap guard
def overlap_problems(run: RunSplit, cache: FeatureCache, eval_idx: np.ndarray,
                     disjoint_idx: np.ndarray | None) -> list[str]:
    """What an evaluation set shares with the run's training: videos (training or selection) and,
    for the videos in ``disjoint_idx`` (a class-disjoint protocol's test videos), training classes."""
    keys, labels, names = cache.video_keys, cache.labels, cache.classes
    seen = run.seen_keys
    out = []
    n = sum(1 for i in np.unique(eval_idx) if keys[i] in seen)
    if n:
        out.append(f"{n:,} of the {np.unique(eval_idx).size:,} evaluated videos were training or selection "
                   "videos of the run")
    if disjoint_idx is not None and disjoint_idx.size:
        trained = set(run.classes.get("train", []))
        shared = sorted({names[int(c)] for c in np.unique(labels[disjoint_idx])} & trained)
        if shared:
            out.append(f"{len(shared)} evaluated classes were training classes of the run (e.g. {shared[0]!r}), "
                       "in a protocol that tests on unseen classes")
    return out


# --------------------------------------------------------------------------- training data
def training_data(cache: FeatureCache, needs, device, classes: np.ndarray, encoder=None):
    """:class:`~cachekit.batches.CacheData` whose text table holds only ``classes``' rows (the
    training and selection classes): no other class's text is read, and a method that touched a
    NaN row of one would turn its loss NaN (the trainer stops)."""
    from ..batches import CacheData

    return CacheData(cache, needs, device, encoder=encoder, text_classes=classes)


class VideoFeed:
    """All-way mini-batch training feed and validation (protocols.md §3, §4, §5).

    Labels and text rows are restricted to one class set at a time (the training classes while
    training, the selection classes while validating), and the method is told the names behind
    the rows (``bind_classes``) whenever the set changes: no other class's text or name is used.
    """

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg):
        self.data, self.cfg = data, cfg
        self.train_idx, self.val_idx = plan.train, plan.val if cfg.val_episodes else np.zeros(0, np.int64)
        self.steps_per_epoch = math.ceil(plan.train.size / cfg.batch_size)
        self.steps = cfg.epochs * self.steps_per_epoch
        self.notes: list[str] = []
        self.names = list(data.cache.classes)
        self.train_classes = np.unique(labels[plan.train])
        self.val_classes = np.unique(labels[self.val_idx]) if self.val_idx.size else self.train_classes
        if np.isin(self.val_classes, self.train_classes).all():
            self.notes.append(f"training on the {self.train_classes.size} training classes' text only")
        else:
            self.notes.append(f"zero-shot training: {self.train_classes.size} training classes' text; validation on "
                              f"{self.val_classes.size} unseen classes")

    def _use(self, method, classes: np.ndarray):
        import torch

        method.bind_classes([self.names[i] for i in classes])
        remap = torch.full((len(self.names),), -1, dtype=torch.long)
        remap[torch.from_numpy(classes)] = torch.arange(classes.size)
        return self.data.text[torch.from_numpy(classes).to(self.data.text.device)], remap

    def first(self, method):
        text, _ = self._use(method, self.train_classes)
        return method.video_logits(self.data.batch(self.train_idx[: self.cfg.batch_size]), text)

    def step_loss(self, method, step: int) -> float:
        text, remap = self._use(method, self.train_classes)
        epoch, i = divmod(step, self.steps_per_epoch)
        order = rng(self.cfg.seed, 0xA11, epoch).permutation(self.train_idx)
        idx = order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        batch = self.data.batch(idx, view=None, rng=rng(self.cfg.seed, step))
        batch.labels = remap.to(batch.labels.device)[batch.labels]
        loss, _ = method.video_loss(batch, text)
        loss.backward()
        return float(loss.detach())

    def validate(self, method) -> tuple[float, float]:
        from ..episodes import accuracy_ci

        text, remap = self._use(method, self.val_classes)
        correct = []
        for i in range(0, self.val_idx.size, self.cfg.batch_size):
            batch = self.data.batch(self.val_idx[i:i + self.cfg.batch_size])
            hit = method.video_logits(batch, text).argmax(-1).cpu() == remap[batch.labels.cpu()]
            correct.append(hit.float().numpy())
        self._use(method, self.train_classes)
        return accuracy_ci(np.concatenate(correct))


# --------------------------------------------------------------------------- evaluation
@dataclass
class Pools:
    """Which videos an evaluation reads, and what the report must say about them."""

    eval_name: str | None  # None: all labelled videos of the store, or the run's test split
    eval_idx: np.ndarray  # [N] labelled videos to evaluate on
    splits: dict  # name -> cachekit.cache.Split
    notes: list[str] = field(default_factory=list)
    run: RunSplit | None = None  # the trained run's recorded split (scored on its own test split)
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # base2novel: the run's base / novel test parts

    def get(self, name: str):
        return self.splits.get(name)


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
    for a in range(0, idx.size, batch):
        b = data.batch(idx[a:a + batch], view=0)
        logits = method.video_logits(b, text)  # [B, C]
        out[a:a + batch] = classes[logits.argmax(dim=-1).cpu().numpy()]
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
                      videos=int(np.unique(idx).size), classes=int(np.unique(true).size),
                      per_class=per_class(conf, names), confusion=conf, class_names=names,
                      notes=list(notes), extra=dict(extra or {}))


class Protocol:
    """One protocol's policy: its split, its training feed, its evaluator, and the traits callers
    ask for instead of its name.

    ``class_disjoint``: its test classes are never training classes (episodic, zero-shot; the
    novel part of base-to-novel). ``trains``: ``train --protocol`` accepts it.
    ``unit``: what a training step draws and an evaluation counts (``"episodes"`` or ``"videos"``).
    ``default_shots`` / ``min_shots``: ``TrainConfig.shots`` when not given, and its least value.
    ``takes_episode_file``: ``eval --episodes-file`` applies (episodes re-used from a file).
    ``shot_curve``: what several ``eval --shots`` give: ``"always"`` one result per K, ``"support"``
    only for a method that fits support prototypes (else refused), ``"never"`` refused.
    ``training_text``: the class text training reads: ``"seen"`` the training and selection
    classes' rows always (the video-level feeds score against them), ``"method"`` those rows only
    when the method reads text. No protocol reads an unseen class's text while training.
    ``default_method``: the no-training method ``eval`` builds without ``--method``.
    ``scores_unseen_by_text``: it scores classes a method never trained on, which only a
    text-based method can (``predicts == "text"``).
    ``test_parts``: the named parts of its test split (base-to-novel: base and novel), each scored
    against its own class set.
    ``claim_priority``: the order in which :meth:`claims` is asked (higher first).
    """

    name: ClassVar[str] = ""
    class_disjoint: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    unit: ClassVar[Literal["episodes", "videos"]] = "videos"
    default_shots: ClassVar[int] = 0
    min_shots: ClassVar[int] = 0
    takes_episode_file: ClassVar[bool] = False
    shot_curve: ClassVar[Literal["always", "support", "never"]] = "never"
    training_text: ClassVar[Literal["seen", "method"]] = "seen"
    default_method: ClassVar[str] = "zeroshot"
    scores_unseen_by_text: ClassVar[bool] = False
    test_parts: ClassVar[tuple[str, ...]] = ()
    claim_priority: ClassVar[int] = 0

    def plan(self, cache: FeatureCache, cfg) -> SplitPlan:
        raise NotImplementedError

    def claims(self, cache: FeatureCache, lists: dict[str, np.ndarray]) -> bool:
        """Whether the store's split files (``lists``: name -> indices) are laid out for this
        protocol, so that ``train`` picks it for a method that trains under several."""
        return False

    def feed(self, data, labels: np.ndarray, plan: SplitPlan, cfg):
        return VideoFeed(data, labels, plan, cfg)

    def items_per_step(self, cfg) -> int:
        """Videos or episodes (:attr:`unit`) one optimiser step reads on one process."""
        return cfg.batch_size

    def default_val_every(self, steps: int, steps_per_epoch: int) -> int:
        """Steps between validations when ``--val-every`` is 0: each epoch."""
        return steps_per_epoch

    def store_lists_evaluated(self, splits) -> tuple[str, ...]:
        """Store splits the evaluator reads by itself when no ``--split`` is given (then none is
        chosen); empty: one held-out split is chosen for it."""
        return ()

    def disjoint_part(self, pools: Pools, labels: np.ndarray) -> np.ndarray | None:
        """Evaluated videos whose classes must be unseen in training (None: no class check)."""
        return pools.eval_idx if self.class_disjoint else None

    def evaluate(self, job: EvalJob) -> list:
        raise NotImplementedError

    def result_line(self, r) -> str:
        """One line for an :class:`~cachekit.report.EvalResult` of this protocol."""
        text = (f"{r.method} [{r.protocol}, {self._what(r)}, {r.metric}]: {r.accuracy:.2f} ± {r.ci95:.2f} % "
                f"(95% CI over {r.episodes:,} {self.unit}){self._second_interval(r)}")
        if r.videos is not None:
            text += f"; {r.videos:,} distinct test videos, {r.classes:,} classes"
        return text + self._parts_line(r)

    def _what(self, r) -> str:
        """The set-up in the line's brackets (ways, shots, classes)."""
        return f"{len(r.class_names)} classes"

    def _second_interval(self, r) -> str:
        return ""  # video-level protocols: the video interval is the interval

    def _parts_line(self, r) -> str:
        return ""

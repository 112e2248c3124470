"""The generic trainer: any method, trained from a feature cache under one protocol.

The trainer knows protocols, never method names. Episodic training draws N-way K-shot episodes
from the training split and calls ``method.episode_loss``; all-way training draws mini-batches of
training videos and calls ``method.video_loss`` against the text of every class. Both use AdamW
(weight decay on matrices only) with a linear warm-up and a cosine schedule, validate on the
validation split only (never test), keep the best weights in ``model.safetensors`` and the latest
in ``last.safetensors`` + ``resume.pt``, and describe the run in ``run.json`` (:mod:`.runs`).

Splits come from the store's split files (``FeatureCache.splits()``). A store without them gets a
seeded split that the run records in ``splits.json`` and its notes: class-disjoint for episodic
training, per-class over videos for all-way. A run is deterministic given its seed: the episodes
of step ``s`` and batch ``j`` are functions of (seed, s / j), and the torch RNG (dropout, template
draws) is saved with each checkpoint, so ``resume`` continues to the same weights a straight run
reaches.

A method whose ``needs.backbone`` is set is given the frozen encoder of the store's cache key;
every other method gets a :class:`~cachekit.runs.DeferredEncoder` that is never loaded.

Also here: :func:`parse_options` (``key=value`` method options typed by the method's Config),
:func:`model_info_for` (sizes of a model from its config, no weights) and :func:`list_methods`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from .errors import ClipcacheError, InputError, ModelError, RunError
from .distributed import dist_from_env
from .runs import (LAST_FILE, MODEL_FILE, RUN_FORMAT, RUN_JSON, RUN_VERSION, SPLITS_FILE, STATE_FILE,
                   DeferredEncoder, checked_file, load_into, load_store_encoder,
                   load_weights, pending, publish_pending, read_run, save_state, save_weights,
                   write_json)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved, resolved, in ``run.json``.

    protocol: "episodic" (N-way K-shot episodes, ``episode_loss``), "allway" (mini-batches over
        every class, ``video_loss``) or "zeroshot" (all-way mini-batches over the training
        classes' text only, validated on the unseen val classes: class-disjoint splits, as EZ-CLIP
        and EV-CLIP train for zero-shot transfer).
    ways, shots, queries: episodic W, K and training queries per class (CLIP-FSAR trains with
        5). ``shots`` for all-way: K training videos per class (0: every training video).
        Default: 1 episodic, 0 all-way.
    episodes, episodes_per_step: episodic budget (10,000 MA-FSAR; 100,000 for SSv2) and episodes
        averaged per optimiser step.
    epochs, batch_size: all-way budget.
    lr, weight_decay, warmup, grad_clip: AdamW, warm-up fraction of the steps, then cosine to 0;
        grad_clip 0 = off.
    val_every: steps between validations (0: ten per run, each epoch for all-way).
    val_episodes, val_queries: validation episodes (1 query per class, as at test); 0 = no
        validation, the final weights are the model.
    """

    protocol: Literal["episodic", "allway", "zeroshot"] = "episodic"
    ways: int = 5
    shots: int | None = None
    queries: int = 5
    episodes: int = 10000
    episodes_per_step: int = 1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.05
    grad_clip: float = 0.0
    val_every: int = 0
    val_episodes: int = 1000
    val_queries: int = 1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.protocol not in ("episodic", "allway", "zeroshot"):
            raise InputError(f"--protocol must be episodic, allway or zeroshot, not {self.protocol!r}")
        if self.shots is None:
            object.__setattr__(self, "shots", 1 if self.protocol == "episodic" else 0)
        low = {"ways": 1, "shots": 1 if self.protocol == "episodic" else 0, "queries": 1, "episodes": 1,
               "episodes_per_step": 1, "epochs": 1, "batch_size": 1, "val_every": 0, "val_episodes": 0,
               "val_queries": 1, "seed": 0}
        for name, least in low.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup < 1 or self.grad_clip < 0:
            raise InputError(f"need lr > 0, weight decay >= 0, 0 <= warmup < 1, grad clip >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup}, {self.grad_clip}")


# --------------------------------------------------------------------------- splits
@dataclass
class SplitPlan:
    """Video indices per split; ``generated``: made here (saved to ``splits.json``)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    generated: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self, labels: np.ndarray) -> dict:
        out = {"source": self.source, "file": SPLITS_FILE if self.generated else None}
        for name in ("train", "val", "test"):
            idx = getattr(self, name)
            out[name] = {"videos": int(idx.size), "classes": int(np.unique(labels[idx]).size)}
        return out


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(keys))


def _split_classes(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int,
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
    if n - n_val - n_test < 1:
        raise InputError(f"cannot split {n} classes into train/val{'/test' if fractions[1] else ''} "
                         "class-disjointly; give the store split files")
    perm = _rng(seed, 0x5917).permutation(classes)
    val_c, test_c = perm[:n_val], perm[n_val:n_val + n_test]
    lab = labels[pool]
    return (np.sort(pool[~np.isin(lab, np.concatenate([val_c, test_c]))]),
            np.sort(pool[np.isin(lab, val_c)]), np.sort(pool[np.isin(lab, test_c)]))


def _split_videos(labels: np.ndarray, pool: np.ndarray, fractions: tuple[float, float], seed: int):
    """Seeded per-class split of ``pool``'s videos into (train, val, test); train keeps >= 1 per class."""
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(labels[pool]):
        vids = _rng(seed, 0x5918, int(c)).permutation(pool[labels[pool] == c])
        n = vids.size
        n_val = min(n - 1, max(1 if n >= 2 else 0, round(fractions[0] * n)))
        n_test = min(n - 1 - n_val, round(fractions[1] * n))
        parts[1].append(vids[:n_val])
        parts[2].append(vids[n_val:n_val + n_test])
        parts[0].append(vids[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def plan_splits(cache, cfg: TrainConfig) -> SplitPlan:
    """Train / val / test videos for ``cfg.protocol`` from the store's split files, else seeded."""
    from .episodes import allway_kshot

    labels = cache.labels
    labelled = np.flatnonzero(labels >= 0)
    if labelled.size == 0:
        raise InputError(f"store {cache.store.path} holds no labelled videos; training needs class labels")
    store = cache.splits()
    empty = np.zeros(0, np.int64)
    notes: list[str] = []
    def labelled_in(name: str) -> np.ndarray:
        idx = store[name].indices if name in store else empty
        return idx[labels[idx] >= 0]

    if "train" in store:
        plan = SplitPlan(labelled_in("train"), labelled_in("val"), labelled_in("test"),
                         f"store split files ({', '.join(sorted(store))})", False, notes)
    elif cfg.protocol in ("episodic", "zeroshot"):
        tr, va, te = _split_classes(labels, labelled, (0.2, 0.2), cfg.seed, cfg.ways)
        plan = SplitPlan(tr, va, te, "generated", True, notes)
        notes.append(f"the store has no split files: made a seeded class-disjoint split (seed {cfg.seed}) of its "
                     f"classes: {np.unique(labels[tr]).size} train, {np.unique(labels[va]).size} val, "
                     f"{np.unique(labels[te]).size} test (saved in {SPLITS_FILE})")
    else:
        tr, va, te = _split_videos(labels, labelled, (0.2, 0.2), cfg.seed)
        plan = SplitPlan(tr, va, te, "generated", True, notes)
        notes.append(f"the store has no split files: split every class's videos 60/20/20 into train/val/test "
                     f"(seed {cfg.seed}; saved in {SPLITS_FILE})")
    if plan.train.size == 0:
        raise InputError(f"split 'train' of {cache.store.path} has no labelled videos")
    train_classes = set(np.unique(labels[plan.train]).tolist())
    if cfg.protocol in ("episodic", "zeroshot"):
        if plan.val.size == 0:
            plan.train, plan.val, _ = _split_classes(labels, plan.train, (0.2, 0.0), cfg.seed, cfg.ways)
            plan.generated = True
            notes.append(f"no val split: held out {np.unique(labels[plan.val]).size} of the training classes "
                         f"for validation (seed {cfg.seed}; saved in {SPLITS_FILE})")
        shared = np.intersect1d(labels[plan.train], labels[plan.val]).size
        if shared:
            notes.append(f"val shares {shared} classes with train: validation episodes are not class-disjoint")
        return plan
    unseen = set(np.unique(labels[plan.test]).tolist()) - train_classes
    if unseen:
        raise InputError(
            f"the all-way protocol tests on the training classes, but {len(unseen)} test classes have no "
            "training videos (class-disjoint split files are for --protocol episodic)"
        )
    rest = empty
    if cfg.shots:
        chosen = allway_kshot(labels, plan.train, cfg.shots, cfg.seed, "train")
        rest = np.setdiff1d(plan.train, chosen)
        plan.train = chosen
        notes.append(f"all-way {cfg.shots}-shot training list drawn from split 'train' (seed {cfg.seed})")
    if plan.val.size == 0 or set(np.unique(labels[plan.val]).tolist()) - train_classes:
        plan.generated = True
        if rest.size:
            plan.val = rest
            notes.append("validation on the split-'train' videos left out of the K-shot list")
        else:
            plan.train, plan.val, _ = _split_videos(labels, plan.train, (0.2, 0.0), cfg.seed)
            notes.append(f"no val split over the training classes: held out 20% of each class's training "
                         f"videos for validation (seed {cfg.seed})")
    return plan


# --------------------------------------------------------------------------- protocols
class _Episodic:
    """Episodic training feed and validation (protocols.md §2)."""

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg: TrainConfig):
        from .episodes import EpisodeBatcher, EpisodeIndex, EpisodeSampler
        from .resident import ResidentFeatures

        self.data, self.cfg = data, cfg
        self.batcher = EpisodeBatcher(labels, plan.train, cfg.ways, cfg.shots, cfg.queries, cfg.episodes_per_step,
                                      cfg.seed, data.views, "train")  # a step's episodes as index arrays
        self.sampler = self.batcher.sampler
        self.val_specs = []
        if cfg.val_episodes:
            val = EpisodeSampler(labels, plan.val, cfg.ways, cfg.shots, cfg.val_queries, cfg.seed, "val")
            self.val_specs = val.sample(cfg.val_episodes)
        self.val_index = EpisodeIndex.of(self.val_specs)
        # features stay resident on the device (no store I/O in a step); pixels are decoded per episode
        self.feats = None if data.needs.pixels else ResidentFeatures.load(data, np.union1d(plan.train, plan.val))
        self.steps = math.ceil(cfg.episodes / cfg.episodes_per_step)
        self.steps_per_epoch = self.steps
        self.notes = self.sampler.notes + (self.feats.notes if self.feats is not None else [])

    def first(self, method):
        return method.episode_logits(self.data.episode(self.sampler.episode(0)))

    def step_loss(self, method, step: int) -> float:
        """Forward and backward one optimiser step's episodes; returns the mean loss."""
        from .resident import episodic_step_loss

        k = self.cfg.episodes_per_step
        index = self.batcher.sample(step, max(1, min(k, self.cfg.episodes - step * k)))
        if self.feats is not None:
            return episodic_step_loss(method, self.feats, index)
        rng = _rng(self.cfg.seed, step)
        total = 0.0
        for spec in index.specs():
            ep = self.data.episode(spec, view=None, rng=rng)
            loss, _ = method.episode_loss(ep)
            (loss / len(index)).backward()
            total += float(loss.detach())
        return total / len(index)

    def validate(self, method) -> tuple[float, float]:
        from .episodes import accuracy_ci
        from .resident import episodic_accuracy

        if self.feats is not None:
            chunk = max(32, self.cfg.episodes_per_step)
            return accuracy_ci(episodic_accuracy(method, self.feats, self.val_index, chunk))
        per = []
        for spec in self.val_specs:
            ep = self.data.episode(spec)
            per.append(float((method.episode_logits(ep).argmax(-1) == ep.query_labels).float().mean()))
        return accuracy_ci(np.array(per))


class _AllWay:
    """All-way mini-batch training feed and validation (protocols.md §3)."""

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg: TrainConfig):
        self.data, self.cfg = data, cfg
        self.train_idx, self.val_idx = plan.train, plan.val if cfg.val_episodes else np.zeros(0, np.int64)
        self.steps_per_epoch = math.ceil(plan.train.size / cfg.batch_size)
        self.steps = cfg.epochs * self.steps_per_epoch
        self.notes: list[str] = []

    def first(self, method):
        return method.video_logits(self.data.batch(self.train_idx[: self.cfg.batch_size]), self.data.text)

    def step_loss(self, method, step: int) -> float:
        epoch, i = divmod(step, self.steps_per_epoch)
        order = _rng(self.cfg.seed, 0xA11, epoch).permutation(self.train_idx)
        idx = order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        batch = self.data.batch(idx, view=None, rng=_rng(self.cfg.seed, step))
        loss, _ = method.video_loss(batch, self.data.text)
        loss.backward()
        return float(loss.detach())

    def validate(self, method) -> tuple[float, float]:
        from .episodes import accuracy_ci

        correct = []
        for i in range(0, self.val_idx.size, self.cfg.batch_size):
            batch = self.data.batch(self.val_idx[i:i + self.cfg.batch_size])
            hit = method.video_logits(batch, self.data.text).argmax(-1) == batch.labels
            correct.append(hit.float().cpu().numpy())
        return accuracy_ci(np.concatenate(correct))


class _ZeroShot(_AllWay):
    """All-way training over the training classes only, zero-shot validation on the val classes.

    Labels and text rows are restricted to one class set at a time, and the method is told the
    names behind the rows (``bind_classes``) whenever the set changes.
    """

    def __init__(self, data, labels: np.ndarray, plan: SplitPlan, cfg: TrainConfig):
        super().__init__(data, labels, plan, cfg)
        self.names = list(data.cache.classes)
        self.train_classes = np.unique(labels[plan.train])
        self.val_classes = np.unique(labels[self.val_idx]) if self.val_idx.size else self.train_classes
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
        order = _rng(self.cfg.seed, 0xA11, epoch).permutation(self.train_idx)
        idx = order[i * self.cfg.batch_size:(i + 1) * self.cfg.batch_size]
        batch = self.data.batch(idx, view=None, rng=_rng(self.cfg.seed, step))
        batch.labels = remap.to(batch.labels.device)[batch.labels]
        loss, _ = method.video_loss(batch, text)
        loss.backward()
        return float(loss.detach())

    def validate(self, method) -> tuple[float, float]:
        from .episodes import accuracy_ci

        text, remap = self._use(method, self.val_classes)
        correct = []
        for i in range(0, self.val_idx.size, self.cfg.batch_size):
            batch = self.data.batch(self.val_idx[i:i + self.cfg.batch_size])
            hit = method.video_logits(batch, text).argmax(-1).cpu() == remap[batch.labels.cpu()]
            correct.append(hit.float().numpy())
        self._use(method, self.train_classes)
        return accuracy_ci(np.concatenate(correct))


# --------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    run_dir: str
    status: str  # "complete" or "stopped"
    step: int
    steps: int
    best_val_accuracy: float | None  # percent
    best_step: int | None
    trainable_params: int
    seconds: float
    history: list[dict]
    notes: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(params: list, lr: float, weight_decay: float):
    """AdamW with weight decay on matrices only (not biases, norms, scales), fused kernels."""
    import torch

    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=True)


def lr_lambda(warmup: int, total: int):
    """Learning-rate factor at a step: linear warm-up over ``warmup`` steps, then cosine to 0."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return f


def _environment(device) -> dict:
    import torch

    try:
        import open_clip
        oc = open_clip.__version__
    except ImportError:
        oc = None
    env = {"python": platform.python_version(), "torch": torch.__version__, "open_clip": oc,
           "machine": f"{platform.system()} {platform.machine()}", "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block (0: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_out_dir(out: Path, resume: bool) -> dict | None:
    if (out / RUN_JSON).is_file():
        meta = read_run(out)
        if not resume:
            what = "a finished run" if meta.get("status") == "complete" else "an unfinished run (pass --resume to continue it)"
            raise RunError(f"{out} already holds {what}; choose another --out")
        return meta
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} exists and is not a run directory; choose another --out")
    return None


def _same_run(old: dict, new: dict, out: Path) -> None:
    pairs = {"method": (old["method"]["name"], new["method"]["name"]),
             "method config": (old["method"]["config"], new["method"]["config"]),
             "training config": (old["train"]["config"], new["train"]["config"]),
             "store cache key": (old["store"]["cache_key"], new["store"]["cache_key"])}
    diff = [k for k, (a, b) in pairs.items() if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True)]
    if diff:
        raise RunError(f"cannot resume {out}: its {', '.join(diff)} differ from this command's; "
                       "repeat the original options or choose another --out")


def train(store: str, out: str, method: str, overrides: dict | None = None, cfg: TrainConfig | None = None,
          *, resume: bool = False, pretrained: str | None = None, progress: bool = True,
          stop_after: int | None = None, threads: int = 0) -> TrainResult:
    """Train ``method`` (name in ``METHODS``, Config ``overrides``) on ``store`` into run directory ``out``.

    ``resume``: continue the run in ``out`` from its last checkpoint (same options required).
    ``pretrained``: weights of the store's encoder, for methods that run the backbone when the
    cache key names a file. ``stop_after``: stop (resumably) once this many steps are done.
    ``threads``: torch intra-op threads while training (0: torch's default); a head on cached
    features works on small tensors, where one thread is often fastest on a shared CPU.
    """
    import torch
    from tqdm import tqdm

    from .batches import CacheData
    from .cache import FeatureCache
    from .encoder import pick_device
    from .methods import make_config, method_module

    cfg = cfg or TrainConfig()
    out = Path(out)
    mod = method_module(method)
    mcfg = make_config(method, overrides)
    old = _check_out_dir(out, resume)
    if old is not None and old.get("status") == "complete":
        return _result_from_meta(out, old)
    device = torch.device(pick_device(cfg.device))
    t_start = time.perf_counter()
    dist = dist_from_env()  # under torchrun: data-parallel for backbone methods, see below
    dist.barrier()  # every rank has checked --out before rank 0 writes into it
    main = dist.is_main  # only rank 0 writes the run directory
    with _torch_threads(threads), FeatureCache(store) as cache:
        key, info, frames = cache.key, cache.model_info, cache.frames
        plan = plan_splits(cache, cfg)
        notes = list(plan.notes)
        if str(key.get("weights", "")).startswith("random:"):
            notes.append("the store's encoder has RANDOM weights: accuracies carry no CLIP knowledge")
        torch.manual_seed(cfg.seed)
        backbone = DeferredEncoder(lambda: load_store_encoder(key, pretrained, str(device)))
        m = mod.build(mcfg, info, frames, backbone)
        m.bind_classes(list(cache.classes))
        if (cfg.protocol if cfg.protocol != "zeroshot" else "allway") not in m.protocols:
            raise InputError(f"method {method} trains under {' and '.join(m.protocols) or 'no protocol'}, "
                             f"not --protocol {cfg.protocol}")
        if dist.world > 1 and not m.needs.backbone:
            log.warning("%s trains from the cache, fast enough on one process: rank 0 trains, the other "
                        "%d ranks have nothing to do", method, dist.world - 1)
            if not dist.is_main:
                return TrainResult(str(out), f"idle (rank {dist.rank})", 0, 0, None, None, 0, 0.0, [], [])
            notes.append(f"launched on {dist.world} ranks: a from-cache method trains on rank 0 alone")
        parallel = dist.world > 1 and m.needs.backbone  # data-parallel: each rank its own batch
        if parallel:
            notes.append(f"data-parallel over {dist.world} ranks: each rank computes its own batch or episode, "
                         "gradients are averaged across ranks before every step (as DistributedDataParallel "
                         "does); the effective batch is world x batch")
        if m.needs.backbone:
            backbone.load()
        needs = dataclasses.replace(m.needs, text=True) if cfg.protocol != "episodic" else m.needs
        data = CacheData(cache, needs, device, encoder=backbone if needs.pixels else None)
        feed = {"episodic": _Episodic, "allway": _AllWay, "zeroshot": _ZeroShot}[cfg.protocol](
            data, cache.labels, plan, cfg)
        notes += feed.notes
        steps = feed.steps
        val_every = cfg.val_every or (feed.steps_per_epoch if cfg.protocol != "episodic" else max(1, steps // 10))
        warmup = round(cfg.warmup * steps)
        meta = {
            "format": RUN_FORMAT, "version": RUN_VERSION, "status": "running",
            "method": {"name": method, "display_name": m.display_name, "config": asdict(mcfg),
                       "needs": m.needs.to_dict(), "protocols": list(m.protocols), "trainable_params": None},
            "train": {"config": asdict(cfg), "steps": steps, "val_every": val_every, "warmup_steps": warmup},
            "store": {"path": str(Path(cache.store.path).resolve()) if "://" not in str(cache.store.path)
                      else str(cache.store.path), "cache_key": key},
            "model_info": info.to_dict(), "frames": frames, "classes": list(cache.classes),
            "splits": plan.summary(cache.labels),
            "step": 0, "best": {"val_accuracy": None, "val_ci": None, "step": None},
            "history": [], "checkpoints": {}, "notes": notes, "seconds": 0.0,
            "environment": _environment(device),
        }
        if old is not None:
            _same_run(old, meta, out)
        out.mkdir(parents=True, exist_ok=True)
        if main and plan.generated and not (out / SPLITS_FILE).is_file():
            write_json(out / SPLITS_FILE, {"source": plan.source, "seed": cfg.seed, "splits": {
                name: [cache.video_keys[i] for i in getattr(plan, name)] for name in ("train", "val", "test")}})

        state = None
        if old is not None and LAST_FILE in old.get("checkpoints", {}):
            load_into(m, load_weights(checked_file(out, LAST_FILE, old)), f"{out / LAST_FILE}")
            state = torch.load(checked_file(out, STATE_FILE, old), map_location="cpu", weights_only=True)
            meta.update(step=state["step"], best=old["best"], history=old["history"],
                        checkpoints=old["checkpoints"], seconds=old.get("seconds", 0.0))
        m.to(device)
        if any(torch.nn.parameter.is_lazy(p) for p in m.parameters()):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                m.eval()
                feed.first(m)  # lazy parameters take their shapes from the first input
        params = m.trainable_parameters()
        meta["method"]["trainable_params"] = sum(p.numel() for p in params)
        opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, steps))
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng"):
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        if main:
            write_json(out / RUN_JSON, meta)

        step = meta["step"]
        seconds0 = meta["seconds"]
        interval: list[float] = list(state["interval_losses"]) if state is not None else []
        validates = bool(cfg.val_episodes)
        bar = tqdm(total=steps, initial=step, disable=not (progress and main), desc=f"train {method}", dynamic_ncols=True,
                   unit="step")
        shown = {"loss": "-", "val": "-", "best": "-"}  # the progress bar's postfix

        def checkpoint(status: str) -> None:
            meta["step"], meta["status"] = step, status
            if not main:
                return
            meta["seconds"] = seconds0 + time.perf_counter() - t_start
            # staged, committed by run.json, then published: a kill anywhere leaves a resumable run
            meta["checkpoints"][LAST_FILE] = save_weights(pending(out / LAST_FILE), m.trainable_state_dict())
            meta["checkpoints"][STATE_FILE] = save_state(pending(out / STATE_FILE), {
                "step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "interval_losses": list(interval), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else []})
            write_json(out / RUN_JSON, meta)
            publish_pending(out, meta)

        def validate() -> None:
            entry = {"step": step, "lr": sched.get_last_lr()[0],
                     "train_loss": float(np.mean(interval)) if interval else None}
            interval.clear()
            if validates and main:
                with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    m.eval()
                    acc, ci = feed.validate(m)
                    m.train()
                entry.update(val_accuracy=acc, val_ci=ci)
                best = meta["best"]["val_accuracy"]
                if best is None or acc > best:
                    meta["best"] = {"val_accuracy": acc, "val_ci": ci, "step": step}
                    meta["checkpoints"][MODEL_FILE] = save_weights(pending(out / MODEL_FILE),
                                                                   m.trainable_state_dict())
                shown["val"], shown["best"] = f"{acc:.1f}", f"{meta['best']['val_accuracy']:.1f}"
            meta["history"].append(entry)

        m.train()
        if step == 0 and not meta["history"]:
            validate()  # the untrained method: the baseline every later validation is compared with
        try:
            while step < steps:
                if stop_after is not None and step >= stop_after:
                    checkpoint("stopped")
                    break
                if parallel:  # rank r computes sub-step step * world + r, then gradients are averaged
                    loss = _average_gradients(params, feed.step_loss(m, step * dist.world + dist.rank), dist)
                else:
                    loss = feed.step_loss(m, step)
                if not math.isfinite(loss):
                    raise RunError(f"the loss became {loss} at step {step}; lower --lr (now {cfg.lr})")
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                interval.append(loss)
                shown["loss"] = f"{loss:.3f}"
                bar.set_postfix(shown, refresh=False)
                bar.update(1)
                if step % val_every == 0 or step == steps:
                    validate()
                    if step < steps:
                        checkpoint("running")
        finally:
            bar.close()
        if step >= steps:
            if not validates:
                meta["checkpoints"][MODEL_FILE] = save_weights(pending(out / MODEL_FILE), m.trainable_state_dict())
                meta["notes"].append("no validation (--val-episodes 0): model.safetensors holds the final weights")
            checkpoint("complete")
    return _result_from_meta(out, meta)


def _average_gradients(params, loss: float, dist) -> float:
    """All-reduce the trainable gradients (mean over ranks), as DistributedDataParallel does."""
    import torch
    import torch.distributed as td

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss], dtype=grads[0].dtype)])
    td.all_reduce(flat)
    flat /= dist.world
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(g).to(g.dtype)
        off += n
    return float(flat[-1])


def _result_from_meta(out: Path, meta: dict) -> TrainResult:
    return TrainResult(run_dir=str(out), status=meta["status"], step=meta["step"], steps=meta["train"]["steps"],
                       best_val_accuracy=meta["best"]["val_accuracy"], best_step=meta["best"]["step"],
                       trainable_params=meta["method"]["trainable_params"], seconds=meta["seconds"],
                       history=meta["history"], notes=meta["notes"])


# --------------------------------------------------------------------------- options
def _coerce(text: str, tp, what: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(text, a, what)
                except InputError:
                    continue
        raise InputError(f"{what}: cannot read {text!r} as {tp}")
    if origin is Literal:
        for a in args:
            if str(a) == text:
                return a
        raise InputError(f"{what} must be one of {', '.join(map(str, args))}, not {text!r}")
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{what} must be true or false, not {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError as err:
            raise InputError(f"{what} must be {'an integer' if tp is int else 'a number'}, not {text!r}") from err
    if tp is str:
        return text
    if origin is tuple:
        elem = args[0] if args else str
        return tuple(_coerce(s.strip(), elem, what) for s in text.split(",") if s.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(method: str, pairs: Iterable[str]) -> dict:
    """``["alpha=0.25", "metric=otam"]`` -> Config overrides typed by method ``method``'s Config."""
    from .methods import method_module

    config = method_module(method).Config
    hints = typing.get_type_hints(config)
    fields = {f.name for f in dataclasses.fields(config)}
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise InputError(f"--opt takes key=value, got {pair!r}")
        if name not in fields:
            raise InputError(f"method {method} has no option {name} (options: {', '.join(sorted(fields))})")
        out[name] = _coerce(text.strip(), hints[name], f"--opt {name}")
    return out


# --------------------------------------------------------------------------- listing
def model_info_for(model: str):
    """:class:`ModelInfo` of an open_clip ViT from its config alone (no weights, no model built)."""
    import open_clip

    from .encoder import ModelInfo, resolve_model_name

    name, cfg = resolve_model_name(model)
    cfg = cfg or open_clip.get_model_config(name)
    if not cfg:
        raise ModelError(f"no open_clip config for {model}")
    v, t = cfg["vision_cfg"], cfg.get("text_cfg", {})
    if v.get("timm_model_name") or not isinstance(v.get("layers", 12), int):
        raise ModelError(f"{model} is not an open_clip ViT; its sizes need the model built")
    width, size, patch = v.get("width", 768), v.get("image_size", 224), v.get("patch_size", 16)
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ModelError(f"non-square input size {size} is not supported")
        size = size[0]
    return ModelInfo(embed_dim=int(cfg["embed_dim"]), width=int(width), layers=int(v.get("layers", 12)),
                     heads=int(width // v.get("head_width", 64)), grid=(size // patch, size // patch),
                     image_size=int(size), text_width=int(t.get("width", 512)))


def list_methods(model: str = "ViT-B-32", frames: int = 8, names: Iterable[str] | None = None) -> list[dict]:
    """Every method in ``METHODS`` (or just ``names``) and each of its ``VARIANTS``, built for
    ``model`` and T frames.

    Each row: ``name``, ``variant`` (Config overrides), ``available`` (``error`` if not),
    ``display_name``, ``description``, ``needs``, ``needs_backbone``, ``protocols``,
    ``trainable_params`` (None when it depends on the class count: lazy parameters) and the
    resolved ``config``. Methods that run the encoder get a random-init one.
    """
    import torch

    from .encoder import EncoderConfig, load_clip
    from .methods import METHODS, make_config, method_module

    def random_encoder():
        logging.disable(logging.WARNING)  # "random weights" is the point here, not news
        try:
            return load_clip(EncoderConfig(model=model, pretrained="random", device="cpu"))
        finally:
            logging.disable(logging.NOTSET)

    backbone = DeferredEncoder(random_encoder)
    try:
        info = model_info_for(model)
    except ModelError:
        info = backbone.load().info
    rows = []
    for name in METHODS if names is None else names:
        try:
            mod = method_module(name)
        except ImportError as err:
            rows.append({"name": name, "variant": {}, "available": False,
                         "error": f"module {METHODS[name]} is not available ({err})"})
            continue
        for variant in getattr(mod, "VARIANTS", None) or [{}]:
            row = {"name": name, "variant": dict(variant), "available": True,
                   "description": getattr(mod, "DESCRIPTION", "")}
            try:
                cfg = make_config(name, variant)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    m = mod.build(cfg, info, frames, backbone)
            except (ClipcacheError, ImportError, NotImplementedError) as err:
                rows.append({**row, "available": False, "error": str(err).splitlines()[0]})
                continue
            lazy = any(torch.nn.parameter.is_lazy(p) for p in m.parameters())
            rows.append({**row, "display_name": m.display_name, "needs": m.needs.to_dict(),
                         "needs_backbone": m.needs.backbone, "protocols": list(m.protocols),
                         "trainable_params": None if lazy else m.num_trainable(),
                         "trainable_note": "grows with the number of classes" if lazy else None,
                         "config": asdict(cfg)})
    return rows

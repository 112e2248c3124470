"""The generic trainer: any method, trained from a feature cache under one protocol.

The trainer knows protocols, never method names. Each protocol module
(:data:`cachekit.protocols.PROTOCOLS`) says which videos and classes train, which select the
checkpoint and which test (:meth:`~cachekit.protocols.base.Protocol.plan`), and gives the
training feed: episodic training draws N-way K-shot episodes from the training classes and calls
``method.episode_loss``; the all-way, zero-shot and base-to-novel feeds draw mini-batches of
training videos and call ``method.video_loss`` against the text of the *training* classes only
(no other class's text or name is read). All use AdamW (weight decay on matrices only) with a
linear warm-up and a cosine schedule, select on the selection videos only (never test), keep the
best weights in ``model.safetensors`` and the latest in ``last.safetensors`` + ``resume.pt``, and
describe the run in ``run.json`` (:mod:`.runs`). ``splits.json`` records the resolved split by
video key and class, so that ``eval --run`` scores the run on its own test split and refuses
evaluation sets it trained or selected on; ``resume`` reads it back as the plan (videos added to
the store since never re-split a run) and refuses when the store no longer holds one of them.

A run is deterministic given its seed: the episodes of step ``s`` and batch ``j`` are functions
of (seed, s / j), and the torch RNG (dropout, template draws) is saved with each checkpoint, so
``resume`` continues to the same weights a straight run reaches.

A method whose ``needs.backbone`` is set is given the frozen encoder of the store's cache key;
every other method gets a :class:`~cachekit.runs.DeferredEncoder` that is never loaded.

Laid out as nanoGPT's and timm's train scripts read: :func:`prepare` wires a method to a store
(method, protocol, plan, features, feed: a :class:`Session`, which tests use as is), a
:class:`Checkpointer` stages, commits and publishes, a loop steps, validates and selects, and
data parallelism wraps the step (:func:`data_parallel`).

Also here: :func:`model_info_for` (sizes of a model from its config, no weights) and :func:`list_methods`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .autoextend import ensure_cached
from .caveat import encoder_caveat
from .cpu import keep_freed_memory
from .errors import ClipcacheError, InputError, ModelError, RunError
from .ids import union_ids
from .distributed import dist_from_env, rank_device
from .interrupt import DeferredSigint, Interrupted
from .options import param
from .protocols import PROTOCOLS, get_protocol, natural_protocol
from .protocols.feeds import training_data
from .protocols.plan import SplitPlan
from .tblog import DEFAULT_LOG_EVERY, TrainCurves
from .runs import (LAST_FILE, MODEL_FILE, RUN_FORMAT, RUN_JSON, RUN_VERSION, SPLITS_FILE, STATE_FILE,
                   DeferredEncoder, checked_file, load_into, load_store_encoder,
                   load_weights, pending, publish_pending, read_run, save_state, save_weights,
                   write_json)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .methods.base import Method
    from .protocols.base import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved, resolved, in ``run.json``. Each field's help is its ``clipcache train``
    option's (:func:`cachekit.options.param`).

    protocol: "episodic" (N-way K-shot episodes, ``episode_loss``), "allway" (mini-batches over
        the training classes, ``video_loss``), "zeroshot" (the same, validated on classes held
        out of training: class-disjoint splits, as EZ-CLIP and EV-CLIP train for zero-shot
        transfer) or "base2novel" (base classes only; novel names first appear at evaluation).
        None: the method's natural protocol (:func:`cachekit.protocols.natural_protocol`).
    Budgets: 10,000 episodes as MA-FSAR (100,000 for SSv2); CLIP-FSAR trains with 5 queries.
    """

    protocol: str | None = param(None, registry="cachekit.protocols:PROTOCOLS",
                                 help="Protocol to train under [the method's natural one: see `clipcache methods`].")
    ways: int = param(5, help="Episodic: classes per episode.")
    shots: int | None = param(None, help="Episodic: support videos per class [1]. All-way: training videos per "
                                         "class [all].")
    queries: int = param(5, help="Episodic: training queries per class.")
    episodes: int = param(10000, help="Episodic: training episodes.")
    episodes_per_step: int = param(1, help="Episodic: episodes per optimiser step, drawn together and run through "
                                           "the method as one batch (8-32: several times the episodes per second).")
    epochs: int = param(10, help="All-way: passes over the training videos.")
    batch_size: int = param(32, help="All-way: videos per step.")
    lr: float = param(1e-4, help="AdamW peak learning rate.")
    weight_decay: float = param(0.01, help="AdamW weight decay.")
    warmup: float = param(0.05, help="Warm-up fraction of the steps (then cosine to 0).")
    grad_clip: float = param(0.0, help="Gradient norm clip (0: off).")
    val_every: int = param(0, help="Steps between validations (0: ten per run, each epoch for all-way).")
    val_episodes: int = param(1000, help="Validation episodes (episodic). 0: no validation (either protocol), "
                                         "keep the final weights.")
    val_queries: int = param(1, help="Validation queries per class (1, as at test).")
    seed: int = param(0, help="Seed of the episodes, batches and initialisation.")
    device: str = param("auto", help="auto, cpu or cuda[:N].")

    def __post_init__(self):
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        proto = get_protocol(self.protocol) if self.protocol is not None else None
        if self.shots is None and proto is not None:
            object.__setattr__(self, "shots", proto.default_shots)
        low = {"ways": 1, "shots": proto.min_shots if proto is not None else 0, "queries": 1, "episodes": 1,
               "episodes_per_step": 1, "epochs": 1, "batch_size": 1, "val_every": 0, "val_episodes": 0,
               "val_queries": 1, "seed": 0}
        for name, least in low.items():
            value = getattr(self, name)
            if name == "shots" and value is None:
                continue  # resolved with the protocol
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup < 1 or self.grad_clip < 0:
            raise InputError(f"need lr > 0, weight decay >= 0, 0 <= warmup < 1, grad clip >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup}, {self.grad_clip}")


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
    protocol: str = ""  # the protocol the run trained under (resolved from the method when not given)
    split: dict = field(default_factory=dict)  # videos and classes per part (run.json "splits")
    coverage: dict = field(default_factory=dict)  # store split -> listed / present / failed / used by the run

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(params: list, lr: float, weight_decay: float):
    """AdamW with weight decay on matrices only (not biases, norms, scales), fused kernels
    (:class:`cachekit.optim.AdamW`: torch's numbers and checkpoint format, no ``torch._dynamo``)."""
    from .optim import AdamW

    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return AdamW([g for g in groups if g["params"]], lr=lr)


def make_schedule(opt, warmup: int, total: int):
    """:func:`lr_lambda`'s schedule on ``opt`` (LambdaLR's state dict)."""
    from .optim import LambdaSchedule

    return LambdaSchedule(opt, lr_lambda(warmup, total))


def lr_lambda(warmup: int, total: int):
    """Learning-rate factor at a step: linear warm-up over ``warmup`` steps, then cosine to 0."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return f


def _environment(device) -> dict:
    import torch

    from importlib import metadata

    try:  # the installed distribution's version: importing open_clip (and torchvision) costs seconds
        oc = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
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
    was, now = old["train"].get("ranks"), new["train"].get("ranks", 1)  # None: a run recorded before ranks were
    if was is not None and was != now:
        raise RunError(f"cannot resume {out}: it trained data-parallel over {was} rank{'s' * (was != 1)} and this "
                       f"command runs {now}; every step draws one batch per rank, so resume it with "
                       f"{'torchrun --nproc_per_node ' + str(was) if was > 1 else 'one process'}")


def _same_finished_run(old: dict, method: str, overrides: dict | None, cfg: TrainConfig, store, out: Path) -> None:
    """:func:`_same_run` for a finished run, without loading the store's features: the method, the
    options given, the training config and the store's cache key must be the run's."""
    from clipcache.stores import open_store

    from .methods import make_config

    with open_store(store, "r") as st:
        key = st.attrs.get("cache_key")
    made = asdict(make_config(method, overrides))
    given = {k: made[k] for k in (overrides or {}) if k in made}  # the options given, as the Config types them
    recorded = old["method"]["config"]
    train_cfg = asdict(cfg if cfg.protocol is not None else
                       dataclasses.replace(cfg, protocol=old["train"]["config"].get("protocol")))
    pairs = {"method": (old["method"]["name"], method),
             "method config": ({k: recorded.get(k) for k in given}, given),
             "training config": (old["train"]["config"], train_cfg),
             "store cache key": (old["store"]["cache_key"], key)}
    diff = [k for k, (a, b) in pairs.items() if json.dumps(a, sort_keys=True, default=str)
            != json.dumps(b, sort_keys=True, default=str)]
    if diff:
        raise RunError(f"cannot resume {out}: it is a finished run whose {', '.join(diff)} differ from this "
                       "command's; repeat the original options or choose another --out")


def _resolve_protocol(m, method: str, cache, cfg: TrainConfig, dist, device_note: str | None,
                      resumed: Path | None = None):
    """(cfg with its protocol set, the protocol, its split plan, the run's first notes), or None on
    a rank that has nothing to do (a from-cache method trains on rank 0 alone). ``resumed``: the
    run directory being resumed; its recorded ``splits.json`` is the plan (never re-planned)."""
    notes = [device_note] if device_note else []
    if cfg.protocol is None:
        cfg = dataclasses.replace(cfg, protocol=natural_protocol(m, cache))
        notes.append(f"protocol {cfg.protocol}: the natural protocol of {method} on this store "
                     f"({method} trains under {', '.join(m.protocols)})")
    if cfg.protocol not in m.protocols:
        raise InputError(f"method {method} trains under {' and '.join(m.protocols) or 'no protocol'}, "
                         f"not --protocol {cfg.protocol}")
    proto = get_protocol(cfg.protocol)
    if resumed is not None and (resumed / SPLITS_FILE).is_file():
        plan = SplitPlan.load(resumed, cache, resume_as=cfg.protocol)
    else:
        plan = proto.plan(cache, cfg)
    notes += plan.notes
    caveat = encoder_caveat(cache.key)
    if caveat is not None:
        notes.append(caveat)
    if dist.world > 1 and not m.needs.backbone:
        log.warning("%s trains from the cache, fast enough on one process: rank 0 trains, the other "
                    "%d ranks have nothing to do", method, dist.world - 1)
        if not dist.is_main:
            return None
        notes.append(f"launched on {dist.world} ranks: a from-cache method trains on rank 0 alone")
    if dist.world > 1 and m.needs.backbone:
        notes.append(f"data-parallel over {dist.world} ranks: each rank computes its own batch or episode, "
                     "gradients are averaged across ranks before every step (as DistributedDataParallel "
                     f"does); the effective batch is world x batch, and each rank runs the --epochs / "
                     f"--episodes given, so the run makes {dist.world}x the passes (episodes) of one process")
    return cfg, proto, plan, notes


def _run_meta(method: str, m, mcfg, cfg: TrainConfig, cache, plan, notes: list[str], device, steps: int,
              val_every: int, warmup: int) -> dict:
    """``run.json`` of a run about to start (step 0, nothing measured yet)."""
    return {
        "format": RUN_FORMAT, "version": RUN_VERSION, "status": "running",
        "method": {"name": method, "display_name": m.display_name, "config": asdict(mcfg),
                   "needs": m.needs.to_dict(), "protocols": list(m.protocols), "trainable_params": None},
        "train": {"config": asdict(cfg), "steps": steps, "val_every": val_every, "warmup_steps": warmup},
        "store": {"path": str(Path(cache.store.path).resolve()) if "://" not in str(cache.store.path)
                  else str(cache.store.path), "cache_key": cache.key},
        "model_info": cache.model_info.to_dict(), "frames": cache.frames, "classes": list(cache.classes),
        "splits": plan.summary(cache.labels),
        "step": 0, "best": {"val_accuracy": None, "val_ci": None, "step": None},
        "history": [], "checkpoints": {}, "notes": notes, "seconds": 0.0,
        "environment": _environment(device),
    }


@dataclass
class Session:
    """A method wired to one store for training (:func:`prepare`): what :func:`train` runs, and
    what tests inspect without copying the wiring.

    ``cfg``: the training config with its protocol resolved. ``plan``: which videos train, select
    and test. ``data``: the features training reads (text rows of the training and selection
    classes only). ``feed``: the protocol's training feed over them. ``notes``: the run's notes so
    far (device, protocol choice, split, feed).
    """

    method: Method
    mcfg: object  # the method's resolved Config
    cfg: TrainConfig
    protocol: Protocol
    plan: SplitPlan
    data: object  # cachekit.batches.CacheData
    feed: object
    backbone: DeferredEncoder
    notes: list[str]


def prepare(cache, method: str, overrides: dict | None = None, cfg: TrainConfig | None = None, *,
            device="cpu", pretrained: str | None = None, resumed: Path | None = None, dist=None,
            device_note: str | None = None) -> Session | None:
    """Build ``method`` (Config ``overrides``) on the open ``cache``, resolve its protocol and split
    plan (``resumed``: a run directory whose recorded ``splits.json`` is the plan), add arrays the
    training reads that the store lacks, and make the protocol's feed.

    ``dist``: the process group under torchrun (:func:`cachekit.distributed.dist_from_env`); None on
    one process. Returns None on a rank that has nothing to do (a from-cache method trains on rank
    0 alone).
    """
    import torch

    from .distributed import Dist
    from .methods import make_config, method_module

    cfg = cfg or TrainConfig()
    dist = dist or Dist()
    device = torch.device(device)
    mcfg = make_config(method, overrides)
    torch.manual_seed(cfg.seed)
    backbone = DeferredEncoder(lambda: load_store_encoder(cache.key, pretrained, str(device)))
    m = method_module(method).build(mcfg, cache.model_info, cache.frames, backbone)
    resolved = _resolve_protocol(m, method, cache, cfg, dist, device_note, resumed)
    if resolved is None:
        return None
    cfg, proto, plan, notes = resolved
    if m.needs.backbone:
        backbone.load()
    needs = dataclasses.replace(m.needs, text=True) if proto.training_text == "seen" else m.needs
    # text rows of the training and selection classes only: no test class's text is ever read
    known = np.union1d(plan.classes(cache.labels, "train"), plan.classes(cache.labels, "val"))
    videos = union_ids(plan.train, plan.val)  # the run's train and selection videos
    ensure_cached(cache, needs, videos, command="train", device=str(device),
                  classes=[cache.classes[c] for c in known], pretrained=pretrained,
                  encoder=backbone if backbone.loaded else None)  # adds missing arrays to the store, once
    data = training_data(cache, needs, device, known, encoder=backbone if needs.pixels else None,
                         videos=videos)  # no test video's features are read
    feed = proto.feed(data, cache.labels, plan, cfg)
    return Session(m, mcfg, cfg, proto, plan, data, feed, backbone, notes + feed.notes)


class Checkpointer:
    """Writes a run's checkpoints into ``out``: weights and optimiser state are staged (pending
    files), committed by ``run.json``, then published, so a kill anywhere leaves a resumable run.
    Only rank 0 (``main``) writes."""

    def __init__(self, out: Path, meta: dict, main: bool, method, device, t_start: float):
        self.out, self.meta, self.main, self.method, self.device = out, meta, main, method, device
        self.t_start, self.seconds0 = t_start, meta["seconds"]

    def stage(self, name: str) -> None:
        """Stage the trainable weights as ``name`` (model.safetensors: the best so far), committed
        by the next :meth:`commit`."""
        self.meta["checkpoints"][name] = save_weights(pending(self.out / name), self.method.trainable_state_dict())

    def commit(self, status: str, step: int, opt, sched, interval: list[float]) -> None:
        """Record ``step`` and ``status``; on rank 0 stage the latest weights and state, write
        ``run.json`` (the commit) and publish the staged files."""
        import torch

        meta = self.meta
        meta["step"], meta["status"] = step, status
        if not self.main:
            return
        meta["seconds"] = self.seconds0 + time.perf_counter() - self.t_start
        self.stage(LAST_FILE)
        meta["checkpoints"][STATE_FILE] = save_state(pending(self.out / STATE_FILE), {
            "step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "interval_losses": list(interval), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []})
        self.publish()

    def publish(self) -> None:
        write_json(self.out / RUN_JSON, self.meta)
        publish_pending(self.out, self.meta)


def data_parallel(step_loss, params, dist):
    """``step_loss(method, step)`` run data-parallel: rank r computes sub-step step * world + r,
    then the gradients (and the loss) are averaged across ranks, as DistributedDataParallel does."""
    def step(method, i: int) -> float:
        return _average_gradients(params, step_loss(method, i * dist.world + dist.rank), dist)
    return step


def train(store: str, out: str, method: str, overrides: dict | None = None, cfg: TrainConfig | None = None,
          *, resume: bool = False, pretrained: str | None = None, progress: bool = True,
          stop_after: int | None = None, threads: int = 0, log_every: int = DEFAULT_LOG_EVERY) -> TrainResult:
    """Train ``method`` (name in ``METHODS``, Config ``overrides``) on ``store`` (a path, or an open
    read-only ``FeatureStore``) into run directory ``out``.

    ``resume``: continue the run in ``out`` from its last checkpoint (same options required).
    ``pretrained``: weights of the store's encoder, for methods that run the backbone when the
    cache key names a file. ``stop_after``: stop (resumably) once this many steps are done.
    ``threads``: torch intra-op threads while training (0: torch's default); a head on cached
    features works on small tensors, where one thread is often fastest on a shared CPU.
    ``log_every``: steps between points of the TensorBoard curves in ``out`` (:mod:`cachekit.tblog`).
    """
    import torch

    from .cache import FeatureCache
    from .encoder import pick_device
    from .methods import make_config

    keep_freed_memory()  # a backbone step's activations stop taking fresh pages every step
    cfg = cfg or TrainConfig()
    out = Path(out)
    make_config(method, overrides)  # a bad method or option fails before the run directory is read
    old = _check_out_dir(out, resume)
    if old is not None and old.get("status") == "complete":
        _same_finished_run(old, method, overrides, cfg, store, out)
        return _result_from_meta(out, old)
    pick_device(cfg.device)  # a bad --device fails before any rank joins
    t_start = time.perf_counter()
    dist = dist_from_env()  # under torchrun: data-parallel for backbone methods, see data_parallel
    device, device_note = rank_device(cfg.device, dist)  # more ranks than GPUs: all on the CPU, noted
    device = torch.device(device)
    dist.barrier()  # every rank has checked --out before rank 0 writes into it
    main = dist.is_main  # only rank 0 writes the run directory
    with _torch_threads(threads), FeatureCache(store) as cache:
        s = prepare(cache, method, overrides, cfg, device=device, pretrained=pretrained,
                    resumed=out if old is not None else None, dist=dist, device_note=device_note)
        if s is None:  # a from-cache method under torchrun: ranks other than 0 have nothing to do
            return TrainResult(str(out), f"idle (rank {dist.rank})", 0, 0, None, None, 0, 0.0, [], [])
        m, cfg, feed = s.method, s.cfg, s.feed
        steps = feed.steps
        val_every = cfg.val_every or s.protocol.default_val_every(steps, feed.steps_per_epoch)
        warmup = round(cfg.warmup * steps)
        meta = _run_meta(method, m, s.mcfg, cfg, cache, s.plan, s.notes, device, steps, val_every, warmup)
        meta["coverage"] = run_coverage(cache, s.plan)
        parallel = dist.world > 1 and m.needs.backbone  # data-parallel: each rank its own batch
        meta["train"]["ranks"] = dist.world if parallel else 1  # a step's batches: resumed only alike
        if old is not None:
            _same_run(old, meta, out)
        out.mkdir(parents=True, exist_ok=True)
        if main and not (out / SPLITS_FILE).is_file():
            write_json(out / SPLITS_FILE, s.plan.record(cache))

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
        if not params:  # nothing to train (zeroshot, proto): the run is the method as configured
            return _untrained_run(out, meta, main)
        opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
        sched = make_schedule(opt, warmup, steps)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng"):
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        if main:
            write_json(out / RUN_JSON, meta)
        loop = _Loop(s, Checkpointer(out, meta, main, m, device, t_start), opt, sched, params,
                     data_parallel(feed.step_loss, params, dist) if parallel else feed.step_loss,
                     list(state["interval_losses"]) if state is not None else [], val_every, device)
        loop.run(method, out, progress and main, log_every, dist if parallel else None,
                 (dist.world if parallel else 1), stop_after)
    return _result_from_meta(out, meta)


class _Loop:
    """The optimiser loop of one run: steps, validation and selection of the best weights,
    checkpoints (through its :class:`Checkpointer`), the progress bar and the curves."""

    def __init__(self, s: Session, ckpt: Checkpointer, opt, sched, params, step_loss, interval: list[float],
                 val_every: int, device):
        self.s, self.ckpt, self.opt, self.sched, self.params = s, ckpt, opt, sched, params
        self.step_loss, self.interval, self.val_every, self.device = step_loss, interval, val_every, device
        self.meta = ckpt.meta
        self.step = self.meta["step"]
        self.validates = bool(s.cfg.val_episodes) and s.feed.selects  # the plan may hold no selection videos
        self.shown = {"loss": "-", "val": "-", "best": "-"}  # the progress bar's postfix
        self.curves = None

    def validate(self) -> None:
        """One history entry: the interval's mean loss and, with validation, the selection accuracy
        (a new best stages ``model.safetensors``)."""
        import torch

        m, meta = self.s.method, self.meta
        entry = {"step": self.step, "lr": self.sched.get_last_lr()[0],
                 "train_loss": float(np.mean(self.interval)) if self.interval else None}
        self.interval.clear()
        if self.validates and self.ckpt.main:
            with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                m.eval()
                acc, ci = self.s.feed.validate(m)
                m.train()
            entry.update(val_accuracy=acc, val_ci=ci)
            self.curves.validation(self.step, acc, ci)
            best = meta["best"]["val_accuracy"]
            if best is None or acc > best:
                meta["best"] = {"val_accuracy": acc, "val_ci": ci, "step": self.step}
                self.ckpt.stage(MODEL_FILE)
            self.shown["val"], self.shown["best"] = f"{acc:.1f}", f"{meta['best']['val_accuracy']:.1f}"
        meta["history"].append(entry)

    def checkpoint(self, status: str) -> None:
        self.ckpt.commit(status, self.step, self.opt, self.sched, self.interval)

    def run(self, name: str, out: Path, progress: bool, log_every: int, sigint_dist, world: int,
            stop_after: int | None) -> None:
        import torch
        from tqdm import tqdm

        s, m, cfg, meta = self.s, self.s.method, self.s.cfg, self.meta
        steps = s.feed.steps
        bar = tqdm(total=steps, initial=self.step, disable=not progress, desc=f"train {name}", dynamic_ncols=True,
                   unit="step")
        self.curves = TrainCurves(out, log_every, enabled=self.ckpt.main, unit=s.protocol.unit,
                                  per_step=s.protocol.items_per_step(cfg) * world)  # TensorBoard event files
        m.train()
        if self.step == 0 and not meta["history"]:
            self.validate()  # the untrained method: the baseline every later validation is compared with
        sigint = DeferredSigint()  # Ctrl-C: finish this step, checkpoint, stop resumably
        try:
            while self.step < steps:
                if stop_after is not None and self.step >= stop_after:
                    self.checkpoint("stopped")
                    break
                if sigint.requested(sigint_dist):
                    self.checkpoint("interrupted")
                    raise Interrupted(f"training stopped at step {self.step} of {steps}; the run in {out} is saved")
                loss = self.step_loss(m, self.step)
                if not math.isfinite(loss):
                    raise RunError(f"the loss became {loss} at step {self.step}; lower --lr (now {cfg.lr})")
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.opt.step()
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
                self.step += 1
                self.interval.append(loss)
                self.shown["loss"] = f"{loss:.3f}"
                bar.set_postfix(self.shown, refresh=False)
                bar.update(1)
                self.curves.step(self.step, loss, self.sched.get_last_lr()[0])
                if self.step % self.val_every == 0 or self.step == steps:
                    self.validate()
                    if self.step < steps:
                        self.checkpoint("running")
        finally:
            bar.close()
            self.curves.close()
            sigint.restore()
        if self.step >= steps:
            if not self.validates:
                self.ckpt.stage(MODEL_FILE)
                why = "" if self.s.cfg.val_episodes else " (--val-episodes 0)"
                meta["notes"].append(f"no validation{why}: model.safetensors holds the final weights")
            self.checkpoint("complete")


def _untrained_run(out: Path, meta: dict, main: bool) -> TrainResult:
    """A complete run of a method without trainable parameters: its configuration, its split and
    an empty weights file, so that ``eval --run`` and ``query --run`` use it like any other run."""
    meta["train"]["steps"] = meta["step"] = 0
    meta["notes"].append(f"{meta['method']['name']} has no trainable parameters: nothing to train; the run "
                         "holds the method as configured, for eval --run and query --run")
    meta["status"] = "complete"
    if main:
        meta["checkpoints"][MODEL_FILE] = save_weights(pending(out / MODEL_FILE), {})
        write_json(out / RUN_JSON, meta)
        publish_pending(out, meta)
    return _result_from_meta(out, meta)


def _average_gradients(params, loss: float, dist) -> float:
    """All-reduce the trainable gradients (mean over ranks), as DistributedDataParallel does."""
    import torch
    import torch.distributed as td

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    last = torch.tensor([loss], dtype=grads[0].dtype, device=grads[0].device)  # on the grads' device (CUDA too)
    flat = torch.cat([g.reshape(-1) for g in grads] + [last])
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
                       history=meta["history"], notes=meta["notes"],
                       protocol=meta["train"]["config"]["protocol"], split=meta.get("splits", {}),
                       coverage=meta.get("coverage", {}))


def run_coverage(cache, plan) -> dict:
    """Per store split: listed, present, failed to decode, and used by the run's split (any part)."""
    from .coverage import store_coverage, used_by

    used = np.concatenate([plan.train, plan.val, plan.test, *plan.test_parts.values()])
    return used_by(store_coverage(cache.store, cache.video_keys), cache, used)


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

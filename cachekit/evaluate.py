"""Evaluate a method from the cache under one protocol (protocols.md §1-§5); no backbone pass
unless a trained method needs one.

The protocols themselves live in :mod:`cachekit.protocols`, one module each (episodes, all-way,
zero-shot, base-to-novel): this module resolves *what* is evaluated and hands it to the
protocol's evaluator.

- A trained run (``run_dir``) is scored on its own test split, read from the ``splits.json`` the
  trainer wrote (by video key, so a re-ordered store still maps). Any other evaluation set
  (``split``, ``split_file``, ``episodes_file``, another store) is refused when it holds videos
  the run trained or selected on, or, for the class-disjoint protocols (episodic, zero-shot,
  the novel part of base-to-novel), classes it trained on; ``allow_overlap`` evaluates anyway
  and every report then says so first.
- Without a run, the store's ``test`` split is evaluated, else its ``val`` split (the test list
  of a ViFi-CLIP / SSv2 layout), else all its labelled videos; or a split / split file.
- ``episodes_file`` re-uses the episodes of an earlier evaluation; the report names that file's
  split, and a ``split`` / ``split_file`` given beside it must contain every episode video.

Videos a split names but the store lacks are counted in the result's notes, never dropped
silently. Every result carries two intervals (the episode interval and the video-level one,
:func:`cachekit.episodes.video_ci`) and the number of distinct test videos and classes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .autoextend import ensure_cached
from .backbone import BackboneRequired
from .cache import FeatureCache, Split
from .caveat import encoder_caveat
from .errors import InputError, InputNotFound, RunError
from .methods.base import Method
from .options import param
from .protocols import PROTOCOLS as _REGISTRY, get_protocol
from .protocols.episodic import check_episodes, episode_videos
from .protocols.plan import SplitPlan
from .protocols.scoring import EvalJob, Pools as _Pools, overlap_problems, plural as _plural
from .protocols.splitting import held_out_names
from .report import EvalResult, write_report

PROTOCOLS = tuple(_REGISTRY)


@dataclass(frozen=True)
class EvalConfig:
    """What one ``clipcache eval`` computes; validated on construction (one-line errors). Each
    field's help is its ``clipcache eval`` option's (:func:`cachekit.options.param`).

    method: None: the run's method with ``run_dir``, else ``proto`` for episodic and ``zeroshot``
        otherwise.
    shots: K, or a tuple of several K (one result per K: an accuracy-vs-shots curve). All-way: the
        K-shot list a support-fitting method (``proto``) is built from; a trained run reports
        the K it was trained with.
    split, split_file, video_root: evaluate these videos instead of the default (see the module).
    batch_episodes: 200 keeps a chunk's tensors small enough for the allocator to reuse their memory.
    """

    protocol: str | None = param(None, registry="cachekit.protocols:PROTOCOLS",
                                 help="Protocol (required unless --run gives one).")
    method: str | None = param(None, registry="cachekit.methods:METHODS",
                               help="No-training method: proto or zeroshot (default: proto for episodic, "
                                    "zeroshot otherwise).")
    # Config overrides of a method built by name (e.g. {"template": 0}; -o KEY=VALUE); string
    # values are typed by its Config (cachekit.options.typed_options)
    method_options: dict | None = None
    run_dir: str | os.PathLike | None = param(None, help="Trained run directory (its cache key must match the store).")
    ways: int = param(5, help="Episodic: classes per episode (W).")
    shots: int | tuple[int, ...] = param(1, help="K; repeat or comma-separate for an accuracy-vs-shots curve "
                                                 "(episodic: support shots, 0 = query-only; allway: the K-shot "
                                                 "list of proto).")
    queries: int = param(1, help="Episodic: queries per class (Q).")
    episodes: int = param(10_000, help="Episodic: number of episodes.")
    metric: str | None = param(None, registry="cachekit.similarity:SIMILARITIES",
                               help="Prototype matching metric of a method built by name (methods with a metric "
                                    "option; default otam). Not with --run: a run keeps the metric it trained with.")
    seed: int = param(0, help="Seed of episodes, K-shot lists, base/novel split.")
    split: str | None = param(None, help="Split to evaluate (default: test, else val, else all videos).")
    split_file: str | os.PathLike | None = param(None, help="CLIP-FSAR / ViFi-CLIP split file to evaluate instead.")
    video_root: str | os.PathLike | None = param(None, help="Folder the split file's paths are relative to.")
    episodes_file: str | os.PathLike | None = param(
        None, help="Re-use the episodes of an earlier --out (episodes.json; episodic: overrides the ways, "
                   "shots, queries, episodes and seed).")
    batch_episodes: int = param(200, help="Episodes scored at once (no-training methods; raise it on a GPU).")
    out_dir: str | os.PathLike | None = param(
        None, help="Write results.json/.md, per-class accuracy, confusion and shots plots, episodes here.")
    device: str = param("cpu", help="cpu, cuda[:N] or auto.")
    allow_overlap: bool = param(False, help="Evaluate a run on videos (or, class-disjoint protocols, classes) it "
                                            "trained or selected on; the report then says so first.")

    def __post_init__(self) -> None:
        if self.protocol is None and self.run_dir is None:
            raise InputError(f"--protocol is required ({', '.join(PROTOCOLS)})")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.run_dir is not None and (self.method is not None or self.method_options):
            raise InputError("--run evaluates a trained run; --method and --option apply without --run (not both)")
        if self.run_dir is not None and self.metric is not None:
            raise InputError("--run evaluates a trained run with the metric it trained with; --metric applies "
                             "without --run (retrain with train --metric for another)")
        if not isinstance(self.shots, (int, np.integer)):
            if isinstance(self.shots, (str, bytes)) or not isinstance(self.shots, Sequence):
                raise InputError(f"--shots must be an integer or a list of integers, got {self.shots!r}")
            object.__setattr__(self, "shots", tuple(int(k) for k in self.shots))
            if not self.shots:
                raise InputError("--shots needs at least one value")
            if len(set(self.shots)) != len(self.shots):
                raise InputError(f"--shots lists a value twice: {list(self.shots)}")
        for name, least in (("ways", 1), ("queries", 1), ("episodes", 1), ("seed", 0), ("batch_episodes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")
        if any(k < 0 for k in self.shot_list):
            raise InputError(f"--shots must be >= 0, got {list(self.shot_list)}")
        proto = get_protocol(self.protocol) if self.protocol is not None else None
        if proto is not None:
            _check_shots(proto, self.shot_list)
        if self.episodes_file is not None and (
                (proto is not None and not proto.takes_episode_file) or len(self.shot_list) > 1):
            raise InputError(_EPISODES_FILE)

    @property
    def shot_list(self) -> tuple[int, ...]:
        return (int(self.shots),) if isinstance(self.shots, (int, np.integer)) else tuple(self.shots)

    @property
    def many(self) -> bool:
        """Several K asked for: :func:`evaluate` returns a list."""
        return not isinstance(self.shots, (int, np.integer))


_EPISODES_FILE = (f"--episodes-file applies to the {' / '.join(p for p in PROTOCOLS if get_protocol(p).takes_episode_file)}"
                  " protocol with one --shots value")


def _check_shots(proto, shot_list: tuple[int, ...]) -> None:
    if proto.shot_curve == "never" and len(shot_list) > 1:
        raise InputError(f"--shots does not apply to the {proto.name} protocol; give at most one value")


# --------------------------------------------------------------------------- splits
def split_from_file(cache: FeatureCache, split_file: str | os.PathLike,
                     video_root: str | None) -> dict[str, Split]:
    """Read a split file of any layout :func:`cachekit.inputs.collect_inputs` knows (a data set's
    official list, a CLIP-FSAR / ViFi-CLIP split file, a plain list; also a folder or a glob of
    files, as HMDB51's per-class split files) and map it onto the store.

    A listed path is found by its absolute path among the store's records (whether or not the
    file still exists), else, when the file exists, by its content key; anything else counts as
    missing.
    """
    from .inputs import collect_inputs
    from .video import file_key

    path = Path(split_file)
    if not path.exists() and not any(c in str(split_file) for c in "*?["):  # a glob: HMDB51's *_test_split2.txt
        raise InputNotFound(f"--split-file {split_file} not found")
    if video_root is not None and not Path(video_root).is_dir():
        raise InputNotFound(f"--video-root {video_root} is not a directory")
    parsed = collect_inputs([str(path)], video_root=video_root, require_videos=False)
    default = path.stem
    listed: dict[str, list[str]] = {}
    for it in parsed.items:
        listed.setdefault(it.split or default, []).append(it.path)
    by_path = {os.path.abspath(p): i for i, p in enumerate(cache.paths)}
    by_key = {k: i for i, k in enumerate(cache.video_keys)}
    out = {}
    for name in sorted(set(listed) | set(parsed.missing)):
        idx, missing, absent = [], 0, 0
        # files gone from disk still count when the store holds them (extracted before removal)
        named = [*listed.get(name, []), *parsed.missing.get(name, [])]
        for p in named:
            i = by_path.get(os.path.abspath(p))
            if i is None and os.path.exists(p):
                try:
                    i = by_key.get(file_key(p))
                except OSError:
                    i = None
            if i is None:
                missing += 1
                absent += not os.path.exists(p)
            else:
                idx.append(i)
        out[name] = Split(name, np.array(sorted(set(idx)), dtype=np.int64), missing, len(named), absent)
    return out


def _resolve_pools(cache: FeatureCache, split: str | None, split_file, video_root,
                   need_split: bool = True) -> _Pools:
    splits = dict(cache.splits())
    from_file: set[str] = set()
    if split_file is not None:
        file_splits = split_from_file(cache, split_file, video_root)
        from_file = set(file_splits)
        splits.update(file_splits)
        if split is None and len(file_splits) == 1:
            split = next(iter(file_splits))
    labels = cache.labels
    notes: list[str] = []
    if not splits:
        if split is not None:
            raise InputError(f"--split {split}: store {cache.store.path} was extracted without split files "
                             "(no splits to choose from); leave --split out or pass --split-file")
        idx = np.flatnonzero(labels >= 0)
        n_cls = len(np.unique(labels[idx]))
        notes.append(f"store has no split files: evaluated over all {_plural(n_cls, 'class', 'classes')} "
                     f"({_plural(idx.size, 'video')}) of the store")
        _note_unlabelled(notes, len(cache) - idx.size, "the store")
        return _Pools(None, idx, splits, notes)
    if split is None and need_split:
        split, _ = held_out_names(splits)  # the same rule the protocols train by
        if split is None:
            raise InputError(f"store has no 'test' or 'val' split; pass --split (one of {', '.join(sorted(splits))})")
        if split == "val":
            notes.append("no 'test' split: evaluated on split 'val' (ViFi-CLIP names its test lists val1.txt)")
    if split is not None and split not in splits:
        raise InputError(f"--split {split}: no such split; the store has {', '.join(sorted(splits)) or 'none'}")
    if split is None:
        return _Pools(None, np.zeros(0, np.int64), splits, notes)
    s = splits[split]
    idx = s.indices[labels[s.indices] >= 0]
    where = f"split '{split}'" + (f" (from {Path(split_file).name})" if split in from_file else "")
    n_cls = len(np.unique(labels[idx]))
    notes.append(f"evaluated on {where}: {_plural(idx.size, 'video')}, {_plural(n_cls, 'class', 'classes')}")
    notes.extend(_missing_notes(s, where))
    _note_unlabelled(notes, s.indices.size - idx.size, where)
    return _Pools(split, idx, splits, notes)


def _missing_notes(s: Split, where: str) -> list[str]:
    if not s.missing:
        return []
    listed = s.indices.size + s.missing
    return [f"{where}: {s.missing:,} of {listed:,} listed videos are missing from the store "
            f"(coverage {100.0 * s.indices.size / listed:.1f}%); evaluated on the {s.indices.size:,} present"]


def _note_unlabelled(notes: list[str], n: int, where: str) -> None:
    if n:
        notes.append(f"{_plural(n, 'video')} of {where} without a class label skipped")


# --------------------------------------------------------------------------- methods
def _load_run(run_dir, cache: FeatureCache, device: torch.device) -> tuple[Method, dict]:
    from .runs import load_run

    return load_run(run_dir, cache_key=cache.key, device=str(device))


def _build(name: str, options: dict | None, metric: str | None, cache: FeatureCache, frames: int) -> Method:
    from .methods import build_method, method_module
    from .options import typed_options

    mod = method_module(name)
    overrides = typed_options(name, options or {})
    has_metric = "metric" in {f.name for f in dataclasses.fields(mod.Config)}
    if metric is not None and not has_metric:
        raise InputError(f"--metric: method {name} has no metric option (it does not match prototypes)")
    if metric is not None and "metric" in overrides and overrides["metric"] != metric:
        raise InputError(f"--metric {metric} and -o metric={overrides['metric']} disagree; give one")
    if has_metric:
        overrides.setdefault("metric", metric or "otam")
    untrained = (f"method {name} has trainable parameters: train it first (clipcache train) and evaluate the run "
                 "with --run")
    try:
        method = build_method(name, overrides, cache.model_info, frames)
    except BackboneRequired as err:  # it runs the frozen encoder: a method with modules inside it
        raise InputError(untrained) from err
    if method.trainable_parameters() or method.needs_backbone:  # (a lazy layer has no size before training)
        raise InputError(untrained)
    return method


def _check_protocol(method: Method, protocol: str) -> None:
    if protocol in method.protocols:
        return
    if get_protocol(protocol).scores_unseen_by_text and method.predicts != "text":
        raise InputError(f"{method.display_name} does not score by class text, so it cannot score unseen classes; "
                         f"the {protocol} protocol needs a text-based method (e.g. --method zeroshot or a trained run)")
    raise InputError(f"{method.display_name} does not support the {protocol} protocol "
                     f"(it supports: {', '.join(method.protocols) or 'none'})")


def _meta_get(meta: dict | None, *paths: str):
    """First value found in a run's meta at one of the dotted ``paths`` (None if none)."""
    for path in paths:
        node = meta or {}
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def _run_protocol(meta: dict | None):
    return _meta_get(meta, "protocol", "train.config.protocol", "config.protocol")


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- what is evaluated
def _episode_pools(cache: FeatureCache, loaded, pools: _Pools | None, split_given: bool) -> _Pools:
    """What an episode file evaluates: its own videos; a split given beside it must contain them."""
    eps, meta, name = loaded
    videos = episode_videos(eps)
    labels = cache.labels
    if split_given and pools is not None:
        outside = np.setdiff1d(videos, pools.eval_idx)
        if outside.size:
            raise InputError(f"episode file {name} was drawn from split {meta.get('split')!r}: {outside.size:,} of "
                             f"its videos are not in split '{pools.eval_name}'; leave --split / --split-file out")
    notes = [f"episodes read from {name} (seed {meta.get('seed')}, split {meta.get('split')!r}): "
             f"{_plural(videos.size, 'video')}, {_plural(np.unique(labels[videos]).size, 'class', 'classes')}"]
    return _Pools(meta.get("split"), videos, dict(cache.splits()), notes,
                  pools.run if pools is not None else None)


# --------------------------------------------------------------------------- entry point
def evaluate(cache: FeatureCache | str | os.PathLike, cfg: EvalConfig,
             method: Method | None = None) -> EvalResult | list[EvalResult]:
    """Evaluate one method under one protocol, reading only the cache.

    Args:
        cache: an open :class:`FeatureCache` or a store path.
        cfg: what to evaluate (:class:`EvalConfig`).
        method: an already built :class:`Method` instead of ``cfg.method`` (library use).

    Returns:
        One :class:`EvalResult` (accuracy and intervals in percent), or a list when ``cfg.shots``
        is a sequence. Raises :class:`InputError` (one line) on impossible requests, e.g. more
        ways than the split has classes, or an evaluation set that overlaps the run's training.
    """
    if not isinstance(cfg, EvalConfig):
        raise InputError(f"evaluate() takes an EvalConfig, got {type(cfg).__name__}")
    if method is not None and (cfg.run_dir is not None or cfg.method is not None):
        raise InputError("give either a trained run (--run) or a method (--method), not both")
    own = not isinstance(cache, FeatureCache)
    cache = FeatureCache(cache) if own else cache
    try:
        return _evaluate(cache, cfg, method, _device(cfg.device))
    finally:
        if own:
            cache.close()


def _evaluate(cache: FeatureCache, cfg: EvalConfig, method: Method | None, device: torch.device):
    if len(cache) == 0:
        raise InputError(f"store {cache.store.path} holds no extracted videos")
    protocol = cfg.protocol
    meta_run = run = None
    if cfg.run_dir is not None:
        method, meta_run = _load_run(cfg.run_dir, cache, device)
        if protocol is None:
            protocol = _run_protocol(meta_run)
            if protocol not in PROTOCOLS:
                raise InputError(f"run {cfg.run_dir} does not name a protocol this evaluator knows "
                                 f"({protocol!r}); pass --protocol")
            cfg = dataclasses.replace(cfg, protocol=protocol)  # checked as if given (EvalConfig.__post_init__)
        try:
            run = SplitPlan.load(cfg.run_dir, cache)
        except RunError:
            if not cfg.allow_overlap:
                raise
    elif method is None:
        frames = cache.frames or int(cache.emb(view=0).shape[1])
        method = _build(cfg.method or get_protocol(protocol).default_method, cfg.method_options, cfg.metric, cache,
                        frames)
    shot_list = cfg.shot_list
    proto = get_protocol(protocol)  # its shots and episode-file rules: checked by EvalConfig (cfg replaced above)
    _check_protocol(method, protocol)
    method = method.to(device).eval()
    metric = method.metric_name
    if metric == "learned":
        metric = str(_meta_get(meta_run, "method.config.metric") or metric)

    loaded = None
    if cfg.episodes_file is not None:
        from .episodes import load_episodes

        eps, ep_meta = load_episodes(cfg.episodes_file)
        check_episodes(cache, eps, ep_meta, cfg.episodes_file)
        loaded = (eps, ep_meta, Path(cfg.episodes_file).name)
    split_given = cfg.split is not None or cfg.split_file is not None
    pools = None
    if run is not None and not split_given and loaded is None:
        pools = _Pools.of_run(cache, run, proto.test_parts)
        if pools is None:
            note = "the store holds none of the run's videos (another data set): evaluated on its own split"
            pools = _resolve_pools(cache, None, None, None, need_split=not proto.store_lists_evaluated(cache.splits()))
            pools.run = run
            pools.notes.insert(0, note)
    if pools is None:
        need_split = loaded is None and not (cfg.split is None and cfg.split_file is None
                                             and proto.store_lists_evaluated(cache.splits()))
        pools = _resolve_pools(cache, cfg.split, cfg.split_file, cfg.video_root,
                               need_split=need_split or (loaded is not None and split_given))
        pools.run = run
    if loaded is not None:
        pools = _episode_pools(cache, loaded, pools, split_given)
    if loaded is None and not proto.test_parts and pools.eval_idx.size == 0:  # parts: checked by the protocol
        raise InputError(f"split '{pools.eval_name}' has no labelled video in the store")

    overlap = None
    if cfg.run_dir is not None:
        problems = (["the run does not record its split: overlap with its training was not checked"] if run is None
                    else overlap_problems(run, cache, pools.eval_idx if not pools.parts
                                          else np.concatenate(list(pools.parts.values())),
                                          # the run's own protocol: as disjoint as its split was recorded
                                          proto.disjoint_part(pools, cache.labels)
                                          if protocol != run.protocol or run.class_disjoint else None))
        if problems and not cfg.allow_overlap:
            raise InputError("; ".join(problems) + ": not a held-out evaluation (score the run's own test split by "
                                                   "leaving --split, --split-file and --episodes-file out, or pass "
                                                   "--allow-overlap to evaluate anyway)")
        if problems:
            overlap = "; ".join(problems)
            pools.notes.insert(0, f"--allow-overlap: {overlap}")

    own_lists = proto.store_lists_evaluated(pools.splits)
    used = np.concatenate([pools.eval_idx, *pools.parts.values(),
                           *[s.indices for n, s in pools.splits.items() if n in own_lists]])
    ensure_cached(cache, method.needs, used, command="eval", classes=cache.classes, device=str(device),
                  encoder=getattr(getattr(method, "backbone", None), "clip", None))  # once, in place
    results: list[EvalResult] = []
    with torch.no_grad():  # not inference_mode: tables keep a version counter (Proto caches on it)
        base = dict(cache=cache, method=method, metric=metric, pools=pools, ways=cfg.ways, queries=cfg.queries,
                    episodes=cfg.episodes, seed=cfg.seed, batch_episodes=cfg.batch_episodes, device=device,
                    loaded=loaded, out_dir=cfg.out_dir)
        if proto.unit == "episodes":  # drawn and scored from the store by the protocol
            for k in shot_list:
                name = "episodes.json" if len(shot_list) == 1 else f"episodes_{k}shot.json"
                results += proto.evaluate(EvalJob(shots=k, file_name=name, **base))
        else:
            from .batches import method_data

            data = method_data(cache, method, device)
            fits = method.predicts == "support" and run is None and cfg.run_dir is None
            if proto.shot_curve == "support" and not fits and len(shot_list) > 1:
                raise InputError(f"{method.display_name} does not draw K-shot lists, so several --shots "
                                 "give the same number; give one")
            for k in shot_list:
                results += proto.evaluate(EvalJob(shots=k, data=data, **base))
    if meta_run is not None:
        from .runs import unfinished_run_note

        unfinished = unfinished_run_note(meta_run, cfg.run_dir)
        for r in results:
            r.notes.append(f"trained run {Path(cfg.run_dir).name} (trained under the "
                           f"{_run_protocol(meta_run) or '?'} protocol)")
            if unfinished:
                r.notes.insert(0, unfinished)
    caveat = encoder_caveat(cache.key)
    cov = eval_coverage(cache, pools, own_lists)
    prompts: dict[tuple, str | None] = {}  # per class set: a shot curve's results share one
    for r in results:
        r.overlap = overlap
        r.encoder = caveat
        r.coverage = cov
        classes = tuple(r.class_names)
        if classes not in prompts:
            prompts[classes] = _templates_read(cache, method, r)
        r.templates = prompts[classes]
    if cfg.out_dir is not None:
        write_report(cfg.out_dir, results)
    return results if cfg.many else results[0]


def _templates_read(cache: FeatureCache, method: Method, r: EvalResult) -> str | None:
    """The prompt set of the class text ``r`` was scored with (protocols.md 6.7), None without text."""
    from .templates import templates_label

    if not method.needs.text:
        return None
    try:
        sets = cache.text_templates(r.class_names or None)
    except InputError:  # classes without text (a method that reads it only in training)
        return None
    return "; ".join(templates_label(t) for t in sets)


def eval_coverage(cache: FeatureCache, pools: _Pools, own_lists: tuple[str, ...] = ()) -> dict:
    """Per store split: listed, present, failed to decode, and used (scored) by this evaluation
    (``own_lists``: the store splits the protocol read by itself, :meth:`Protocol.store_lists_evaluated`)."""
    from .coverage import store_coverage, used_by

    used = np.concatenate([pools.eval_idx, *pools.parts.values()]) if pools.parts else pools.eval_idx
    if used.size == 0:  # base-to-novel from the store's lists: the protocol reads base_val and novel_val
        used = np.concatenate([np.zeros(0, np.int64)] + [s.indices for n, s in pools.splits.items()
                                                         if n in own_lists])
    from_file = {n: s for n, s in pools.splits.items() if s.listed is not None}
    if from_file:  # --split-file: the file's lists are what is covered
        return {n: {"listed": s.listed, "present": s.listed - s.absent, "failed": s.missing - s.absent,
                    "used": int(np.intersect1d(s.indices, used).size)} for n, s in from_file.items()}
    return used_by(store_coverage(cache.store, cache.video_keys), cache, used)


__all__ = ["PROTOCOLS", "EvalConfig", "evaluate"]

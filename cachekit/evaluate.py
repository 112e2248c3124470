"""Evaluate a method from the cache under one protocol (protocols.md §1-§5); no backbone pass
unless a trained method needs one.

- ``episodic``: W-way K-shot, Q queries per class, episodes drawn from one seed on the evaluation
  split's classes (:class:`~cachekit.episodes.EpisodeSampler`); mean episode accuracy ± 95 % CI.
  Episodes can be saved and re-used (:func:`~cachekit.episodes.save_episodes`), so two methods
  are compared on the same episodes. Methods with ``episodes_logits(emb [V, T, D'], text [C, P, D'],
  class_ids [E, W], support [E, W, K], query [E, W, Q]) -> [E, W*Q, W]`` (the no-training
  baselines) score a chunk of episodes at a time from the whole embedding table; others go
  episode by episode through ``episode_logits``.
- ``allway``: every video of the evaluation split classified among all classes of the training
  and evaluation splits (ViFi-CLIP K-shot protocol, §3). A method with ``fit_support`` (support
  prototypes) first gets a K-shot list of every class drawn from the ``train`` split
  (:func:`~cachekit.episodes.allway_kshot`); a trained run is scored as it is.
- ``zeroshot``: the evaluation split's videos classified among the evaluation split's classes by
  their text only (§4).
- ``base2novel``: base and novel classes each scored against their own class set by text; the
  result's accuracy is the harmonic mean, ``extra`` holds base, novel and HM (§5).

Splits are the ones the store was extracted from (:meth:`FeatureCache.splits`) or a split file.
Videos a split names but the store lacks are counted in the result's notes, never dropped
silently. A store without splits is evaluated over all its labelled videos, and the notes say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import FeatureCache, Split
from .episodes import (
    EpisodeSampler,
    EpisodeSpec,
    accuracy_ci,
    allway_kshot,
    base_novel_split,
    episode_arrays,
    harmonic_mean,
    load_episodes,
    save_episodes,
)
from .errors import InputError, InputNotFound, RunError
from .progress import bar
from .methods.base import Method
from .report import EvalResult, write_report

PROTOCOLS = ("episodic", "allway", "zeroshot", "base2novel")
DEFAULT_METHOD = {"episodic": "proto", "allway": "zeroshot", "zeroshot": "zeroshot", "base2novel": "zeroshot"}
BASE_SPLIT, NOVEL_SPLIT = "base_val", "novel_val"  # ViFi-CLIP base-to-novel list names (§5)
TRAIN_SPLIT = "train"


# --------------------------------------------------------------------------- splits
@dataclass
class _Pools:
    """Which videos the evaluation reads, and what the report must say about them."""

    eval_name: str | None  # None: the store has no splits (all labelled videos)
    eval_idx: np.ndarray  # [N] labelled videos to evaluate on
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> Split | None:
        return self.splits.get(name)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _split_from_file(cache: FeatureCache, split_file: str | os.PathLike,
                     video_root: str | None) -> dict[str, Split]:
    """Read a CLIP-FSAR / ViFi-CLIP split file (or a plain list) and map it onto the store.

    A listed path is found by its absolute path among the store's records (whether or not the
    file still exists), else, when the file exists, by its content key; anything else counts as
    missing.
    """
    from .inputs import InputSet, collect_inputs, parse_split_file
    from .video import file_key

    path = Path(split_file)
    if not path.is_file():
        raise InputNotFound(f"--split-file {split_file} not found")
    root = Path(video_root) if video_root else None
    if root is not None and not root.is_dir():
        raise InputNotFound(f"--video-root {video_root} is not a directory")
    parsed = InputSet()
    if not parse_split_file(path, root, None, parsed):
        parsed = collect_inputs([str(path)], video_root=video_root)
    default = path.stem
    listed: dict[str, list[str]] = {}
    for it in parsed.items:
        listed.setdefault(it.split or default, []).append(it.path)
    by_path = {os.path.abspath(p): i for i, p in enumerate(cache.paths)}
    by_key = {k: i for i, k in enumerate(cache.video_keys)}
    out = {}
    for name in sorted(set(listed) | set(parsed.missing)):
        idx, missing = [], 0
        # files gone from disk still count when the store holds them (extracted before removal)
        for p in [*listed.get(name, []), *parsed.missing.get(name, [])]:
            i = by_path.get(os.path.abspath(p))
            if i is None and os.path.isfile(p):
                try:
                    i = by_key.get(file_key(p))
                except OSError:
                    i = None
            if i is None:
                missing += 1
            else:
                idx.append(i)
        out[name] = Split(name, np.array(sorted(set(idx)), dtype=np.int64), missing)
    return out


def _resolve_pools(cache: FeatureCache, split: str | None, split_file, video_root,
                   need_split: bool = True) -> _Pools:
    splits = dict(cache.splits())
    from_file: set[str] = set()
    if split_file is not None:
        file_splits = _split_from_file(cache, split_file, video_root)
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
        for cand in ("test", "val"):
            if cand in splits:
                split = cand
                break
        else:
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
    try:
        from .runs import load_run
    except ModuleNotFoundError as err:
        if err.name not in ("cachekit.runs",):
            raise
        raise RunError(f"--run {run_dir}: this installation cannot load runs yet (cachekit.runs is missing)") from err
    return load_run(run_dir, cache_key=cache.key, device=str(device))


def _build(name: str, options: dict | None, metric: str | None, cache: FeatureCache, frames: int) -> Method:
    from .methods import build_method, method_module

    try:
        mod = method_module(name)
    except ModuleNotFoundError as err:
        raise InputError(f"method {name} is not available in this installation ({err})") from err
    overrides = dict(options or {})
    if metric is not None and "metric" in {f.name for f in dataclasses.fields(mod.Config)}:
        overrides.setdefault("metric", metric)
    method = build_method(name, overrides, cache.model_info, frames)
    if method.num_trainable() or method.needs_backbone:
        raise InputError(f"method {name} has {method.num_trainable():,} trainable parameters: train it first "
                         "(clipcache train) and evaluate the run with --run")
    return method


def _check_protocol(method: Method, protocol: str) -> None:
    need = "episodic" if protocol == "episodic" else "allway"
    if need not in method.protocols:
        raise InputError(f"{method.display_name} does not support the {protocol} protocol "
                         f"(it supports: {', '.join(method.protocols) or 'none'})")
    if protocol in ("zeroshot", "base2novel") and not method.needs.text:
        raise InputError(f"{method.display_name} does not read class text, so it cannot score unseen classes; "
                         f"the {protocol} protocol needs a text-based method (e.g. --method zeroshot or a trained run)")
    if protocol == "allway" and not method.needs.text and not _fittable(method):
        raise InputError(f"{method.display_name} cannot classify among all classes (no class text, no support fit)")


def _fittable(method: Method) -> bool:
    return callable(getattr(method, "fit_support", None))


def _batchable(method: Method) -> bool:
    n = method.needs
    return (callable(getattr(method, "episodes_logits", None)) and n.emb
            and not (n.cls or n.tokens_at or n.pixels or n.backbone))


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


def _metric_name(method: Method, meta: dict | None) -> str:
    m = getattr(method, "metric", None) or _meta_get(meta, "method.config.metric", "config.metric")
    return str(m) if m else "learned"


# --------------------------------------------------------------------------- scoring helpers
def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _store_fingerprint(cache: FeatureCache) -> str:
    """Identifies the store's video order: episode files hold positions into it."""
    h = hashlib.sha256()
    for k in cache.video_keys:
        h.update(k.encode() + b"\n")
    return h.hexdigest()[:16]


def _confusion(true: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Counts ``[C, C]`` (rows = true class) of global class ids over ``classes`` [C]."""
    pos = np.full(int(max(classes.max(), true.max(), pred.max())) + 1, -1, dtype=np.int64)
    pos[classes] = np.arange(classes.size)
    t, p = pos[true], pos[pred]
    conf = np.zeros((classes.size, classes.size), dtype=np.int64)
    np.add.at(conf, (t, p), 1)
    return conf


def _per_class(conf: np.ndarray, names: list[str]) -> dict[str, float]:
    rows = conf.sum(axis=1)
    return {n: (100.0 * conf[i, i] / rows[i] if rows[i] else float("nan")) for i, n in enumerate(names)}


def _names(cache: FeatureCache, classes: np.ndarray) -> list[str]:
    return [cache.classes[int(c)] for c in classes]


def _video_predictions(method: Method, data, idx: np.ndarray, text: torch.Tensor, classes: np.ndarray,
                       names: list[str], batch: int = 512) -> np.ndarray:
    """Global class id predicted for each video ``idx`` [N] among ``classes`` [C] (text [C, P, D'],
    class names ``names`` [C])."""
    _bind(method, names)
    out = np.empty(idx.size, dtype=np.int64)
    for a in range(0, idx.size, batch):
        b = data.batch(idx[a:a + batch], view=0)
        logits = method.video_logits(b, text)  # [B, C]
        out[a:a + batch] = classes[logits.argmax(dim=-1).cpu().numpy()]
    return out


def _bind(method: Method, names: list[str]) -> None:
    """Row i of the text that follows is class ``names[i]`` (methods that tokenise names need it)."""
    bind = getattr(method, "bind_classes", None)
    if callable(bind):
        bind(list(names))


def _class_text(data, classes: np.ndarray, dim: int, device: torch.device) -> torch.Tensor:
    """``[C, P, D']`` text of ``classes``; an empty ``[C, 0, D']`` when the method reads no text."""
    if data.text is None:
        return torch.zeros(classes.size, 0, dim, device=device)
    return data.text[torch.from_numpy(classes).to(data.text.device)]


def _video_result(protocol: str, method: Method, metric: str, shots: int | None, true: np.ndarray,
                  pred: np.ndarray, classes: np.ndarray, cache: FeatureCache, notes: list[str],
                  extra: dict | None = None) -> EvalResult:
    acc, ci = accuracy_ci((pred == true).astype(np.float64))
    conf = _confusion(true, pred, classes)
    names = _names(cache, classes)
    return EvalResult(protocol=protocol, method=method.display_name, metric=metric, ways=None, shots=shots,
                      queries=None, episodes=int(true.size), accuracy=acc, ci95=ci,
                      per_class=_per_class(conf, names), confusion=conf, class_names=names,
                      notes=list(notes), extra=dict(extra or {}))


# --------------------------------------------------------------------------- episodic
def _check_episodes(cache: FeatureCache, eps: list[EpisodeSpec], meta: dict, path) -> None:
    """An episode file must come from this store: same video order, labels that match."""
    fp = meta.get("store_fingerprint")
    if fp is not None and fp != _store_fingerprint(cache):
        raise InputError(f"episode file {path} was drawn on a different store (its videos differ from "
                         f"{cache.store.path}); draw new episodes with --seed")
    if not eps:
        raise InputError(f"episode file {path} holds no episodes")
    cls, sup, qry = episode_arrays(eps)
    n = len(cache)
    for name, a in (("support", sup), ("query", qry)):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise InputError(f"episode file {path}: {name} video indices outside 0..{n - 1} of this store")
    labels = cache.labels
    if (sup.size and not np.array_equal(labels[sup], np.broadcast_to(cls[:, :, None], sup.shape))) or \
            not np.array_equal(labels[qry], np.broadcast_to(cls[:, :, None], qry.shape)):
        raise InputError(f"episode file {path}: video labels do not match the episodes' classes in this store")


def _episodes_for(cache, pools: _Pools, ways, shots, queries, n, seed, loaded, notes):
    """Episodes and their meta: re-used from a loaded file, or drawn from the evaluation split."""
    if loaded is not None:
        eps, meta, name = loaded
        notes.append(f"episodes read from {name} (seed {meta.get('seed')}, split {meta.get('split')!r})")
        return eps, meta
    sampler = EpisodeSampler(cache.labels, pools.eval_idx, ways, shots, queries, seed=seed,
                             split_name=pools.eval_name)
    notes.extend(sampler.notes)
    meta = {**sampler.meta, "store_fingerprint": _store_fingerprint(cache), "store_videos": len(cache)}
    return sampler.sample(n), meta


def _score_episodes(method: Method, cache: FeatureCache, eps: list[EpisodeSpec], device: torch.device,
                    batch_episodes: int) -> np.ndarray:
    """Predicted episode-local class per query: ``[E, W*Q]``."""
    cls, sup, qry = episode_arrays(eps)  # [E, W], [E, W, K], [E, W, Q]
    e_n = cls.shape[0]
    _bind(method, list(cache.classes))  # Episode.class_ids and text rows are global class ids
    if _batchable(method):
        emb = torch.from_numpy(cache.emb(view=0)).to(device)  # [V, T, D']
        text = torch.from_numpy(cache.text()).to(device) if method.needs.text else None  # [C, P, D']
        pred = np.empty((e_n, qry.shape[1] * qry.shape[2]), dtype=np.int64)
        for a in bar(range(0, e_n, batch_episodes), desc="eval", unit="chunk"):  # on in a progress scope
            b = min(a + batch_episodes, e_n)
            chunk = [torch.from_numpy(x[a:b]).to(device) for x in (cls, sup, qry)]  # [e, W], [e, W, K], [e, W, Q]
            logits = method.episodes_logits(emb, text, *chunk)  # [e, W*Q, W]
            pred[a:b] = logits.argmax(dim=-1).cpu().numpy()
        return pred
    from .batches import CacheData

    data = CacheData(cache, method.needs, device)
    rows = []
    for spec in bar(eps, desc="eval", unit="episode"):  # on in a progress scope
        ep = data.episode(spec, view=0)
        rows.append(method.episode_logits(ep).argmax(dim=-1).cpu().numpy())  # [W*Q]
    return np.stack(rows)


def _episodic(cache, method, meta_run, pools, ways, shots, queries, n, seed, loaded, device,
              batch_episodes, out_dir, file_name) -> EvalResult:
    notes = list(pools.notes)
    eps, ep_meta = _episodes_for(cache, pools, ways, shots, queries, n, seed, loaded, notes)
    w, k, q = eps[0].ways, eps[0].shots, eps[0].queries
    if k > 0 and not getattr(method, "uses_support", True):
        notes.append(f"{method.display_name} ignores the {k} support videos per class: it matches queries to "
                     "the class text only (5-way zero-shot; use --shots 0 for query-only episodes)")
    pred = _score_episodes(method, cache, eps, device, batch_episodes)  # [E, W*Q] local
    cls, _, _ = episode_arrays(eps)
    local_true = np.repeat(np.arange(w), q)  # [W*Q]
    correct = pred == local_true[None, :]  # [E, W*Q]
    acc, ci = accuracy_ci(correct.astype(np.float64))
    true_g = cls[:, local_true].ravel()  # [E*W*Q] global class ids
    pred_g = np.take_along_axis(cls, pred, axis=1).ravel()
    classes = np.unique(cls)
    conf = _confusion(true_g, pred_g, classes)
    names = _names(cache, classes)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_episodes(Path(out_dir) / file_name, eps, ep_meta)
        notes.append(f"episodes saved to {file_name}")
    return EvalResult(protocol="episodic", method=method.display_name, metric=_metric_name(method, meta_run),
                      ways=w, shots=k, queries=q, episodes=len(eps), accuracy=acc, ci95=ci,
                      per_class=_per_class(conf, names), confusion=conf, class_names=names, notes=notes)


# --------------------------------------------------------------------------- all-way / zero-shot / b2n
def _allway(cache, method, meta_run, pools: _Pools, shots: int | None, seed, device, data) -> EvalResult:
    notes = list(pools.notes)
    labels = cache.labels
    eval_idx = pools.eval_idx
    train = pools.get(TRAIN_SPLIT) if pools.eval_name not in (None, TRAIN_SPLIT) else None
    train_idx = train.indices[labels[train.indices] >= 0] if train is not None else None
    metric = _metric_name(method, meta_run)
    if _fittable(method):
        if pools.eval_name is None:  # no splits: shots come from the pool, the rest is evaluated
            shot_idx = allway_kshot(labels, eval_idx, shots, seed=seed)
            eval_idx = np.setdiff1d(eval_idx, shot_idx)
            classes = np.unique(labels[shot_idx])
            notes.append(f"{shots}-shot list drawn from the same videos (seed {seed}); the other "
                         f"{eval_idx.size:,} are evaluated")
        else:
            if train_idx is None:
                raise InputError(f"{method.display_name} on the allway protocol draws its K-shot list from a "
                                 f"'{TRAIN_SPLIT}' split; the store has {', '.join(sorted(pools.splits))}")
            eval_cls = np.unique(labels[eval_idx])
            lacking = np.setdiff1d(eval_cls, np.unique(labels[train_idx]))
            if lacking.size:
                shown = ", ".join(repr(cache.classes[c]) for c in lacking[:5])
                raise InputError(f"allway: split '{TRAIN_SPLIT}' has no video of {lacking.size} of the "
                                 f"{eval_cls.size} classes of split '{pools.eval_name}' (e.g. {shown}); "
                                 "use --protocol zeroshot for disjoint classes")
            classes = np.union1d(eval_cls, np.unique(labels[train_idx]))
            shot_idx = allway_kshot(labels, train_idx, shots, seed=seed, split_name=TRAIN_SPLIT)
            overlap = np.intersect1d(eval_idx, shot_idx)
            if overlap.size:
                eval_idx = np.setdiff1d(eval_idx, overlap)
                notes.append(f"{overlap.size:,} videos of the {shots}-shot list are also in split "
                             f"'{pools.eval_name}': removed from the evaluation")
            notes.append(f"{shots}-shot list: {shot_idx.size:,} videos of split '{TRAIN_SPLIT}' (seed {seed})")
        t = torch.from_numpy(shot_idx)
        method.fit_support(data.emb[t, 0].to(device), data.labels[t].to(device), classes)
        res_shots = shots
    else:
        classes = np.unique(labels[eval_idx])
        if train_idx is not None:
            classes = np.union1d(classes, np.unique(labels[train_idx]))
        res_shots = _run_shots(meta_run)
    notes.append(f"classified among {_plural(classes.size, 'class', 'classes')}")
    text = _class_text(data, classes, cache.model_info.embed_dim, device)
    pred = _video_predictions(method, data, eval_idx, text, classes, _names(cache, classes))
    return _video_result("allway", method, metric, res_shots, labels[eval_idx], pred, classes, cache, notes)


def _run_shots(meta: dict | None) -> int | None:
    k = _meta_get(meta, "train.config.shots", "config.shots", "shots")
    return int(k) if isinstance(k, int) and not isinstance(k, bool) else None


def _zeroshot(cache, method, meta_run, pools: _Pools, device, data) -> EvalResult:
    notes = list(pools.notes)
    labels = cache.labels
    idx = pools.eval_idx
    classes = np.unique(labels[idx])
    train = pools.get(TRAIN_SPLIT) if pools.eval_name not in (None, TRAIN_SPLIT) else None
    if train is not None:
        seen = np.intersect1d(classes, np.unique(labels[train.indices[labels[train.indices] >= 0]]))
        if seen.size:
            notes.append(f"{seen.size} of the {classes.size} evaluated classes also appear in split "
                         f"'{TRAIN_SPLIT}': not a zero-shot setting for methods trained on it")
    elif pools.eval_name is None:
        notes.append("no split files: cannot check that the evaluated classes are unseen in training")
    notes.append(f"classified among the {_plural(classes.size, 'class', 'classes')} of the evaluated videos, "
                 "by their text only")
    text = _class_text(data, classes, cache.model_info.embed_dim, device)
    pred = _video_predictions(method, data, idx, text, classes, _names(cache, classes))
    return _video_result("zeroshot", method, _metric_name(method, meta_run), None, labels[idx], pred, classes,
                         cache, notes)


def _base2novel(cache, method, meta_run, pools: _Pools, seed, device, data) -> EvalResult:
    labels = cache.labels
    notes = []
    base_s, novel_s = pools.get(BASE_SPLIT), pools.get(NOVEL_SPLIT)
    if base_s is not None and novel_s is not None:
        base_idx = base_s.indices[labels[base_s.indices] >= 0]
        novel_idx = novel_s.indices[labels[novel_s.indices] >= 0]
        base_cls, novel_cls = np.unique(labels[base_idx]), np.unique(labels[novel_idx])
        notes.append(f"base classes from split '{BASE_SPLIT}', novel classes from split '{NOVEL_SPLIT}'")
        notes += _missing_notes(base_s, f"split '{BASE_SPLIT}'") + _missing_notes(novel_s, f"split '{NOVEL_SPLIT}'")
        shared = np.intersect1d(base_cls, novel_cls)
        if shared.size:
            notes.append(f"{shared.size} classes appear in both '{BASE_SPLIT}' and '{NOVEL_SPLIT}'")
    else:
        notes += pools.notes
        idx = pools.eval_idx
        all_cls = np.unique(labels[idx])
        base_cls, novel_cls = base_novel_split(all_cls, seed=seed)
        base_idx = idx[np.isin(labels[idx], base_cls)]
        novel_idx = idx[np.isin(labels[idx], novel_cls)]
        notes.append(f"no '{BASE_SPLIT}'/'{NOVEL_SPLIT}' splits: classes halved at random by base_novel_split "
                     f"(seed {seed}), not by frequency as the published splits")
    if base_idx.size == 0 or novel_idx.size == 0:
        raise InputError(f"base2novel needs videos of both base and novel classes (base {base_idx.size}, "
                         f"novel {novel_idx.size})")
    metric = _metric_name(method, meta_run)
    res = []
    for idx, cls in ((base_idx, base_cls), (novel_idx, novel_cls)):
        text = _class_text(data, cls, cache.model_info.embed_dim, device)
        res.append((labels[idx], _video_predictions(method, data, idx, text, cls, _names(cache, cls))))
    (bt, bp), (nt, np_) = res
    b, b_ci = accuracy_ci((bp == bt).astype(np.float64))
    n, n_ci = accuracy_ci((np_ == nt).astype(np.float64))
    hm = harmonic_mean(b, n)
    # delta method: HM = 2BN/(B+N), independent base and novel estimates
    if b + n > 0:
        d_b, d_n = 2 * n * n / (b + n) ** 2, 2 * b * b / (b + n) ** 2
        hm_ci = math.sqrt((d_b * b_ci) ** 2 + (d_n * n_ci) ** 2)
    else:
        hm_ci = 0.0
    notes.append("accuracy = harmonic mean of base and novel; its CI by the delta method")
    classes = np.union1d(base_cls, novel_cls)
    true, pred = np.concatenate([bt, nt]), np.concatenate([bp, np_])
    extra = {"base": b, "base_ci95": b_ci, "novel": n, "novel_ci95": n_ci, "hm": hm,
             "base_classes": int(base_cls.size), "novel_classes": int(novel_cls.size),
             "base_videos": int(bt.size), "novel_videos": int(nt.size)}
    r = _video_result("base2novel", method, metric, None, true, pred, classes, cache, notes, extra)
    r.accuracy, r.ci95 = hm, hm_ci
    return r


# --------------------------------------------------------------------------- entry point
def evaluate(
    cache: FeatureCache | str | os.PathLike,
    protocol: str | None,
    method: Method | str | None = None,
    run_dir: str | os.PathLike | None = None,
    ways: int = 5,
    shots: int | Sequence[int] = 1,
    queries: int = 1,
    episodes: int = 10_000,
    metric: str | None = "otam",
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    split: str | None = None,
    batch_episodes: int = 200,
    episodes_file: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    method_options: dict | None = None,
    video_root: str | None = None,
    device: str | torch.device = "cpu",
) -> EvalResult | list[EvalResult]:
    """Evaluate one method under one protocol, reading only the cache.

    Args:
        cache: an open :class:`FeatureCache` or a store path.
        protocol: ``episodic``, ``allway``, ``zeroshot`` or ``base2novel`` (never mixed); None
            with ``run_dir``: the protocol the run was trained under.
        method: a built :class:`Method`, a registered name (no-training methods only: ``proto``,
            ``zeroshot``), or None: the run's method with ``run_dir``, else ``proto`` for
            episodic and ``zeroshot`` otherwise.
        run_dir: a trained run (:func:`cachekit.runs.load_run`); its cache key must match.
        ways, queries, episodes: episodic W, Q per class, number of episodes.
        shots: K, or several K (one result per K: an accuracy-vs-shots curve). Episodic: support
            shots per class (0 = query-only episodes, for zero-shot methods). All-way: the K-shot
            list a support-fitting method (``proto``) is built from; ignored by trained runs.
        metric: the ``metric`` option of a method built by name whose Config has one (``proto``).
        seed: episodes, K-shot lists and the fallback base/novel split derive from it.
        split_file, split, video_root: where the evaluated videos come from (default: the store's
            ``test`` split, else ``val``, else all its videos).
        batch_episodes: episodes scored at once by a batched method (200: a chunk's tensors stay
            small enough for the allocator to reuse their memory; raise it on a GPU).
        episodes_file: re-use the episodes of an earlier run (episodic; overrides ways, shots,
            queries, episodes, seed).
        out_dir: write the episodes (``episodes.json``, ``episodes_<K>shot.json`` for several K)
            and the report files (:func:`cachekit.report.write_report`) there.
        method_options: Config overrides of a method built by name (e.g. ``{"template": 0}``).

    Returns:
        One :class:`EvalResult` (accuracy and ci95 in percent), or a list when ``shots`` is a
        sequence. Raises :class:`InputError` (one line) on impossible requests, e.g. more ways
        than the split has classes.
    """
    if protocol is None and run_dir is None:
        raise InputError(f"a protocol is required ({', '.join(PROTOCOLS)})")
    if protocol is not None and protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    many = not isinstance(shots, (int, np.integer))
    shot_list = [int(k) for k in (shots if many else [shots])]
    if not shot_list:
        raise InputError("--shots needs at least one value")
    if len(set(shot_list)) != len(shot_list):
        raise InputError(f"--shots lists a value twice: {shot_list}")
    if batch_episodes < 1:
        raise InputError(f"batch_episodes must be >= 1, got {batch_episodes}")
    own = not isinstance(cache, FeatureCache)
    cache = FeatureCache(cache) if own else cache
    try:
        return _evaluate(cache, protocol, method, run_dir, ways, shot_list, many, queries, episodes, metric, seed,
                         split_file, split, batch_episodes, episodes_file, out_dir, method_options, video_root,
                         _device(device))
    finally:
        if own:
            cache.close()


def _evaluate(cache, protocol, method, run_dir, ways, shot_list, many, queries, episodes, metric, seed, split_file,
              split, batch_episodes, episodes_file, out_dir, method_options, video_root, device):
    if len(cache) == 0:
        raise InputError(f"store {cache.store.path} holds no extracted videos")
    meta_run = None
    if run_dir is not None:
        if method is not None:
            raise InputError("give either a trained run (--run) or a method (--method), not both")
        method, meta_run = _load_run(run_dir, cache, device)
        if protocol is None:
            protocol = _run_protocol(meta_run)
            if protocol not in PROTOCOLS:
                raise InputError(f"run {run_dir} does not name a protocol this evaluator knows "
                                 f"({protocol!r}); pass --protocol")
    elif method is None or isinstance(method, str):
        frames = cache.frames or int(cache.emb(view=0).shape[1])
        method = _build(method or DEFAULT_METHOD[protocol], method_options, metric, cache, frames)
    if protocol in ("zeroshot", "base2novel") and len(shot_list) > 1:
        raise InputError(f"--shots does not apply to the {protocol} protocol; give at most one value")
    if episodes_file is not None and (protocol != "episodic" or len(shot_list) > 1):
        raise InputError("--episodes-file applies to the episodic protocol with one --shots value")
    _check_protocol(method, protocol)
    method = method.to(device).eval()
    loaded = None
    if episodes_file is not None:
        eps, ep_meta = load_episodes(episodes_file)
        _check_episodes(cache, eps, ep_meta, episodes_file)
        loaded = (eps, ep_meta, Path(episodes_file).name)
        if split is None and split_file is None and ep_meta.get("split") in cache.splits():
            split = ep_meta["split"]  # describe (and count missing videos of) the file's split
    store_splits = cache.splits()
    need_split = loaded is None and not (protocol == "base2novel" and split is None
                                         and BASE_SPLIT in store_splits and NOVEL_SPLIT in store_splits)
    pools = _resolve_pools(cache, split, split_file, video_root, need_split=need_split)
    if need_split and protocol != "base2novel" and pools.eval_idx.size == 0:
        raise InputError(f"split '{pools.eval_name}' has no labelled video in the store")
    results: list[EvalResult] = []
    with torch.no_grad():  # not inference_mode: tables keep a version counter (Proto caches on it)
        if protocol == "episodic":
            for k in shot_list:
                name = "episodes.json" if len(shot_list) == 1 else f"episodes_{k}shot.json"
                results.append(_episodic(cache, method, meta_run, pools, ways, k, queries, episodes, seed,
                                         loaded, device, batch_episodes, out_dir, name))
        else:
            from .batches import CacheData

            data = CacheData(cache, method.needs, device)
            if protocol == "allway":
                ks = shot_list if _fittable(method) else shot_list[:1]
                if not _fittable(method) and len(shot_list) > 1:
                    raise InputError(f"{method.display_name} does not draw K-shot lists, so several --shots "
                                     "give the same number; give one")
                results += [_allway(cache, method, meta_run, pools, k, seed, device, data) for k in ks]
            elif protocol == "zeroshot":
                results.append(_zeroshot(cache, method, meta_run, pools, device, data))
            else:
                results.append(_base2novel(cache, method, meta_run, pools, seed, device, data))
    if meta_run is not None:
        for r in results:
            r.notes.append(f"trained run {Path(run_dir).name} (trained under the "
                           f"{_run_protocol(meta_run) or '?'} protocol)")
    if out_dir is not None:
        write_report(out_dir, results)
    return results if many else results[0]


__all__ = ["PROTOCOLS", "evaluate"]

"""Class prototypes in a FAISS index directory, with the encoder exported beside them.

``clipcache index`` turns the support videos of a store into one prototype per class:

- the support features are what a method compares: a trained run's support path
  (:meth:`Method.support_features`, default the cached embeddings) or, with no run, the cached
  per-frame embeddings themselves (the ``proto`` baseline with ``metric``);
- a *temporal* prototype ``[T, D]`` per class (the per-frame mean of its shots, CLIP-FSAR's
  convention) and a *pooled* vector ``[D]`` (methods.md §6.4: each shot mean-pooled over T and
  L2-normalised, the shots averaged and re-normalised) go into the index; FAISS searches the
  pooled vectors by cosine (:class:`cachekit.index.faiss_index.PrototypeIndex`);
- the ranking: metric ``mean`` is the FAISS cosine itself; a temporal metric (``otam``,
  ``bimhm``) re-ranks FAISS's shortlist on the temporal prototypes; a method whose score is its
  own (:meth:`Method.prototype_metric` is None, e.g. TRX) re-ranks it with
  :meth:`Method.score_supports` on the kept per-shot features. With a shortlist as long as the
  index, the ranking is the brute-force one.
- a run of a method that classifies by class text or a trained head (``predicts`` "text" /
  "classifier": zeroshot, linear_probe, ev_clip, ez_clip) is not a prototype method: the index holds its own class
  vectors (:meth:`Method.index_class_vectors`, saved as ``class_vectors.npy``), and a query's
  score is the mean over T of its query features dotted with them: the method's logit, so
  ``query --run`` answers as ``eval --run`` predicts. Such a method without class vectors is
  refused (support prototypes would be another classifier).

The index directory (published atomically) holds ``index.faiss``, ``temporal.npy`` ``[C, T, D]``,
for a method-scored index ``support.npy`` ``[S, T, D]`` + ``support_labels.npy`` ``[S]`` (+
``text.npy`` ``[C, P, D']``), the exported query encoder, and ``index.json``: the label map
(``classes``: id -> class name), the cache key, the method and its config, the metric, the run.

The query encoder (``pixels [T, 3, S, S] -> features [T, D]``: frozen encoder, then the method's
query path) is exported with ``torch.export`` (``encoder.pt2``); its graph is also written as
Python code over ATen ops plus a weights file, which ``clipcache query`` runs with torch alone
(no open_clip, no ``torch.export`` deserialiser: a fast start). ONNX is written when ``onnx`` is
installed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
import numpy as np

from ..autoextend import ensure_cached
from ..caveat import encoder_caveat
from ..errors import CacheKeyMismatch, InputError, InputNotFound, RunError
from ..ids import unique_ids
from ..options import param
from .export import export_encoder
from .faiss_index import IndexConfig, PrototypeIndex, index_lock, load_exact, not_replaceable, resolve_dir

log = logging.getLogger(__name__)

INDEX_FORMAT = "clipcache-prototypes"
INDEX_VERSION = 1

@dataclass(frozen=True)
class IndexBuildConfig:
    """How ``clipcache index`` builds an index directory; validated on construction (one-line
    errors). Each field's help is its ``clipcache index`` option's (:func:`cachekit.options.param`)."""

    run_dir: str | os.PathLike | None = param(None, help="Trained run directory (default: the proto baseline, "
                                                         "no training).")
    split: str | None = param(None, help="Support videos: a split of the store (train, test, ...) or a split / "
                                         "list / CSV file (default: every labelled video).")
    metric: str | None = param(None, registry="cachekit.similarity:SIMILARITIES", help=(
        "Without --run: the proto baseline's score (default mean: FAISS cosine; a temporal metric re-ranks "
        "FAISS's shortlist on temporal prototypes). A run's method picks its own."))
    # the proto baseline's options (-o KEY=VALUE, typed by its Config): only metric changes an index
    method_options: dict | None = None
    shots: int | None = param(None, help="At most K support videos per class, the first by content key "
                                         "(default: all).")
    shortlist: int = param(64, help="Classes FAISS passes to a temporal / method re-ranking at query time.")
    video_root: str | None = param(None, help="Folder that split-file paths are relative to.")
    pretrained: str | None = param(None, help="The store's weights (file or local-dir:DIR) when its cache key "
                                              "names a file.")
    batch_size: int = 64  # support videos per method forward
    onnx: bool = param(True, help="Do not export ONNX (by default it is exported too when the onnx package is "
                                  "installed).")
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self):
        from ..similarity import SIMILARITIES

        if self.run_dir is not None and self.metric is not None:
            raise InputError("--metric is the proto baseline's (no --run); a run's method scores with its own metric")
        if self.run_dir is not None and self.method_options:
            raise InputError("--opt is the proto baseline's (no --run); a run's method keeps the options it "
                             "trained with")
        if self.method_options:
            from ..options import typed_options

            opts = typed_options("proto", self.method_options)
            if "metric" in opts and self.metric is not None and opts["metric"] != self.metric:
                raise InputError(f"--metric {self.metric} and --opt metric={opts['metric']} disagree; give one")
            object.__setattr__(self, "metric", opts.pop("metric", self.metric))
            if opts:
                raise InputError(f"--opt {', '.join(sorted(opts))}: does not change a prototype index "
                                 "(only metric does)")
        if self.metric is not None and self.metric not in SIMILARITIES:
            raise InputError(f"--metric must be one of {', '.join(SIMILARITIES)}, not {self.metric!r}")
        if self.shots is not None and self.shots < 1:
            raise InputError(f"--shots must be >= 1, got {self.shots}")
        if self.shortlist < 1:
            raise InputError(f"--shortlist must be >= 1, got {self.shortlist}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")

    @property
    def baseline_metric(self) -> str:
        """The proto baseline's metric: ``metric``, by default ``mean`` (FAISS cosine alone)."""
        return self.metric or "mean"


@dataclass
class IndexSummary:
    """What ``clipcache index`` / ``index add`` report."""

    path: str
    classes: int
    support_videos: int
    method: str
    metric: str | None
    scorer: str
    kind: str
    added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    store: str | None = None  # the store the support videos came from (build)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- prototypes
def support_prototypes(feats: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(temporal [C, T, D], pooled [C, D])`` from support features ``[S, T, D]``, labels ``[S]``.

    Temporal: per-frame mean of a class's shots (:func:`metrics.class_prototypes`). Pooled
    (§6.4): each shot mean-pooled over T and L2-normalised, the shots averaged, re-normalised.
    Every class 0..C-1 needs a shot.
    """
    import torch
    import torch.nn.functional as F

    from ..metrics import class_prototypes

    f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))  # [S, T, D]
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    temporal = class_prototypes(f, lab, n_classes)  # [C, T, D]
    shots = F.normalize(f.mean(dim=1), dim=-1)[:, None]  # [S, 1, D] video vectors
    pooled = F.normalize(class_prototypes(shots, lab, n_classes)[:, 0], dim=-1)  # [C, D]
    return temporal.numpy(), pooled.numpy()


# --------------------------------------------------------------------------- support set
def _support_pool(cache, split: str | None, video_root: str | None) -> tuple[np.ndarray, str, list[str]]:
    """Cache indices of the labelled support videos, where they came from (for the support-set
    note, written once the shots are taken) and notes about the split."""
    labels = cache.labels
    if split is None:
        idx = np.flatnonzero(labels >= 0)
        return idx, "the store", []
    splits = cache.splits()
    if split in splits:
        chosen = splits[split]
    elif os.path.isfile(split):
        from ..cache import Split
        from ..evaluate import split_from_file

        found = split_from_file(cache, split, video_root)  # {split name in the file: Split}
        idx = unique_ids(np.concatenate([s.indices for s in found.values()])) if found else np.zeros(0, np.int64)
        chosen = Split(Path(split).name, idx, sum(s.missing for s in found.values()))
    else:
        names = ", ".join(sorted(splits)) or "none"
        raise InputError(f"--split {split}: not a split of store {cache.store.path} (splits: {names}) "
                         "and not a file")
    idx = chosen.indices[labels[chosen.indices] >= 0]
    notes = []
    if chosen.missing:
        notes.append(f"split {chosen.name!r}: {chosen.missing} listed videos are not in the store")
    return idx, f"split {chosen.name!r}", notes


def _support_note(where: str, pool: int, used: int, shots: int | None) -> str:
    """The support-set note: the videos the index was built from, after ``--shots``."""
    if shots is None:
        return f"support set: {'all ' if where == 'the store' else ''}{pool} labelled videos of {where}"
    return f"support set: {used} of the {pool} labelled videos of {where} (--shots {shots}: at most {shots} per class)"


def _take_shots(idx: np.ndarray, labels: np.ndarray, shots: int | None) -> np.ndarray:
    if shots is None:
        return idx
    keep = [i for c in np.unique(labels[idx]) for i in idx[labels[idx] == c][:shots]]
    return np.array(sorted(keep), dtype=np.int64)


def _method_support(method, cache, idx: np.ndarray, class_of: np.ndarray, classes: list[str],
                    enc, batch_size: int, tick=lambda: None) -> tuple[np.ndarray, np.ndarray | None]:
    """Support features ``[S, T, D]`` from the method's support path, and the class text if it reads it."""
    import torch

    from ..batches import CacheData

    needs = method.needs
    data = CacheData(cache, needs, device="cpu", encoder=enc if needs.pixels else None)
    text = torch.from_numpy(cache.text(classes)) if needs.text else None  # [C, P, D']
    method.bind_classes(list(classes))
    out = []
    with torch.no_grad():
        for s in range(0, idx.size, batch_size):
            chunk = idx[s:s + batch_size]
            b = data.batch(chunk, view=0)
            t = text[torch.from_numpy(class_of[s:s + batch_size])] if text is not None else None  # [B, P, D']
            try:
                out.append(method.support_features(b, t).float().cpu().numpy())
            except NotImplementedError as err:  # a method without the index hooks it needs
                raise RunError(f"cannot index with this run: {err}") from err
            tick()
    return np.concatenate(out), (text.numpy() if text is not None else None)


def _classifier_vectors(method, run_dir, cache, support_classes: list[str],
                        enc) -> tuple[list[str], np.ndarray, np.ndarray | None, str]:
    """``(classes, class vectors [C, D], class text or None, note)`` of a text / classifier method.

    A classifier (``predicts == "classifier"``) answers among the classes it trained on (its rows,
    in the store's class order, as ``eval`` scores it); a text method among the support set's classes.
    """
    import torch

    if method.predicts == "classifier":
        classes = _trained_classes(run_dir, cache)
        if classes is None:
            classes = support_classes
        note = (f"class set: the {len(classes)} classes run {run_dir} trained on; {method.name} classifies "
                "by its weights, support videos are not read")
    else:
        classes = support_classes
        note = (f"class set: the {len(classes)} classes of the support set; {method.name} classifies by their "
                "text, support videos are not read")
    ensure_cached(cache, method.needs, np.zeros(0, np.int64), command="index", classes=classes,
                  encoder=enc)  # the class text only: no video is read
    text = torch.from_numpy(cache.text(classes)) if method.needs.text else None  # [C, P, D']
    vectors = _class_vectors(method, list(classes), text)
    return classes, vectors, (text.numpy() if text is not None else None), note


def _class_vectors(method, classes: list[str], text) -> np.ndarray:
    """The method's class vectors ``[C, D]`` (float32) of ``classes`` bound, from their text ``[C, P, D']``."""
    import torch

    method.bind_classes(classes)
    with torch.no_grad():
        vectors = method.index_class_vectors(text)
    return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype=np.float32)


def _trained_classes(run_dir, cache) -> list[str] | None:
    """The classes a run trained on (its recorded split), in the store's class order; None when
    it records none. A class the store does not hold is refused."""
    from ..protocols.plan import SplitPlan

    try:
        trained = SplitPlan.load(run_dir, cache).class_names["train"]
    except (RunError, KeyError):
        return None
    held = set(cache.classes)
    absent = [c for c in trained if c not in held]
    if absent:
        raise InputError(f"run {run_dir} was trained on {len(trained)} classes, {len(absent)} of which store "
                         f"{cache.store.path} does not hold (e.g. {absent[0]!r}); index it with its own store")
    wanted = set(trained)
    return [c for c in cache.classes if c in wanted]


# --------------------------------------------------------------------------- build
CLASSIFIER_PREDICTS = ("text", "classifier")  # Method.predicts of methods scored by class vectors


def _resolve_metric(method, cfg_metric: str) -> tuple[str | None, str]:
    """(metric, scorer): scorer ``faiss`` (cosine = the score), ``metric`` (temporal re-rank),
    ``method`` (the method's own score) or ``classifier`` (the method's class vectors)."""
    from ..methods.base import Method
    from ..similarity import SIMILARITIES

    if method is not None and method.predicts in CLASSIFIER_PREDICTS:
        if type(method).index_class_vectors is Method.index_class_vectors:
            what = "class text" if method.predicts == "text" else "its trained head"
            raise InputError(f"cannot index a run of {method.name}: it classifies videos against {what}, which it "
                             "does not expose as class vectors, and support prototypes would answer as another "
                             "classifier; evaluate it with `clipcache eval --run`")
        return None, "classifier"
    metric = cfg_metric if method is None else method.prototype_metric()
    if metric is None:
        return None, "method"
    if metric not in SIMILARITIES:
        raise RunError(f"method {method.name} names prototype metric {metric!r}; known: {', '.join(SIMILARITIES)}")
    return metric, ("faiss" if SIMILARITIES[metric].pooled else "metric")


def build_index(store: str | os.PathLike, out: str | os.PathLike | None = None,
                run_dir: str | os.PathLike | None = None,
                cfg: IndexBuildConfig | None = None, progress: bool = False) -> IndexSummary:
    """Build the prototype index of ``store``'s support videos into ``out`` (default ``RUN/index``).

    With ``run_dir`` (or ``cfg.run_dir``): the run's method (its cache key must be the store's).
    Without: the ``proto`` baseline with ``cfg.metric`` on the cached embeddings. ``progress``: a
    bar over the support batches, the FAISS build and the encoder export.
    """
    import torch

    from ..cache import FeatureCache
    from ..progress import bar
    from ..runs import load_run, load_store_encoder, read_run, unfinished_run_note

    cfg = cfg or IndexBuildConfig()
    if run_dir is not None:
        cfg = replace(cfg, run_dir=run_dir)  # checked with the other settings
    run_dir = cfg.run_dir
    t0 = time.perf_counter()
    if out is None:
        if run_dir is None:
            raise InputError("--out is required without --run (with --run it defaults to RUN/index)")
        out = Path(run_dir) / "index"
    why = not_replaceable(out)  # never replace a run directory or any other folder with the index
    if why is not None:
        raise InputError(why)
    seconds: dict[str, float] = {}
    run_notes: list[str] = []
    with FeatureCache(store) as cache:
        key = cache.key
        if run_dir is not None:
            from ..runs import check_cache_key

            run_json = read_run(run_dir)
            check_cache_key(run_json, key, run_dir)  # before any slow loading
            note = unfinished_run_note(run_json, run_dir)
            if note is not None:
                run_notes.append(note)
        idx, where, notes = _support_pool(cache, cfg.split, cfg.video_root)
        pool = int(idx.size)
        idx = _take_shots(idx, cache.labels, cfg.shots)
        notes.insert(0, _support_note(where, pool, int(idx.size), cfg.shots))
        if idx.size == 0:
            raise InputError(f"no labelled support videos in store {cache.store.path}"
                             + (f" for --split {cfg.split}" if cfg.split else ""))
        classes = sorted({cache.classes[i] for i in cache.labels[idx]})
        pos = {c: i for i, c in enumerate(classes)}
        class_of = np.array([pos[cache.classes[i]] for i in cache.labels[idx]], dtype=np.int64)  # [S]
        t1 = time.perf_counter()
        enc = load_store_encoder(key, cfg.pretrained, device="cpu")
        seconds["load_encoder"] = time.perf_counter() - t1
        batches = 0 if run_dir is None else -(-idx.size // cfg.batch_size)
        with torch.no_grad(), bar(total=batches + 2, desc="index", unit="step", on=progress) as steps:
            method, run_meta = (None, None) if run_dir is None else load_run(
                run_dir, cache_key=key, backbone=enc, device="cpu", pretrained=cfg.pretrained)
            metric, scorer = _resolve_metric(method, cfg.baseline_metric)
            t1 = time.perf_counter()
            text = None
            arrays = {}
            if scorer == "classifier":  # the method's own class vectors; support videos are not read
                classes, pooled, text, how = _classifier_vectors(method, run_dir, cache, classes, enc)
                notes = [how]
                idx, class_of = idx[:0], class_of[:0]
                steps.update(batches)
                temporal = pooled[:, None]  # [C, 1, D]: the index's layout (query scores class_vectors)
                arrays["class_vectors"] = pooled  # [C, D], as the method made them (not normalised)
            else:
                if method is None:
                    feats = cache.emb(view=0)[idx].astype(np.float32)  # [S, T, D']
                else:
                    ensure_cached(cache, method.needs, idx, command="index", classes=classes, encoder=enc)
                    feats, text = _method_support(method, cache, idx, class_of, classes, enc, cfg.batch_size,
                                                  tick=lambda: steps.update(1))
                temporal, pooled = support_prototypes(feats, class_of, len(classes))
            seconds["support"] = time.perf_counter() - t1
            index = PrototypeIndex.build(pooled, cfg.index)
            steps.update(1)
            arrays["temporal"] = temporal
            if index.kind == "flat":  # the vectors again, for `query`'s numpy search (no FAISS import)
                arrays["pooled"] = pooled
            if scorer == "method":
                arrays.update(support=feats, support_labels=class_of)
                if text is not None:
                    arrays["text"] = text
            counts = np.bincount(class_of, minlength=len(classes))
            meta = {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "classes": classes,
                "shots": {c: int(n) for c, n in zip(classes, counts)},
                "support": {c: sorted(cache.video_keys[i] for i in idx[class_of == k]) for k, c in enumerate(classes)},
                "cache_key": key,
                "model_info": cache.model_info.to_dict(),
                "frames": int(key.get("frames", temporal.shape[1])) if scorer == "classifier" else int(temporal.shape[1]),
                "dim": int(temporal.shape[2]),
                "store": os.path.abspath(cache.store.path),
                "split": cfg.split,
                "run": None if run_dir is None else os.path.abspath(run_dir),
                "run_weights_sha256": None if run_meta is None else run_meta.get("checkpoints", {}).get("model.safetensors"),
                "run_scoring": RUN_SCORING,
                "method": {"name": "proto", "config": {"metric": cfg.baseline_metric}} if method is None
                else {"name": run_meta["method"]["name"], "config": run_meta["method"]["config"]},
                "metric": metric,
                "scorer": scorer,
                "shortlist": cfg.shortlist,
                "templates": _templates_of(cache, classes) if text is not None else None,
                "pretrained": cfg.pretrained,
            }
            t1 = time.perf_counter()
            frames = int(key.get("frames", temporal.shape[1]))

            def extra(tmp: Path) -> None:  # runs inside save, before index.json is written from meta
                meta["encoder"] = export_encoder(enc, method, frames, tmp, cfg.onnx)

            steps.set_description("index: export")
            index.save(out, arrays, meta, extra=extra)
            steps.update(1)
            seconds["export_and_save"] = time.perf_counter() - t1
    notes.extend(meta["encoder"]["notes"])
    notes[:0] = run_notes
    caveat = encoder_caveat(key)
    if caveat is not None:
        notes.insert(0, caveat)
    seconds["total"] = time.perf_counter() - t0
    return IndexSummary(path=str(out), classes=len(classes), support_videos=int(idx.size),
                        method=meta["method"]["name"], metric=metric, scorer=scorer, kind=index.kind,
                        notes=notes, seconds=seconds, store=str(store))


def _templates_of(cache, classes: list[str]) -> list[str] | None:
    """The prompt templates of the cached text ``cache.text`` returns (the largest set per class)."""
    best: list[str] | None = None
    for rec in cache.text_entries().values():
        if rec["name"] == classes[0] and (best is None or len(rec["templates"]) > len(best)):
            best = list(rec["templates"])
    return best


# --------------------------------------------------------------------------- a run's own index
RUN_INDEX = "index"  # RUN_DIR/index: the index `query --run RUN_DIR` uses
# how a run's index scores (meta "run_scoring"); 2: text and classifier methods by their own class
# vectors. A run index of an older scoring is rebuilt on its next query --run (it answered by
# support prototypes of frozen features, not as the run's method)
RUN_SCORING = 2


def ensure_run_index(run_dir: str | os.PathLike, pretrained: str | None = None,
                     progress: bool = False) -> tuple[Path, str, IndexSummary | None]:
    """``RUN_DIR/index``, built from the run's store on first use: ``(path, what happened, summary)``.

    What happened: ``"existing"`` (an index of this run's current weights is there), ``"built"``
    (there was none: built now from the store ``run.json`` names, every labelled video as support)
    or ``"rebuilt"`` (the index was of other weights, the run trained again since, or scored the
    older way: :data:`RUN_SCORING`).
    """
    import json

    from clipcache.stores import StoreError

    from ..runs import MODEL_FILE, read_run

    run = read_run(run_dir)
    out = Path(run_dir) / RUN_INDEX
    try:
        meta = json.loads((resolve_dir(out) / "index.json").read_text()).get("meta", {})
    except (StoreError, OSError, ValueError):
        meta = None
    weights = run.get("checkpoints", {}).get(MODEL_FILE)
    if meta is not None and meta.get("run_weights_sha256") in (None, weights) and \
            meta.get("run_scoring", 1) >= RUN_SCORING:
        return out, "existing", None
    if weights is None:
        raise RunError(f"run {run_dir} has no trained weights yet ({MODEL_FILE}); finish it with "
                       f"`clipcache train ... --out {run_dir} --resume`")
    store = run.get("store", {}).get("path")
    if not store or ("://" not in store and not os.path.exists(store)):
        raise InputNotFound(f"run {run_dir} has no index yet and its store {store} is not there; build the "
                            f"index with `clipcache index --run {run_dir} --store STORE`")
    summary = build_index(store, out, run_dir, IndexBuildConfig(pretrained=pretrained), progress=progress)
    return out, ("rebuilt" if meta is not None else "built"), summary


# --------------------------------------------------------------------------- load
@dataclass
class LoadedIndex:
    """An index directory read back: FAISS index, label map, prototypes and ``index.json`` meta."""

    path: Path
    index: PrototypeIndex
    classes: list[str]
    temporal: np.ndarray  # [C, T, D]
    meta: dict
    support: np.ndarray | None = None  # [S, T, D] (method-scored indexes)
    support_labels: np.ndarray | None = None  # [S]
    text: np.ndarray | None = None  # [C, P, D']
    class_vectors: np.ndarray | None = None  # [C, D] (classifier-scored indexes)

    @property
    def cache_key(self) -> dict:
        return self.meta["cache_key"]


def load_index(path: str | os.PathLike, gpu: bool | None = None, exact_numpy: bool = False) -> LoadedIndex:
    """Read an index directory written by :func:`build_index` / :func:`add_class`.

    ``exact_numpy``: search an exact (flat) index with numpy over its saved class vectors instead of
    loading FAISS (same scores; a faster start); approximate or older indexes load FAISS anyway.
    """
    from clipcache.stores import StoreNotFound

    try:
        root = resolve_dir(path)
    except StoreNotFound as err:
        raise InputNotFound(f"index {path} not found (build it with `clipcache index`)") from err
    light = (load_exact(root, "pooled", ["temporal", "support", "support_labels", "text", "class_vectors"])
             if exact_numpy else None)
    index, arrays, meta = light if light is not None else PrototypeIndex.load(root, gpu=gpu)
    if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
        raise InputError(f"{path} is not a clipcache prototype index of version {INDEX_VERSION}; rebuild it")
    classes = list(meta["classes"])
    if len(classes) != len(index) or arrays["temporal"].shape[0] != len(classes):
        raise InputError(f"index {path}: {len(index)} vectors, {arrays['temporal'].shape[0]} prototypes and "
                         f"{len(classes)} class names disagree; rebuild it")
    if meta.get("scorer") == "classifier" and arrays.get("class_vectors") is None:
        raise InputError(f"index {path}: a classifier index without its class vectors; rebuild it")
    return LoadedIndex(root, index, classes, arrays["temporal"], meta, arrays.get("support"),
                       arrays.get("support_labels"), arrays.get("text"), arrays.get("class_vectors"))


def check_run_matches(idx: LoadedIndex, run_dir: str | os.PathLike) -> dict:
    """Refuse a run whose cache key differs from the index's, or (for an index built from a run)
    whose selected weights are not the ones the index was built with; returns ``run.json``."""
    from ..cachekey import key_differences
    from ..runs import MODEL_FILE, read_run

    meta = read_run(run_dir)
    diff = key_differences(meta.get("store", {}).get("cache_key", {}), idx.cache_key)
    if diff:
        raise CacheKeyMismatch(f"run {run_dir} and index {idx.path} were built from clipcache.stores with different "
                               f"cache keys ({', '.join(diff)}); rebuild the index with this run")
    built_with = idx.meta.get("run_weights_sha256")
    if built_with is not None and meta.get("checkpoints", {}).get(MODEL_FILE) != built_with:
        raise RunError(f"index {idx.path} was built with other weights than run {run_dir}'s {MODEL_FILE}; "
                       "rebuild the index with this run")
    return meta


# --------------------------------------------------------------------------- add a class
def add_class(index_dir: str | os.PathLike, name: str, videos: list[str],
              run_dir: str | os.PathLike | None = None, pretrained: str | None = None,
              backend: str = "auto", progress: bool = False) -> IndexSummary:
    """Add class ``name`` to an index from a few videos, without retraining.

    The videos are decoded as at extraction (the index's sampler, view 0) and encoded with the
    index's encoder: the exported query encoder for the baseline (its support and query paths are
    the same), the run's method on the frozen encoder otherwise. A video that cannot be decoded
    stops the addition (nothing changes) with an error naming it.
    """
    t0 = time.perf_counter()
    name = name.strip()
    if not name:
        raise InputError("--class must be a non-empty name")
    if not videos:
        raise InputError("index add needs at least one video of the new class")
    with index_lock(index_dir):  # read, extend and publish as one step: no lost concurrent add
        return _add_class(index_dir, name, videos, run_dir, pretrained, backend, t0, progress)


def _add_class(index_dir, name: str, videos: list[str], run_dir, pretrained, backend, t0: float,
               progress: bool = False) -> IndexSummary:
    import shutil

    import torch

    idx = load_index(index_dir)
    if name in idx.classes:
        raise InputError(f"class {name!r} is already in index {index_dir}; choose another name")
    run = run_dir if run_dir is not None else idx.meta.get("run")
    if run_dir is not None and idx.meta.get("run") is None:
        raise InputError(f"index {index_dir} was built without a run (proto baseline); leave --run out")
    if run is not None:
        check_run_matches(idx, run)
    from ..progress import bar
    from ..video import file_key
    from .export import load_query_encoder
    from .pixels import decode_frames, preprocess_frames

    notes = []
    arrays = {}
    if idx.meta.get("scorer") == "classifier":  # the method's class vector of the new name
        pooled = _run_class_vector(idx, run, name, pretrained)  # [1, D]
        feats, temporal = None, pooled[:, None]
        arrays["class_vectors"] = np.concatenate([idx.class_vectors, pooled])
        notes.append(f"{idx.meta['method']['name']} classifies by class text: the class vector of {name!r} is its "
                     "text; the videos are not read")
    else:
        frames = [decode_frames(v, idx.meta, backend)  # each [T, H, W, 3]
                  for v in bar(videos, desc=f"index add {name}", unit="video", on=progress)]
        pixels = [preprocess_frames(f, idx.cache_key["preprocess"]) for f in frames]  # each [T, 3, S, S]
        text = None
        with torch.no_grad():
            if run is None:
                enc_fn = load_query_encoder(idx.path, idx.meta)
                feats = np.stack([enc_fn(p).numpy() for p in pixels])  # [K, T, D]
            else:
                feats, text = _run_support_from_pixels(idx, run, pixels, name, pretrained)
        temporal, pooled = support_prototypes(feats, np.zeros(len(feats), np.int64), 1)
    index = idx.index
    index.add(pooled)
    arrays["temporal"] = np.concatenate([idx.temporal, temporal])
    if index.kind == "flat":
        arrays["pooled"] = index.vectors()
    meta = dict(idx.meta)
    meta["classes"] = idx.classes + [name]
    meta["shots"] = {**meta.get("shots", {}), name: len(videos)}
    meta["support"] = {**meta.get("support", {}), name: sorted(file_key(v) for v in videos)}
    meta["added"] = {**meta.get("added", {}), name: [os.path.abspath(v) for v in videos]}
    if idx.support is not None and feats is not None:
        arrays["support"] = np.concatenate([idx.support, feats.astype(np.float32)])
        arrays["support_labels"] = np.concatenate(
            [idx.support_labels, np.full(len(feats), len(idx.classes), dtype=np.int64)])
        if idx.text is not None:
            arrays["text"] = np.concatenate([idx.text, text[None]])
    encoder = meta["encoder"]
    files = [f for f in (encoder.get("pt2"), encoder.get("graph"), encoder.get("weights"), encoder.get("onnx"),
                         *encoder.get("onnx_files", [])) if f]
    files = list(dict.fromkeys(files))

    def extra(tmp: Path) -> None:  # the encoder files are never changed in place: link them
        for f in files:
            try:
                os.link(idx.path / f, tmp / f)
            except OSError:
                shutil.copy2(idx.path / f, tmp / f)

    index.save(index_dir, arrays, meta, extra=extra)
    caveat = encoder_caveat(idx.cache_key)
    return IndexSummary(path=str(index_dir), classes=len(meta["classes"]), support_videos=len(videos),
                        method=meta["method"]["name"], metric=meta.get("metric"), scorer=meta["scorer"],
                        kind=index.kind, added=[name], notes=([caveat] if caveat else []) + notes,
                        seconds={"total": time.perf_counter() - t0})


def _run_class_vector(idx: LoadedIndex, run, name: str, pretrained: str | None) -> np.ndarray:
    """The class vector ``[1, D]`` of a new class ``name`` from a text method's run (its text
    through the frozen text tower, as the store's class text was made); a classifier is refused."""
    import torch

    from ..runs import load_run, load_store_encoder
    from ..templates import SINGLE, fill

    key = idx.cache_key
    enc = load_store_encoder(key, pretrained or idx.meta.get("pretrained"), device="cpu")
    method, _ = load_run(run, cache_key=key, backbone=enc, device="cpu", pretrained=pretrained)
    if method.predicts != "text":
        raise InputError(f"index add: run {run}'s {method.name} classifies among the {len(idx.classes)} classes "
                         "it trained on; a new class needs a run trained with it")
    text = None
    if method.needs.text:
        templates = idx.meta.get("templates") or list(SINGLE)
        with torch.no_grad():
            text = enc.encode_text(fill(tuple(templates), name)).float()[None]  # [1, P, D']
    return _class_vectors(method, [name], text)


def _run_support_from_pixels(idx: LoadedIndex, run, pixels: list, name: str,
                             pretrained: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Support features ``[K, T, D]`` of new videos through a run's method on the frozen encoder."""
    import torch

    from ..methods.base import VideoBatch
    from ..runs import load_run, load_store_encoder
    from ..templates import SINGLE, fill

    key = idx.cache_key
    enc = load_store_encoder(key, pretrained or idx.meta.get("pretrained"), device="cpu")
    method, _ = load_run(run, cache_key=key, backbone=enc, device="cpu", pretrained=pretrained)
    needs = method.needs
    text = None
    if needs.text:
        templates = idx.meta.get("templates") or list(SINGLE)
        text = enc.encode_text(fill(tuple(templates), name)).float()  # [P, D']
    method.bind_classes(idx.classes + [name])
    out = []
    for px in pixels:
        o = enc.encode_frames(px, tuple(needs.tokens_at))
        one = torch.zeros(1, dtype=torch.long)
        b = VideoBatch(index=one, labels=torch.full((1,), len(idx.classes)), emb=o.emb[None].float(),
                       cls=o.cls[None].float(), tokens={k: v[None].float() for k, v in o.tokens.items()},
                       pixels=px[None] if needs.pixels else None)
        out.append(method.support_features(b, text[None] if text is not None else None)[0].float().numpy())
    return np.stack(out), (text.numpy() if text is not None else None)


__all__ = [
    "IndexBuildConfig",
    "IndexSummary",
    "LoadedIndex",
    "add_class",
    "build_index",
    "check_run_matches",
    "ensure_run_index",
    "load_index",
    "support_prototypes",
]

"""``clipcache query``: classify video files against a prototype index, end to end.

Per video: decode and sample as at extraction (the index's sampler, view 0) -> preprocess exactly
as the encoder did (size, mean, std, interpolation from the cache key; no torchvision) -> the exported
query encoder (frozen encoder + the method's query path, ``pixels [T, 3, S, S] -> [T, D]``) ->
FAISS over the pooled class vectors -> re-ranking of the shortlist where the index's score is
temporal or the method's own -> top-k ``(label, score)``.

Nothing here imports open_clip: the encoder runs from the graph ``clipcache index`` exported.
Two engines: ``onnx`` (the default where the index has ``encoder.onnx``, onnxruntime is installed
and the index is scored by FAISS or a temporal metric) runs the whole query without importing
torch (:mod:`cachekit.index.query_onnx`: numpy preprocessing bit-equal to torch's, onnxruntime, numpy
scores), so start-up is the index and the ONNX session; ``torch`` runs ``encoder_graph.py`` +
weights (or ``encoder.pt2``), start-up ``import torch`` + the index. Only a method-scored index (e.g. TRX) or ``--explain`` of a run with an explain mask loads
the run's method, and a method that runs the encoder loads open_clip then.

A video that cannot be decoded gives a :class:`QueryResult` with ``error`` set (one line naming
it); the other videos are answered. Scores: higher is better; cosine for metric ``mean``, minus
the OTAM / Bi-MHM distance for those, the method's logit for method-scored indexes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ..caveat import encoder_caveat
from ..errors import ClipcacheError, DecodeError, InputError, InputNotFound, RunError
from ..video import Backend
from .build import LoadedIndex, check_run_matches, load_index
from .export import load_query_encoder
from .pixels import decode_frames, normalise_pixels, resize_crop

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class QueryConfig:
    top_k: int = 5
    shortlist: int | None = None  # classes FAISS passes to re-ranking; None: the index's setting
    backend: Backend = "auto"  # decoder, as for extract
    explain_dir: str | None = None  # write one PNG per video here
    engine: str = "auto"  # onnx (no torch), torch, or auto: onnx where the index allows it

    def __post_init__(self):
        if self.top_k < 1:
            raise InputError(f"--top-k must be >= 1, got {self.top_k}")
        if self.shortlist is not None and self.shortlist < 1:
            raise InputError(f"--shortlist must be >= 1, got {self.shortlist}")


@dataclass
class Hit:
    label: str
    score: float


@dataclass
class QueryResult:
    """The answer for one video: its top classes, or the one-line reason it has none."""

    video: str
    top: list[Hit] = field(default_factory=list)
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    explanation: str | None = None  # PNG path with --explain

    def to_json(self, caveat: str | None = None) -> dict:
        """``{"video": PATH, "top": [{"label": NAME, "score": FLOAT}, ...]}``, and ``"encoder":
        CAVEAT`` when the index's encoder has one (TOY or RANDOM weights: :mod:`cachekit.caveat`),
        so that a consumer of the JSON alone sees it."""
        out = {"video": self.video, "top": [{"label": h.label, "score": h.score} for h in self.top]}
        if self.explanation is not None:  # --explain: where the picture went
            out["explanation"] = self.explanation
        if caveat is not None:
            out["encoder"] = caveat
        return out


# --------------------------------------------------------------------------- ranking
def rank(idx: LoadedIndex, feats: torch.Tensor, top_k: int, shortlist: int, method=None) -> list[Hit]:
    """Top-``top_k`` classes of ``idx`` for one video's query features ``[T, D]``, best first.

    FAISS finds the classes whose pooled vectors are closest by cosine to the query's pooled
    vector. Index scorer ``faiss``: that cosine is the score. ``classifier``: every class scored by
    the method's own logit (:func:`~cachekit.index.query_onnx.classifier_rank`), no FAISS. ``metric``: the ``shortlist`` best
    are re-scored by the temporal metric on their temporal prototypes. ``method``: re-scored by
    ``method.score_supports`` on their kept shots. With ``shortlist >= len(idx.classes)`` the
    result is the brute-force ranking over every class. Ties go to the lower class id.
    """
    import torch
    import torch.nn.functional as F

    scorer = idx.meta["scorer"]
    q = feats.float()
    if scorer == "classifier":
        from .query_onnx import classifier_rank  # numpy, as the onnx engine ranks

        return [Hit(idx.classes[c], s) for c, s in classifier_rank(idx, q.numpy(), top_k)]
    pooled = F.normalize(q.mean(dim=0, keepdim=True), dim=-1).numpy()  # [1, D]
    k = top_k if scorer == "faiss" else max(top_k, shortlist)
    sims, ids = idx.index.search(pooled, k)
    keep = ids[0] >= 0
    cand, sims = ids[0][keep], sims[0][keep]
    if scorer == "faiss":
        return [Hit(idx.classes[c], float(s)) for c, s in zip(cand[:top_k], sims[:top_k])]
    cand = np.sort(cand)  # the re-ranking decides the order
    if scorer == "metric":
        from ..similarity import SIMILARITIES

        s = SIMILARITIES[idx.meta["metric"]](q[None], torch.from_numpy(idx.temporal[cand]))[0]  # [n]
    elif scorer == "method":
        if method is None:
            raise RunError("this index is scored by its run's method; give the method")
        sel = np.isin(idx.support_labels, cand)
        relabel = np.searchsorted(cand, idx.support_labels[sel])  # [S'] in 0..n-1
        text = torch.from_numpy(idx.text[cand]) if idx.text is not None else None  # [n, P, D']
        with torch.no_grad():
            s = method.score_supports(q[None], torch.from_numpy(idx.support[sel]),
                                      torch.from_numpy(relabel), len(cand), text)[0]
    else:
        raise InputError(f"index {idx.path}: unknown scorer {scorer!r}; rebuild it")
    s = s.float().numpy()
    order = np.lexsort((cand, -s))[:top_k]  # best first; ties by class id
    return [Hit(idx.classes[cand[i]], float(s[i])) for i in order]


# --------------------------------------------------------------------------- classifier
Engine = str  # "auto", "onnx" or "torch"


def _index_meta(index_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The index's directory and ``index.json`` meta, read without loading FAISS or arrays."""
    from clipcache.stores import StoreNotFound
    from .faiss_index import read_manifest, resolve_dir

    try:
        root = resolve_dir(index_dir)
    except StoreNotFound as err:
        raise InputNotFound(f"index {index_dir} not found (build it with `clipcache index`)") from err
    return root, read_manifest(root).get("meta", {})


def _run_note(run_dir) -> str | None:
    """The unfinished-run note (:func:`cachekit.runs.unfinished_run_note`) of ``run_dir``, if it
    is there to read; None for a finished run or none."""
    if run_dir is None:
        return None
    from ..runs import read_run, unfinished_run_note

    try:
        return unfinished_run_note(read_run(run_dir), run_dir)
    except (ClipcacheError, OSError, ValueError):  # a moved run: the index answers on its own
        return None


class Classifier:
    """An index and its encoder, loaded once; :meth:`classify` answers one video at a time.

    ``index_dir`` defaults to ``RUN/index``; ``run_dir`` defaults to the run the index remembers.
    A run whose cache key differs from the index's is refused (:class:`CacheKeyMismatch`).
    ``engine``: ``onnx`` answers without importing torch (see the module docstring), ``torch``
    through the exported torch graph, ``auto`` the first where the index allows it
    (``engine_note`` says why ``auto`` chose torch).
    """

    def __init__(self, index_dir: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None,
                 shortlist: int | None = None, gpu: bool | None = None, engine: Engine = "auto"):
        if engine not in ("auto", "onnx", "torch"):
            raise InputError(f"--engine must be auto, onnx or torch, not {engine!r}")
        if index_dir is None:
            if run_dir is None:
                raise InputError("query needs --index INDEX_DIR, or --run RUN_DIR with an index in RUN_DIR/index")
            index_dir = Path(run_dir) / "index"
        self.engine_note = None
        if engine != "torch":
            from .query_onnx import onnx_usable

            root, meta0 = _index_meta(index_dir)
            self.engine_note = onnx_usable(root, meta0)
            if self.engine_note is not None and engine == "onnx":
                raise InputError(f"--engine onnx: {self.engine_note}")
            engine = "torch" if self.engine_note is not None else "onnx"
        self.engine = engine
        self.idx: LoadedIndex = load_index(index_dir, gpu=gpu, exact_numpy=engine == "onnx")
        meta = self.idx.meta
        if run_dir is not None:
            check_run_matches(self.idx, run_dir)
            if meta.get("run") is None:
                raise InputError(f"index {index_dir} was built without a run (the proto baseline); "
                                 "leave --run out")
        self.run_dir = run_dir if run_dir is not None else meta.get("run")
        self.meta = meta
        self.run_note = _run_note(self.run_dir)  # the run did not finish: said once on stderr
        self.caveat = encoder_caveat(meta["cache_key"])  # random / toy weights: every answer says so
        self.pre = meta["cache_key"]["preprocess"]
        self.shortlist = shortlist or int(meta.get("shortlist", 64))
        if engine == "onnx":
            from .query_onnx import OnnxEncoder

            self.encode = OnnxEncoder(self.idx.path / meta["encoder"]["onnx"])
        else:
            self.encode = load_query_encoder(self.idx.path, meta)
        self._pooled = None  # [C, D] normalised class vectors (torch), for explain
        self._method = None
        self._encoder = None

    @property
    def classes(self) -> list[str]:
        return self.idx.classes

    # ------------------------------------------------------------------ method (loaded on demand)
    def method(self):
        """The run's method (slow path: only a method-scored index or an explain mask needs it)."""
        if self._method is None:
            if self.run_dir is None:
                raise RunError("this index needs its run's method, and it was built without a run")
            from ..runs import load_run

            self._method, _ = load_run(self.run_dir, cache_key=self.idx.cache_key, device="cpu",
                                       pretrained=self.meta.get("pretrained"))
            self._method.bind_classes(list(self.classes))
        return self._method

    # ------------------------------------------------------------------ ranking
    def scores(self, feats, top_k: int, shortlist: int | None = None) -> list[Hit]:
        """Top-``top_k`` classes for query features ``[T, D]`` (see :func:`rank`); numpy features
        on the onnx engine, a tensor on the torch engine."""
        if self.engine == "onnx":
            from . import query_onnx

            return [Hit(self.classes[c], s) for c, s in
                    query_onnx.rank(self.idx, feats, top_k, shortlist or self.shortlist)]
        method = self.method() if self.meta["scorer"] == "method" else None
        return rank(self.idx, feats, top_k, shortlist or self.shortlist, method)

    def preprocess(self, frames: np.ndarray):
        """uint8 frames ``[T, H, W, 3]`` -> ``(uint8 [T, 3, S, S], float32 pixels [T, 3, S, S])``,
        numpy arrays on the onnx engine, tensors on the torch engine (equal values)."""
        if self.engine == "onnx":
            from . import query_onnx

            small = query_onnx.resize_crop(frames, self.pre)
            return small, query_onnx.normalise_pixels(small, self.pre)
        small = resize_crop(frames, self.pre)
        return small, normalise_pixels(small, self.pre)

    # ------------------------------------------------------------------ one video
    def classify(self, path: str | os.PathLike, top_k: int = 5, backend: Backend = "auto",
                 shortlist: int | None = None, explain_dir: str | os.PathLike | None = None) -> QueryResult:
        res = QueryResult(video=str(path))
        t0 = time.perf_counter()
        try:
            frames = decode_frames(path, self.meta, backend)  # [T, H, W, 3]
        except DecodeError as err:
            res.error = str(err)
            return res
        t1 = time.perf_counter()
        small, pixels = self.preprocess(frames)  # [T, 3, S, S] uint8, float32
        t2 = time.perf_counter()
        feats = self.encode(pixels)  # [T, D]
        t3 = time.perf_counter()
        res.top = self.scores(feats, top_k, shortlist)
        t4 = time.perf_counter()
        res.seconds = {"decode": t1 - t0, "preprocess": t2 - t1, "encode": t3 - t2, "search": t4 - t3}
        if explain_dir is not None:
            import torch

            small, pixels, feats = (torch.as_tensor(a) for a in (small, pixels, feats))
            res.explanation = str(self.explain(path, small, pixels, feats, res, Path(explain_dir)))
        return res

    # ------------------------------------------------------------------ explain
    def _mask(self, pixels: torch.Tensor) -> np.ndarray | None:
        """The method's explain mask ``[T, S, S]`` (or None) for one video's pixels ``[T, 3, S, S]``."""
        if self.run_dir is None:
            return None
        import torch

        from ..methods.base import Method, VideoBatch

        method = self.method()
        if type(method).explain_mask is Method.explain_mask:  # the default hook: no mask, no encoder load
            return None
        needs = method.needs
        one = torch.zeros(1, dtype=torch.long)
        batch = VideoBatch(index=one, labels=one - 1, pixels=pixels[None] if needs.pixels else None)
        if needs.emb or needs.cls or needs.tokens_at:
            if self._encoder is None:
                from ..runs import load_store_encoder

                self._encoder = load_store_encoder(self.idx.cache_key, self.meta.get("pretrained"), device="cpu")
            with torch.no_grad():
                o = self._encoder.encode_frames(pixels, tuple(needs.tokens_at))
            batch.emb, batch.cls = o.emb[None].float(), o.cls[None].float()
            batch.tokens = {k: v[None].float() for k, v in o.tokens.items()}
        with torch.no_grad():
            mask = method.explain_mask(batch)
        if mask is None:
            return None
        mask = mask[0].float()
        t = pixels.shape[0]
        return (mask.expand(t, *mask.shape[-2:]) if mask.ndim == 2 else mask).numpy()

    def explain(self, path, small: torch.Tensor, pixels: torch.Tensor, feats: torch.Tensor,
                res: QueryResult, out_dir: Path) -> Path:
        """One PNG: the sampled frames (with the method's mask, if any) and per-frame cosine to the
        pooled vectors of the top classes."""
        import matplotlib
        import torch
        import torch.nn.functional as F

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        mask = self._mask(pixels)
        t = small.shape[0]
        top = res.top[:3]
        ids = [self.classes.index(h.label) for h in top]
        if self._pooled is None:
            self._pooled = torch.from_numpy(self.idx.index.vectors())
        per_frame = (F.normalize(feats.float(), dim=-1) @ self._pooled[ids].t()).numpy()  # [T, k]
        fig = plt.figure(figsize=(max(6.0, 1.6 * t), 4.6))
        grid = fig.add_gridspec(2, t, height_ratios=[1.0, 1.1])
        for i in range(t):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(small[i].permute(1, 2, 0).numpy())
            if mask is not None:
                ax.imshow(mask[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            ax.set_title(f"frame {i}", fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[1, :])
        for j, h in enumerate(top):
            ax.plot(range(t), per_frame[:, j], marker="o", label=f"{h.label} ({h.score:.3f})")
        ax.set_xlabel("sampled frame")
        ax.set_ylabel("cosine to class vector")
        ax.set_xticks(range(t))
        ax.legend(fontsize=8, loc="best")
        name = Path(path).name
        fig.suptitle(f"{name}: {top[0].label if top else '?'}" + (" (mask overlaid)" if mask is not None else ""),
                     fontsize=10)
        fig.tight_layout()
        out = out_dir / f"{Path(path).stem}.png"
        n = 1
        while out.exists():  # two videos of the same name from different folders
            out = out_dir / f"{Path(path).stem}-{n}.png"
            n += 1
        fig.savefig(out, dpi=80)
        plt.close(fig)
        return out


def query_videos(videos: Iterable[str | os.PathLike], index_dir: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None, cfg: QueryConfig | None = None,
                 classifier: Classifier | None = None) -> Iterator[QueryResult]:
    """Classify each video; yields one :class:`QueryResult` per video, in order.

    A video that cannot be read gets ``error`` set and the others are still answered. Errors of
    the index or run themselves (missing, mismatched cache keys) raise before any video.
    """
    cfg = cfg or QueryConfig()
    clf = classifier or Classifier(index_dir, run_dir, cfg.shortlist, engine=cfg.engine)
    for v in videos:
        try:
            yield clf.classify(v, cfg.top_k, cfg.backend, cfg.shortlist, cfg.explain_dir)
        except DecodeError as err:
            yield QueryResult(video=str(v), error=str(err))
        except ClipcacheError as err:  # e.g. a frame count the exported encoder was not built for
            yield QueryResult(video=str(v), error=f"{v}: {err}")


__all__ = [
    "Classifier",
    "Hit",
    "QueryConfig",
    "QueryResult",
    "query_videos",
    "rank",
]

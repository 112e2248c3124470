"""The parameter-free scores of query clips against class prototypes: one registry entry each.

An entry (:class:`Similarity`) holds everything callers used to decide by comparing its name:
whether it compares temporally pooled video vectors (FAISS then ranks exactly) or aligns frames
(FAISS shortlists by pooled vector, the entry re-ranks), whether frames are centred on their
clip's mean first, how class prototypes are built from shots, where it comes from (the papers or
clipcache), and its two forms: torch (:mod:`cachekit.metrics`, imported when a tensor first
arrives) and numpy (here: the torch-free query engine must not import torch).

A new metric is one entry in :data:`SIMILARITIES` plus, for a new ``kernel``, its two forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InputError

Kernel = Literal["cosine", "otam", "bimhm"]


@dataclass(frozen=True)
class Similarity:
    """One score ``(query [..., Q, T, D], prototypes [..., S, T, D]) -> [..., Q, S]``, higher = better."""

    name: str
    kernel: Kernel  # cosine of pooled vectors, or a frame-distance alignment (OTAM, Bi-MHM)
    origin: str  # where it is defined: a paper's section, or "clipcache's variant"
    summary: str  # one line for help texts
    centred: bool = False  # unit frames minus their clip's mean before matching
    lbda: float = 0.1  # OTAM's softmin temperature λ (the code lineage's, methods.md §6.1)

    @property
    def pooled(self) -> bool:
        """True when it compares temporally mean-pooled video vectors: blind to frame order, and
        a FAISS inner-product search on those vectors is the whole ranking."""
        return self.kernel == "cosine"

    @property
    def min_frames(self) -> int:
        """Frames a clip needs: one frame minus its clip's mean is zero."""
        return 2 if self.centred else 1

    @property
    def help(self) -> str:
        return f"{self.name}: {self.summary} ({self.origin})"

    def check_frames(self, n_query: int, n_support: int) -> None:
        if min(n_query, n_support) < self.min_frames:
            raise InputError(f"{self.name} needs at least {self.min_frames} frames per clip: one frame "
                             "minus its clip's mean is zero")

    # ---------------------------------------------------------------- torch forms
    def __call__(self, q, s):
        """Torch: q ``[..., Q, T, D]``, s ``[..., S, T, D]`` (raw or unit frames) -> ``[..., Q, S]``."""
        from . import metrics

        return metrics.similarity_scores(self, q, s)

    def on_unit_frames(self, qn, pn):
        """Torch, for callers that normalised a table of frames once: qn ``[..., M, T, D]``, pn
        ``[..., W, T, D]`` unit frames -> ``[..., M, W]``; the same numbers as calling the entry."""
        from . import metrics

        return metrics.unit_frame_scores(self, qn, pn)

    def prototypes(self, support):
        """Torch: class prototypes from the shots ``support [..., W, K, T, D]`` -> ``[..., W, T', D]``.

        Pooled (methods.md §6.4): each shot mean-pooled over T and L2-normalised, the shots
        averaged and re-normalised, kept as a one-frame sequence (T' = 1; pooling it again is a
        no-op). Temporal: the per-frame mean of the shots' raw frames (CLIP-FSAR's convention).
        """
        from . import metrics

        return metrics.shot_prototypes(self, support)

    # ---------------------------------------------------------------- numpy form
    def numpy(self, q: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Numpy: one query ``q [T, D]`` against prototypes ``s [C, T, D]`` -> ``[C]`` (float64
        dynamic programme for the alignments), equal to the torch form within 1e-4."""
        if self.pooled:
            return _normalise(s.mean(axis=1)) @ _normalise(q.mean(axis=0))
        self.check_frames(q.shape[-2], s.shape[-2])
        q, s = _frames(q, self.centred), _frames(s, self.centred)
        dists = 1.0 - np.einsum("id,cjd->cij", q, s)  # [C, Tq, Ts]
        if self.kernel == "otam":  # symmetric: both directions averaged
            return -0.5 * (otam_from_dists(dists, self.lbda) + otam_from_dists(dists.transpose(0, 2, 1), self.lbda))
        return -(dists.min(axis=2).sum(axis=1) + dists.min(axis=1).sum(axis=1))  # Bi-MHM


SIMILARITIES: dict[str, Similarity] = {
    "mean": Similarity("mean", "cosine", "methods.md §6.4",
                       "cosine of the temporally mean-pooled clips; blind to frame order"),
    "otam": Similarity("otam", "otam", "OTAM, methods.md §6.1",
                       "ordered temporal alignment of the frames (symmetric, λ = 0.1)"),
    "bimhm": Similarity("bimhm", "bimhm", "Bi-MHM of HyRSM, methods.md §6.2",
                        "bidirectional mean Hausdorff of the frames; order-blind"),
    "otam_centred": Similarity("otam_centred", "otam", "clipcache's variant, not in the papers",
                               "OTAM on clip-centred frames: aligns what changes along a clip, "
                               "for classes that share their look", centred=True),
}
"""The registry: every tool that takes a metric (``eval --metric``, ``index``, ``query``, proto's
and MA-FSAR's ``metric`` options) reads its choices and traits here."""


def get(name: str) -> Similarity:
    """The registry entry ``name``; an unknown name is a user error naming the choices."""
    try:
        return SIMILARITIES[name]
    except KeyError:
        raise InputError(f"unknown metric {name!r}; choose one of {', '.join(SIMILARITIES)}") from None


# --------------------------------------------------------------------------- numpy kernels
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def _frames(x: np.ndarray, centred: bool) -> np.ndarray:
    """Unit frames, or (centred) unit frames minus their clip's mean, re-normalised: what the
    frame distances of the torch form are computed on."""
    u = _normalise(x)
    return _normalise(u - u.mean(axis=-2, keepdims=True)) if centred else u


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def otam_from_dists(d: np.ndarray, lbda: float) -> np.ndarray:
    """OTAM cumulative distance of ``d [N, Lq, Ls]`` -> ``[N]`` in numpy: the recursion of
    :func:`cachekit.metrics.otam_reference` (padded soft-DTW, softmin temperature λ)."""
    n, n_q, n_s = d.shape
    pad = np.pad(d.astype(np.float64), ((0, 0), (0, 0), (1, 1)))
    width = n_s + 2

    def softmin(*a):
        return -lbda * _logsumexp(np.stack(a, axis=-1) / -lbda, axis=-1)

    cum = np.zeros((n_q, width, n))
    for m in range(1, width):
        cum[0, m] = pad[:, 0, m] + cum[0, m - 1]
    for row in range(1, n_q):
        cum[row, 1] = pad[:, row, 1] + softmin(cum[row - 1, 0], cum[row - 1, 1], cum[row, 0])
        for m in range(2, width - 1):
            cum[row, m] = pad[:, row, m] + softmin(cum[row - 1, m - 1], cum[row, m - 1])
        last = width - 1
        cum[row, last] = pad[:, row, last] + softmin(cum[row - 1, last - 1], cum[row - 1, last], cum[row, last - 1])
    return cum[n_q - 1, width - 1]

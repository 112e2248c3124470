"""The query path without torch: numpy preprocessing, the ONNX encoder through onnxruntime, numpy scores.

``clipcache query`` spends most of its start-up importing torch (about 2 s of 2.3 s). Where the
index holds ``encoder.onnx`` (written by ``clipcache index`` when the ``[export]`` extra is
installed), this module answers the query with numpy, PyAV and onnxruntime alone:

- resize and centre crop equal torch's antialiased ``uint8`` resize (the kernel the encoder's
  preprocessing and :func:`cachekit.index.pixels.resize_crop` use: separable, horizontal pass first, each
  pass with int16 fixed-point weights and a rounding shift), bit for bit;
- the ONNX graph is the same query encoder as ``encoder.pt2`` (``pixels [T, 3, S, S] -> [T, D]``);
- ranking: the pooled cosine search (numpy over the stored class vectors for an exact index, FAISS
  otherwise) and the temporal re-rankings by the numpy form of the metric's registry entry
  (:mod:`cachekit.similarity`, torch-free like this module).

A method-scored index (the run's own score) and ``--explain`` still need torch; the caller
(:class:`cachekit.index.query.Classifier`) uses the torch path for those. Nothing here imports torch.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..similarity import get as get_similarity


# --------------------------------------------------------------------------- resize (torch's uint8 kernel)
def _aa_filter(mode: str):
    if mode == "bilinear":
        def f(x: float) -> float:
            x = abs(x)
            return 1.0 - x if x < 1.0 else 0.0
        return f, 2

    a = -0.5  # Keys' cubic, as torch (and Pillow) use with antialiasing

    def g(x: float) -> float:
        x = abs(x)
        if x < 1.0:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2.0:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0
    return g, 4


@lru_cache(maxsize=64)
def _int16_weights(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(taps [out, K] input indices, weights [out, K] int32, precision)`` of one resize pass.

    The weights are the antialiased filter's, normalised per output pixel, then scaled by
    ``2**precision`` (the largest that keeps the biggest weight in int16) and rounded half away
    from zero; taps beyond an output pixel's support get weight 0.
    """
    f, interp = _aa_filter(mode)
    scale = in_size / out_size
    support = (interp * 0.5) * scale if scale >= 1.0 else interp * 0.5
    k_max = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = np.zeros((out_size, k_max), np.int64)
    weights = np.zeros((out_size, k_max), np.float64)
    wt_max = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xsize = min(max(min(int(center + support + 0.5), in_size) - xmin, 0), k_max)
        w = [f((j + xmin - center + 0.5) * invscale) for j in range(xsize)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
            wt_max = max([wt_max, *w])
        weights[i, :xsize] = w
        taps[i] = np.minimum(xmin + np.arange(k_max), in_size - 1)
    precision = 0
    while precision < 22 and int(0.5 + wt_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = weights * (1 << precision)
    w16 = np.where(v < 0, np.trunc(-0.5 + v), np.trunc(0.5 + v)).astype(np.int32)
    return taps, w16, precision


_BLOCK = 16  # output pixels per banded product: few zeros multiplied, few calls


@lru_cache(maxsize=64)
def _band_blocks(in_size: int, out_size: int, mode: str, keep: tuple[int, int]) -> tuple[list, int]:
    """The output pixels ``keep[0]:keep[1]`` of one resize pass as band matrices: ``([(o0, o1, lo,
    hi, weights [hi - lo, o1 - o0]), ...], precision)``, the int16 weights of :func:`_int16_weights`
    (float64, so that every product and sum is an exact integer whatever order the BLAS sums in)
    of output pixels ``o0:o1`` (numbered from ``keep[0]``), which read input pixels ``lo:hi``."""
    taps, w, prec = _int16_weights(in_size, out_size, mode)
    blocks = []
    for o0 in range(keep[0], keep[1], _BLOCK):
        o1 = min(o0 + _BLOCK, keep[1])
        t, wt = taps[o0:o1], w[o0:o1]  # [b, K]
        rows, ks = np.nonzero(wt)
        lo, hi = (int(t[rows, ks].min()), int(t[rows, ks].max()) + 1) if len(rows) else (0, 1)
        m = np.zeros((hi - lo, o1 - o0), np.float64)
        np.add.at(m, (t[rows, ks] - lo, rows), wt[rows, ks])
        blocks.append((o0 - keep[0], o1 - keep[0], lo, hi, m))
    return blocks, prec


def _resize_pass(x: np.ndarray, axis: int, out_size: int, mode: str, keep: tuple[int, int]) -> np.ndarray:
    """One separable pass of planar ``x`` [F, 3, H, W] (uint8 values held as float64) along ``axis``
    (-1: width, -2: height) to ``out_size`` pixels, of which only ``keep[0]:keep[1]`` are computed
    (the crop: each output pixel depends on its own taps alone), as torch's kernel: integer sums of
    int16 weights, a rounding shift, saturation to 0..255. The sums are exact float64 products
    over bands (:func:`_band_blocks`)."""
    blocks, prec = _band_blocks(x.shape[axis], out_size, mode, keep)
    out_size = keep[1] - keep[0]
    if axis == -1:
        rows = x.reshape(-1, x.shape[-1])  # [F·3·H, W]
        acc = np.empty((rows.shape[0], out_size))
        for o0, o1, lo, hi, m in blocks:
            acc[:, o0:o1] = rows[:, lo:hi] @ m
        acc = acc.reshape(*x.shape[:-1], out_size)
    else:
        planes = x.reshape(-1, *x.shape[-2:])  # [F·3, H, W]
        acc = np.empty((planes.shape[0], out_size, x.shape[-1]))
        for o0, o1, lo, hi, m in blocks:
            acc[:, o0:o1] = m.T @ planes[:, lo:hi]
        acc = acc.reshape(*x.shape[:-2], out_size, x.shape[-1])
    if prec:
        acc += 1 << (prec - 1)
        acc *= 1.0 / (1 << prec)  # a power of two: exact, then floor as the integer shift does
    return np.clip(np.floor(acc, out=acc), 0, 255, out=acc)


def resize_uint8(frames: np.ndarray, size: tuple[int, int], mode: str,
                 crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` -> planar ``[F, 3, h, w]`` with torch's antialiased ``uint8``
    interpolation (``F.interpolate(..., antialias=True)`` on a uint8 tensor): width first, then
    height. ``crop`` ``(top, left, height, width)``: only that window of the result, computed alone."""
    h, w = size
    top, left, ch, cw = crop or (0, 0, h, w)
    x = frames.transpose(0, 3, 1, 2)  # [F, 3, H, W]
    if x.shape[-1] == w:
        x = x[..., left:left + cw]
    else:
        x = _resize_pass(np.asarray(x, np.float64, order="C"), -1, w, mode, (left, left + cw))
    if x.shape[-2] == h:
        x = x[..., top:top + ch, :]
    else:
        x = _resize_pass(np.asarray(x, np.float64, order="C"), -2, h, mode, (top, top + ch))
    return np.ascontiguousarray(x.astype(np.uint8))


def resize_crop(frames: np.ndarray, pre: dict) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` -> uint8 ``[F, 3, S, S]``: :func:`cachekit.index.pixels.resize_crop` in numpy."""
    s = int(pre["size"])
    mode = pre["interpolation"]
    if mode not in ("bicubic", "bilinear"):
        raise InputError(f"interpolation {mode!r} is not supported")
    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    if pre.get("resize_mode", "shortest") == "squash":
        if (h, w) == (s, s):
            return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
        return resize_uint8(frames, (s, s), mode)
    if min(h, w) != s:
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(s * long / short)
        h, w = (new_long, s) if w <= h else (s, new_long)  # both >= s: resize only the crop's window
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return resize_uint8(frames, (h, w), mode, (top, left, s, s))
    x = frames.transpose(0, 3, 1, 2)  # [F, 3, H, W]
    if h < s or w < s:
        pad_w, pad_h = max(s - w, 0), max(s - h, 0)
        x = np.pad(x, ((0, 0), (0, 0), (pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)))
        h, w = x.shape[-2:]
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
    return np.ascontiguousarray(x[..., top:top + s, left:left + s])


def normalise_pixels(x: np.ndarray, pre: dict) -> np.ndarray:
    """uint8 ``[F, 3, S, S]`` -> float32 in [0, 1], normalised with the model's mean / std."""
    y = x.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(pre["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(1, 3, 1, 1)
    return (y - mean) / std


# --------------------------------------------------------------------------- encoder
class OnnxEncoder:
    """``pixels [T, 3, S, S] float32 -> features [T, D]`` through onnxruntime on the CPU."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings of the graph optimiser are not the user's business
        # no re-layout of every weight at load: session 384 -> 65 ms for ViT-B-32, each run within
        # noise of the prepacked one (measured side by side), and a query process runs it once
        opts.add_session_config_entry("session.disable_prepacking", "1")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.frames = self.input.shape[0] if isinstance(self.input.shape[0], int) else None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.frames is not None and pixels.shape[0] != self.frames:
            raise InputError(f"the exported encoder takes {self.frames} frames, got {pixels.shape[0]}")
        return self.session.run(None, {self.input.name: np.ascontiguousarray(pixels, np.float32)})[0]


def onnx_usable(root: Path, meta: dict) -> str | None:
    """Why this index cannot be queried without torch (None when it can)."""
    import importlib.util

    onnx = (meta.get("encoder") or {}).get("onnx")
    if not onnx or not (root / onnx).is_file():
        return "the index has no encoder.onnx (rebuild it with the [export] extra installed)"
    if meta.get("scorer") not in ("faiss", "metric", "classifier"):
        return "the index is scored by its run's method, which runs in torch"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'clipcache[export]')"
    return None


# --------------------------------------------------------------------------- scores
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def similarity(metric: str, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Score of one query ``q [T, D]`` against prototypes ``s [C, T, D]`` -> ``[C]``, higher = better:
    the numpy form of the registry entry (:meth:`cachekit.similarity.Similarity.numpy`)."""
    return get_similarity(metric).numpy(q, s)


def classifier_rank(idx, feats: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """``(class id, score)`` of the top ``top_k`` classes of a classifier-scored index, best first:
    the mean over T of the query features ``[T, D]`` dotted with the method's class vectors, i.e.
    its logits (:meth:`Method.index_class_vectors`). Every class is scored; ties to the lower id."""
    q = np.asarray(feats, np.float32).mean(axis=0)  # [D]
    s = (idx.class_vectors.astype(np.float32) @ q).astype(np.float32)  # [C]
    order = np.lexsort((np.arange(s.size), -s))[:top_k]
    return [(int(c), float(s[c])) for c in order]


def rank(idx, feats: np.ndarray, top_k: int, shortlist: int) -> list[tuple[int, float]]:
    """``(class id, score)`` of the top ``top_k`` classes, best first: :func:`cachekit.index.query.rank`
    for the ``faiss``, ``metric`` and ``classifier`` scorers, in numpy."""
    scorer = idx.meta["scorer"]
    q = np.asarray(feats, np.float32)
    if scorer == "classifier":
        return classifier_rank(idx, q, top_k)
    pooled = _normalise(q.mean(axis=0, keepdims=True))  # [1, D]
    k = top_k if scorer == "faiss" else max(top_k, shortlist)
    sims, ids = idx.index.search(pooled, k)
    keep = ids[0] >= 0
    cand, sims = ids[0][keep], sims[0][keep]
    if scorer == "faiss":
        return [(int(c), float(s)) for c, s in zip(cand[:top_k], sims[:top_k])]
    cand = np.sort(cand)
    s = similarity(idx.meta["metric"], q, idx.temporal[cand]).astype(np.float32)
    order = np.lexsort((cand, -s))[:top_k]
    return [(int(cand[i]), float(s[i])) for i in order]


__all__ = ["OnnxEncoder", "classifier_rank", "normalise_pixels", "onnx_usable", "rank", "resize_crop",
           "resize_uint8", "similarity"]

"""Features that stay resident while a method trains from the cache, and batched episode steps.

A head trained from the cache reads a few KiB per video per step; going back to the store, or
assembling episodes video by video in Python, costs more than its arithmetic. So the split's
features a method reads (``CacheNeeds``: embeddings, class tokens, tokens at blocks) are loaded
once into tensors on the training device, episodes come as index arrays
(:class:`~cachekit.episodes.EpisodeBatcher`), and a step is a handful of gathers plus the
method's forward and backward: no store I/O and no per-video Python inside a step.

When the features do not fit (estimated bytes against the device's free memory, or host memory
for the CPU) they stay in host memory and each step copies only its videos to the device; tokens
that do not fit in host memory either are read from the store per step. Both are logged and
noted in the run.

- :class:`ResidentFeatures`: the tensors and :meth:`~ResidentFeatures.gather`.
- :func:`episode_batch`: an :class:`~cachekit.episodes.EpisodeIndex` -> an
  :class:`~cachekit.methods.base.EpisodeBatch` on the device.
- :func:`episodic_step_loss`: forward and backward of one optimiser step's episodes.
- :func:`episodic_accuracy`: per-episode accuracy of a fixed episode set, in chunks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .episodes import EpisodeIndex
from .ids import unique_ids
from .methods.base import EpisodeBatch, Method, VideoBatch

log = logging.getLogger(__name__)

FREE_FRACTION = 0.5
"""Share of the free memory the resident features may take (the rest: the method's activations)."""


def free_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes: CUDA's free memory, or the host's available memory
    (``MemAvailable`` of /proc/meminfo, else available pages); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@dataclass
class ResidentFeatures:
    """The features of a set of videos, gathered by global video index: the one assembler of
    :class:`VideoBatch` es from cached features (:class:`~cachekit.batches.CacheData` gathers
    through one over all videos' host tables, tokens streamed).

    ``rows [V]`` maps a cache video index to its row (-1: not loaded). ``emb`` ``[R, views, T, D']``
    and ``cls`` ``[R, views, T, W]`` are as cached (float16 by default; float32 in a gathered
    batch), ``tokens`` ``{L: [R, views, T, N+1, W]}``
    float16 (as cached); on ``device`` when ``resident``, else in host memory and copied per
    gather. Tokens in ``streamed_tokens`` are read from the store per gather. ``text``
    ``[C, P, D']`` is always on the device.
    """

    device: torch.device
    rows: torch.Tensor  # [V] long, on the storage device
    labels: torch.Tensor  # [V] long global class ids, on the device
    views: int
    resident: bool
    emb: torch.Tensor | None = None
    cls: torch.Tensor | None = None
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    text: torch.Tensor | None = None
    cache: object = None  # the FeatureCache, only for streamed tokens
    videos: np.ndarray | None = None  # [R] the cache index of each row
    streamed_tokens: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, data, videos: np.ndarray, device: torch.device | str | None = None,
             budget: int | None = None, host_budget: int | None = None) -> "ResidentFeatures":
        """The features ``data.needs`` names for cache videos ``videos``, from ``data`` (a
        :class:`~cachekit.batches.CacheData`: its in-memory arrays, its cache for tokens).

        ``budget``: bytes the features may take on the device (default: :data:`FREE_FRACTION`
        of its free memory; unknown free memory counts as enough). ``host_budget``: bytes that
        tokens which do not fit the device may take in host memory (default: likewise).
        """
        device = torch.device(device if device is not None else data.device)
        needs, cache = data.needs, data.cache
        videos = unique_ids(np.asarray(videos, dtype=np.int64))  # [R]
        n_videos = int(data.labels.shape[0])
        views = int(data.views)
        per_video = 0  # bytes of one video's features, all views
        if data.emb is not None:
            per_video += data.emb[0].numel() * data.emb.element_size()
        if data.cls is not None:
            per_video += data.cls[0].numel() * data.cls.element_size()
        token_shapes = {}
        for blk in needs.tokens_at:
            probe = cache.tokens(blk, videos[:1], view=None)  # [1, views, T, N+1, W] fp16
            token_shapes[blk] = probe.shape[1:]
            per_video += probe[0].nbytes
        need = per_video * videos.size
        free = free_bytes(device)
        if budget is None and free is not None:
            budget = int(FREE_FRACTION * free)
        fits = budget is None or need <= budget
        where = "GPU" if device.type == "cuda" else "host"
        free_txt = "unknown" if free is None else _mib(free)
        notes = []
        if fits:
            log.info("resident features: %s for %d videos on %s (%s free)", _mib(need), videos.size, device, free_txt)
            store_dev = device
        else:
            msg = (f"the split's features ({_mib(need)} for {videos.size} videos) do not fit in {where} memory "
                   f"({free_txt} free, budget {_mib(budget)}): they stay in host memory and each step copies "
                   "its videos" + (" to the device" if device.type == "cuda" else ""))
            log.warning(msg)
            notes.append(msg)
            store_dev = torch.device("cpu")
        idx = torch.from_numpy(videos)
        src = data.rows[idx]  # [R] rows of data's tables
        if (src < 0).any():
            raise ValueError("ResidentFeatures.load: videos the data did not read")
        rows = torch.full((n_videos,), -1, dtype=torch.long)
        # in host memory (a CPU run, or features that do not fit the device): gather from data's
        # own tables through its rows, no second copy of the split's rows
        in_place = store_dev.type == "cpu" and not token_shapes  # tokens: loaded rows only
        rows[idx] = src if in_place else torch.arange(videos.size)
        out = cls(device=device, rows=rows.to(store_dev), labels=data.labels.to(device), views=views,
                  resident=fits, cache=cache, videos=videos, notes=notes)
        for name in ("emb", "cls"):  # [R, views, T, D'] / [R, views, T, W]
            table = getattr(data, name)
            if table is not None:
                setattr(out, name, table if in_place else table.index_select(0, src).to(store_dev))
        if host_budget is None:
            host_left = free_bytes(torch.device("cpu"))
            host_budget = None if host_left is None else int(FREE_FRACTION * host_left)
        streamed = []
        for blk, shape in token_shapes.items():
            size = int(np.prod(shape)) * 2 * videos.size
            if not fits and host_budget is not None and size > host_budget:
                streamed.append(blk)
                continue
            out.tokens[blk] = torch.from_numpy(cache.tokens(blk, videos, view=None)).to(store_dev)
        if streamed:
            msg = (f"tokens at block(s) {', '.join(map(str, streamed))} do not fit in host memory either: "
                   "each step reads its videos' tokens from the store")
            log.warning(msg)
            notes.append(msg)
            out.streamed_tokens = tuple(streamed)
        if data.text is not None:
            out.text = data.text.to(device)  # [C, P, D']
        return out

    def gather(self, idx: torch.Tensor, views: torch.Tensor | None = None) -> VideoBatch:
        """Videos ``idx`` (cache indices, any shape ``[...]``, on the storage device) -> a
        :class:`VideoBatch` with tensors ``[..., T, ...]`` on the device; ``views`` (same shape)
        picks each video's cached view (None: view 0)."""
        rows = self.rows[idx]  # [...]
        many = views is not None and self.views > 1

        def take(table: torch.Tensor) -> torch.Tensor:
            out = table[rows, views] if many else table[rows, 0]
            return out.to(self.device, non_blocking=True)

        b = VideoBatch(index=idx.to(self.device), labels=self.labels[idx.to(self.labels.device)].to(self.device))
        if self.emb is not None:
            b.emb = take(self.emb).float()  # [..., T, D'] (cached as float16 by default)
        if self.cls is not None:
            b.cls = take(self.cls).float()  # [..., T, W]
        for blk, table in self.tokens.items():
            b.tokens[blk] = take(table).float()  # [..., T, N+1, W]
        for blk in self.streamed_tokens:
            flat = idx.reshape(-1).cpu().numpy()
            tok = self.cache.tokens(blk, flat, view=None)  # [n, views, T, N+1, W] fp16
            v = views.reshape(-1).cpu().numpy() if many else np.zeros(flat.size, dtype=np.int64)
            b.tokens[blk] = torch.from_numpy(tok[np.arange(flat.size), v]).float().to(self.device).view(
                *idx.shape, *tok.shape[2:])
        return b


def episode_batch(feats: ResidentFeatures, index: EpisodeIndex) -> EpisodeBatch:
    """The tensors of E episodes: one host-to-device copy of the indices, then gathers."""
    e_n, w_n, k_n = index.support.shape
    q_n = index.query.shape[2]
    parts = [index.support.reshape(e_n, -1), index.query.reshape(e_n, -1), index.class_ids]
    has_views = index.support_views is not None and feats.views > 1
    if has_views:
        parts += [index.support_views, index.query_views]
    packed = torch.from_numpy(np.concatenate(parts, axis=1)).to(feats.rows.device, non_blocking=True)
    sizes = [w_n * k_n, w_n * q_n, w_n] + ([w_n * k_n, w_n * q_n] if has_views else [])
    cols = packed.split(sizes, dim=1)
    s_idx, q_idx, class_ids = cols[:3]
    s_views, q_views = (cols[3], cols[4]) if has_views else (None, None)
    class_ids = class_ids.to(feats.device)
    s_lab = torch.arange(w_n * k_n, device=feats.device) // max(k_n, 1)  # [W*K] class-major: 0..0, 1..1, ...
    q_lab = torch.arange(w_n * q_n, device=feats.device) // q_n  # [W*Q]
    return EpisodeBatch(
        support=feats.gather(s_idx, s_views),  # [E, W*K, ...]
        query=feats.gather(q_idx, q_views),  # [E, W*Q, ...]
        support_labels=s_lab.expand(e_n, -1),  # [E, W*K]
        query_labels=q_lab.expand(e_n, -1),  # [E, W*Q]
        class_ids=class_ids,  # [E, W]
        text=None if feats.text is None else feats.text[class_ids],  # [E, W, P, D']
    )


def episodic_step_loss(method: Method, feats: ResidentFeatures, index: EpisodeIndex) -> float:
    """Forward and backward the episodes of one optimiser step; returns their mean loss.

    A method with ``batched_training`` gets them in one :meth:`~Method.episode_batch_loss`; any
    other gets them one by one through ``episode_loss``, each loss divided by E and backpropagated
    at once (the memory of one episode), as the trainer always did.
    """
    batch = episode_batch(feats, index)
    if method.batched_training:
        loss, _ = method.episode_batch_loss(batch)
        loss.backward()
        return float(loss.detach())
    total = 0.0
    for e in range(len(batch)):
        loss, _ = method.episode_loss(batch.episode(e))
        (loss / len(batch)).backward()
        total += float(loss.detach())
    return total / len(batch)


def episodic_accuracy(method: Method, feats: ResidentFeatures, index: EpisodeIndex, chunk: int) -> np.ndarray:
    """Accuracy (fraction of correct queries) of each of E episodes ``[E]``, ``chunk`` episodes
    per forward (call under ``torch.no_grad()``)."""
    out = []
    with method.reusing_videos():  # the episodes draw the same videos again and again
        for a in range(0, len(index), max(1, chunk)):
            batch = episode_batch(feats, index[a:a + chunk])
            logits = method.episode_batch_logits(batch)  # [e, W*Q, W]
            out.append((logits.argmax(-1) == batch.query_labels).float().mean(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


__all__ = ["FREE_FRACTION", "ResidentFeatures", "episode_batch", "episodic_accuracy", "episodic_step_loss",
           "free_bytes"]

"""Support prototypes: the mean of a class's K shots, matched to queries with a fixed metric.

No trainable parameters; reads only the per-frame embeddings ``[T, D']``.

- ``metric="mean"`` (methods.md §6.4): video vector = mean over T of the un-normalised frames,
  L2-normalised; class prototype = mean of the K shots' video vectors, re-normalised; logit =
  ``logit_scale · cos``.
- ``metric="otam"`` / ``"bimhm"`` (§6.1, §6.2): class prototype = per-frame mean of the K shots'
  raw frame embeddings ``[T, D']`` (CLIP-FSAR's 5-shot convention, protocols.md §2.1); logit =
  minus the distance (OTAM symmetric, λ = 0.1; Bi-MHM with the code lineage's sums).
- ``metric="otam_centred"``: OTAM on :func:`cachekit.metrics.centred_frames` (each clip's unit frames minus
  their mean), blind to what a clip keeps throughout: for classes that differ only in the order
  of the same appearances (time-reversed pairs), where scene differences swamp raw OTAM.

With K = 1 every metric compares the query with the one shot. Episodic: ``episode_logits`` (one
episode) and ``episodes_logits`` (a chunk of episodes gathered from the embedding table at once;
frame cosines by one matmul per episode on frames normalised once per table, then
:func:`cachekit.metrics.otam_from_dists`). The metric is its registry entry
(:mod:`cachekit.similarity`), which also builds the prototypes. All-way: :meth:`Proto.fit_support` builds one prototype per
class from a K-shot training list; ``video_logits`` scores against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from ..encoder import ModelInfo
from ..errors import InputError
from ..similarity import SIMILARITIES
from .base import CacheNeeds, Episode, EpisodeBatch, Method, VideoBatch, require_choice, require_positive

DESCRIPTION = ("Support prototypes: mean of the K shots matched with mean-pool cosine, OTAM, Bi-MHM or OTAM on "
               "clip-centred frames (no training)")

# the registry's similarities (cachekit.similarity), as the Literal the -o parser reads its choices from
Metric = Literal[tuple(SIMILARITIES)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Config:
    metric: Metric = "mean"
    logit_scale: float = 100.0  # multiplies the cosine of a pooled metric ("mean"); accuracy does not depend on it

    def __post_init__(self) -> None:
        require_choice("proto", "metric", self.metric, get_args(Metric))
        require_positive("proto", logit_scale=self.logit_scale)


class Proto(Method):
    name = "proto"
    protocols = ("episodic", "allway")
    predicts = "support"
    batched_training = True  # episode_batch_loss/logits run E episodes in one forward
    batched_episodes = True

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True), "Support prototypes")
        self.cfg = cfg
        self.sim = SIMILARITIES[cfg.metric]  # the registry entry: its traits, prototypes and forms
        # set by fit_support; plain tensors, not buffers: fitted state is not part of a checkpoint
        self.prototypes = torch.zeros(0, max(frames, 1), info.embed_dim)  # [C, T, D'] (or [C, 1, D'] when pooled)
        self.class_ids = torch.zeros(0, dtype=torch.long)  # [C] global class ids, in fit order
        self._table_key: tuple | None = None  # normalised embedding table of the last episodes_logits call
        self._table_value: torch.Tensor | None = None
        self._workspace: dict[str, torch.Tensor] = {}  # gather buffers reused across episodes_logits calls

    # ------------------------------------------------------------------ scoring
    def _match(self, qn: torch.Tensor, pn: torch.Tensor) -> torch.Tensor:
        """A temporal metric on unit frames: qn ``[..., M, T, D']``, pn ``[..., W, T, D']`` -> logits
        ``[..., M, W]`` (minus the distance: OTAM symmetric, λ = 0.1), by the registry entry."""
        return self.sim.on_unit_frames(qn, pn)

    def scores(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query ``[..., M, T, D']``, support ``[..., W, K, T, D']`` (K shots of each of W classes)
        -> logits ``[..., M, W]``, higher = better."""
        if support.shape[-3] == 0:
            raise InputError("support prototypes need at least one shot per class (shots >= 1)")
        query, support = query.float(), support.float()
        proto = self.sim.prototypes(support)  # [..., W, T, D'], or [..., W, 1, D'] unit vectors when pooled
        if self.sim.pooled:
            qv = F.normalize(query.mean(dim=-2), dim=-1)  # [..., M, D']
            return self.cfg.logit_scale * qv @ proto[..., 0, :].transpose(-1, -2)  # [..., M, W]
        return self._match(F.normalize(query, dim=-1), F.normalize(proto, dim=-1))

    @property
    def metric_name(self) -> str:
        return self.cfg.metric

    def prototype_metric(self) -> str:
        """The index ranks with this baseline's own metric."""
        return self.cfg.metric

    def episode_logits(self, ep: Episode) -> torch.Tensor:
        """``[W*Q, W]`` for one episode (supports class-major, as :class:`Episode` says)."""
        ways = ep.ways
        s = ep.support.emb  # [W*K, T, D']
        if s is None or s.shape[0] == 0:
            raise InputError("support prototypes need at least one shot per class (shots >= 1)")
        counts = torch.bincount(ep.support_labels, minlength=ways)
        if not bool((counts == counts[0]).all()):
            raise InputError(f"support prototypes need the same number of shots per class, got {counts.tolist()}")
        order = torch.argsort(ep.support_labels, stable=True)
        support = s[order].reshape(ways, int(counts[0]), *s.shape[1:])  # [W, K, T, D']
        return self.scores(ep.query.emb, support)

    def episode_batch_logits(self, batch: EpisodeBatch) -> torch.Tensor:
        """``[E, W*Q, W]`` for E class-major episodes of one shape (the same numbers as
        :meth:`episode_logits`, episode by episode)."""
        s = batch.support.emb  # [E, W*K, T, D']
        if s is None or s.shape[1] == 0:
            raise InputError("support prototypes need at least one shot per class (shots >= 1)")
        support = s.unflatten(1, (batch.ways, s.shape[1] // batch.ways))  # [E, W, K, T, D']
        return self.scores(batch.query.emb, support)

    def episode_batch_loss(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.episode_batch_logits(batch)  # [E, W*Q, W]
        return F.cross_entropy(logits.flatten(0, 1), batch.query_labels.flatten()), logits

    def episodes_logits(self, emb: torch.Tensor, text: torch.Tensor | None, class_ids: torch.Tensor,
                        support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Many episodes at once, gathered from the whole embedding table (same numbers as
        :meth:`episode_logits`, episode by episode).

        emb ``[V, T, D']`` all videos; support ``[E, W, K]`` and query ``[E, W, Q]`` video indices
        into it (class-major); ``text`` and ``class_ids`` ``[E, W]`` are not read
        -> ``[E, W*Q, W]``. The table is normalised once (pooled video vectors for a pooled metric,
        frames otherwise), so each episode only gathers unit vectors.
        """
        e_n, ways, shots = support.shape
        if shots == 0:
            raise InputError("support prototypes need at least one shot per class (shots >= 1)")
        q_idx = query.reshape(e_n, -1)  # [E, W*Q]
        if self.sim.pooled:
            vec = self._table(emb, "vectors")  # [V, D'] shot/query video vectors
            proto = F.normalize(vec[support].mean(dim=-2), dim=-1)  # [E, W, D']
            return self.cfg.logit_scale * vec[q_idx] @ proto.transpose(-1, -2)  # [E, W*Q, W]
        unit = self._table(emb, "frames")  # [V, T, D'] unit frames
        frame = unit.shape[1:]  # (T, D')
        qn = self._gather(unit, q_idx, "query")  # [E, W*Q, T, D']
        if shots == 1:
            pn = self._gather(unit, support[:, :, 0], "support")  # [E, W, T, D']: the prototype is the shot
        else:
            raw = self._gather(emb.float(), support.reshape(e_n, -1), "support")  # [E, W*K, T, D']
            pn = F.normalize(raw.view(e_n, ways, shots, *frame).mean(dim=2), dim=-1)  # [E, W, T, D'] per-frame mean
        return self._match(qn, pn)

    def _gather(self, table: torch.Tensor, idx: torch.Tensor, slot: str) -> torch.Tensor:
        """``table[idx]`` (idx ``[E, N]`` -> ``[E, N, ...]``) written into a buffer kept for the
        next chunk: chunk after chunk reuses the same memory instead of having fresh pages mapped
        in (the gathers are the largest tensors of a chunk). Not for concurrent calls."""
        n = idx.numel()
        buf = self._workspace.get(slot)
        if buf is None or buf.shape[0] < n or buf.shape[1:] != table.shape[1:] or buf.dtype != table.dtype \
                or buf.device != table.device:
            buf = self._workspace[slot] = table.new_empty((n, *table.shape[1:]))
        out = torch.index_select(table, 0, idx.reshape(-1), out=buf[:n])
        return out.view(*idx.shape, *table.shape[1:])

    def _table(self, emb: torch.Tensor, kind: str) -> torch.Tensor:
        """The embedding table normalised once: ``"vectors"`` -> unit pooled videos ``[V, D']``,
        ``"frames"`` -> unit frames ``[V, T, D']``. Kept for the next call on the same,
        unmodified table (the evaluator scores chunk after chunk of episodes from one table)."""
        try:
            key = (kind, emb.data_ptr(), tuple(emb.shape), tuple(emb.stride()), emb.dtype, emb.device, emb._version)
        except RuntimeError:  # an inference-mode tensor has no version counter: do not keep it
            key = None
        if key is not None and self._table_key == key:
            return self._table_value
        e = emb.float()
        value = F.normalize(e.mean(dim=-2), dim=-1) if kind == "vectors" else F.normalize(e, dim=-1)
        if key is not None:
            self._table_key, self._table_value = key, value
        return value

    # ------------------------------------------------------------------ all-way
    def fit_support(self, emb: torch.Tensor, labels: torch.Tensor, class_ids: list[int] | np.ndarray) -> None:
        """Set one prototype per class from training videos.

        emb ``[N, T, D']`` (the K-shot list's videos), labels ``[N]`` global class ids; the
        prototypes are kept in the order of ``class_ids`` ``[C]``, which ``video_logits`` then
        scores against. Every class needs at least one video; classes may have different counts.
        """
        class_ids = torch.as_tensor(np.asarray(class_ids), dtype=torch.long)
        labels = labels.long()
        missing = [int(c) for c in class_ids if not bool((labels == c).any())]
        if missing:
            raise InputError(f"support prototypes: no training video for {len(missing)} class id(s) {missing[:10]}")
        emb = emb.float()
        # classes may have different shot counts: one class at a time, [1, K_c, T, D'] -> [T', D']
        protos = torch.stack([self.sim.prototypes(emb[labels == c][None])[0] for c in class_ids.tolist()])
        self.prototypes = protos  # [C, T, D'] (pooled: [C, 1, D'] unit vectors), on the device of emb
        self.class_ids = class_ids.to(protos.device)

    def video_logits(self, batch: VideoBatch, text: torch.Tensor) -> torch.Tensor:
        """batch.emb ``[B, T, D']`` against the fitted prototypes -> ``[B, C]`` (``text`` only
        fixes C: it must list the classes given to :meth:`fit_support`, in the same order)."""
        if self.prototypes.shape[0] == 0:
            raise InputError("support prototypes: call fit_support() with a K-shot training list before video_logits")
        if text.shape[0] != self.prototypes.shape[0]:
            raise InputError(
                f"support prototypes were fitted on {self.prototypes.shape[0]} classes but "
                f"{text.shape[0]} were asked for"
            )
        q = batch.emb.float()
        protos = self.prototypes.to(q.device)
        if self.sim.pooled:
            qv = F.normalize(q.mean(dim=-2), dim=-1)  # [B, D']
            return self.cfg.logit_scale * qv @ protos[:, 0].t()  # [B, C]
        return self._match(F.normalize(q, dim=-1), F.normalize(protos, dim=-1))  # [B, C]


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> Proto:
    return Proto(cfg, info, frames)

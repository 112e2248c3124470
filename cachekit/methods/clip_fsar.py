"""CLIP-FSAR head (Wang et al., IJCV 2023) on frozen cached features (methods.md §5).

The paper fine-tunes the whole visual backbone; this is the frozen-feature variant: cached frame
embeddings ``F`` [T, D'] and class text ``F_T`` go through CLIP-FSAR's head only.

- Text: the mean of the class's cached template embeddings (CLIP-FSAR encodes one template,
  "a photo of {}"; the store decides which templates are cached).
- Temporal transformer, one layer shared by queries and supports: one pre-LayerNorm shared by
  q, k and v, 8 heads, bias-free q/k/v, output projection with bias, attention dropout 0.2,
  residual onto q, FFN D'→2048→D' with GELU and dropout 0.05, no LayerNorm before the FFN, no
  positional encoding. Queries: self-attention over their T frames. Supports: the class text
  appended as token T+1, self-attention over T+1 tokens, the first T kept.
- Shots: per-frame mean per class after the transformer, or before it (``merge_before``, the
  5-shot configs: frames and text averaged per class first).
- Distance: frame distance 1 − cos, bidirectional OTAM with λ = 0.5 summed over both directions;
  logits = −d; loss = CE(logits, query labels) + ``class_weight`` · CE(class-text logits).
- Class-text loss (training only): cosine (ε = 0.01 added to the norm product) of each video's
  frame mean with the class texts × a learnable scale initialised to 1. CLIP-FSAR applies it to
  backbone features over all training classes; here the backbone is frozen, so by default
  (``class_loss_on="head"``) it acts on the transformer's outputs, and over the episode's W
  classes (an episode carries only its own classes' text) [clipcache]. ``"encoder"`` keeps the
  original placement, where only the scale can learn from it.
- Optional test-time fusion (``combine``): ``p = p_text^0.9 · softmax((8 − d)/8)^0.1`` with
  ``p_text = softmax(100 · cos(mean query frame, class text))``.

Trainable parameters [inferred]: transformer ``3·D'² + (D'² + D') + 2·D' + (2·D'·2048 + 2048 + D')``
= 786,432 + 262,656 + 1,024 + 2,099,712 = 3,149,824 at D' = 512, plus the class-text scale: 3,149,825.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoder import ModelInfo
from ..errors import InputError
from ..layers.attention import CLIP_LOGIT_SCALE, PrototypeAttention
from ..metrics import check_support_labels, class_prototypes, frame_cosine, otam_from_dists
from .base import CacheNeeds, Episode, EpisodeBatch, Method, require_positive

DESCRIPTION = "CLIP-FSAR head: temporal transformer with text-token prototypes, bidirectional OTAM, class-text CE"
DISPLAY_NAME = "CLIP-FSAR head (frozen encoder)"


@dataclass(frozen=True)
class Config:
    """CLIP-FSAR head options (defaults: the public SSv2 configs).

    class_weight: weight of the class-text CE (``USE_CLASSIFICATION_VALUE``: 3.0 SSv2, 1.5
        Kinetics-100 and UCF101, 1.2 HMDB51).
    class_loss_on: "head" (transformer outputs, the default here) or "encoder" (frozen features,
        as in the paper where the encoder trains).
    """

    heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.05
    attn_dropout: float = 0.2
    otam_lambda: float = 0.5
    class_weight: float = 3.0
    class_loss_on: Literal["head", "encoder"] = "head"
    merge_before: bool = False
    combine: bool = False

    def __post_init__(self):
        if self.class_loss_on not in ("head", "encoder"):
            raise InputError(f"clip_fsar class_loss_on must be head or encoder, not {self.class_loss_on!r}")
        require_positive("clip_fsar", otam_lambda=self.otam_lambda)
        if self.heads < 1 or self.ffn_dim < 1:
            raise InputError(f"clip_fsar heads and ffn_dim must be >= 1, got {self.heads}, {self.ffn_dim}")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.attn_dropout < 1.0):
            raise InputError(f"clip_fsar dropout and attn_dropout must lie in [0, 1), got {self.dropout}, "
                             f"{self.attn_dropout}")
        if self.class_weight < 0:
            raise InputError(f"clip_fsar class_weight must be >= 0, got {self.class_weight}")


def _cos_eps(a: Tensor, b: Tensor, eps: float = 0.01) -> Tensor:
    """``a·b / (|a||b| + eps)``: a ``[..., B, D]``, b ``[..., W, D]`` -> ``[..., B, W]`` (CLIP-FSAR's cos_sim)."""
    return (a @ b.transpose(-1, -2)) / (a.norm(dim=-1)[..., :, None] * b.norm(dim=-1)[..., None, :] + eps)


class CLIPFSARHead(Method):
    """CLIP-FSAR's few-shot head on cached frame and class-text embeddings.

    Every path runs on a batch of E episodes (one episode is E = 1): the videos of all episodes
    go through the transformer together and OTAM runs on all (query, prototype) pairs and both
    directions in one call.
    """

    name = "clip_fsar"
    protocols = ("episodic",)
    batched_training = True

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True, text=True), DISPLAY_NAME)
        self.cfg = cfg
        self.transformer = PrototypeAttention(info.embed_dim, cfg.heads, cfg.ffn_dim, qkv_bias=False,
                                              ffn_norm=False, dropout=cfg.dropout,
                                              attn_dropout=cfg.attn_dropout)
        self.class_scale = nn.Parameter(torch.tensor(1.0))

    def _forward(self, batch: EpisodeBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> distances ``[E, Q, W]``, class text ``[E, W, D]``, transformed supports
        ``[E, S, T, D]`` (``[E, W, T, D]`` with ``merge_before``) and queries ``[E, Q, T, D]``."""
        if batch.text is None:
            raise InputError("clip_fsar needs class text embeddings in the store (re-run extract)")
        text = batch.text.mean(dim=2)  # [E, W, D]
        ways = batch.ways
        s_emb, q_emb = batch.support.emb, batch.query.emb  # [E, S, T, D], [E, Q, T, D]
        if self.cfg.merge_before:
            feats = class_prototypes(s_emb, batch.support_labels, ways)  # [E, W, T, D]
            own = text  # [E, W, D]
        else:
            feats = s_emb  # [E, S, T, D]
            own = text.gather(1, batch.support_labels[..., None].expand(-1, -1, text.shape[-1]))  # [E, S, D]
        # supports: self-attention over T frames + the class text token (first T kept); queries:
        # over their T frames; both in one call of the shared transformer
        kv = torch.cat([feats, own[:, :, None]], dim=2).flatten(0, 1)  # [E*S, T+1, D]
        support, query = self.transformer.joint(feats.flatten(0, 1), kv, q_emb.flatten(0, 1))
        support, query = support.view_as(feats), query.view_as(q_emb)  # [E, S|W, T, D], [E, Q, T, D]
        protos = support if self.cfg.merge_before else class_prototypes(support, batch.support_labels, ways)
        dists = 1.0 - frame_cosine(query, protos)  # [E, Q, W, T, T]
        both = torch.stack([dists, dists.transpose(-1, -2)])  # [2, E, Q, W, T, T]
        d = otam_from_dists(both, self.cfg.otam_lambda).sum(dim=0)  # [E, Q, W]
        return d, text, support, query

    def _one(self, ep: Episode) -> EpisodeBatch:
        if ep.support.emb is not None and ep.support_labels.numel():
            check_support_labels(ep.support_labels, ep.ways)
        return EpisodeBatch.of(ep)

    def episode_batch_logits(self, batch: EpisodeBatch) -> Tensor:  # [E, W*Q, W]
        d, text, _, _ = self._forward(batch)
        if not self.cfg.combine:
            return -d
        q = F.normalize(batch.query.emb.mean(dim=2), dim=-1)  # [E, Q, D]
        p_text = F.log_softmax(CLIP_LOGIT_SCALE * q @ F.normalize(text, dim=-1).transpose(-1, -2), dim=-1)
        return 0.9 * p_text + 0.1 * F.log_softmax((8.0 - d) / 8.0, dim=-1)

    def episode_logits(self, ep: Episode) -> Tensor:  # [W*Q, W]
        return self.episode_batch_logits(self._one(ep))[0]

    def prototype_metric(self) -> None:
        """Scores are the head's own (transformer, text token, OTAM): see ``score_supports``."""
        return None

    def episode_batch_loss(self, batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
        """(loss averaged over the E episodes, logits ``[E, W*Q, W]``)."""
        d, text, support, query = self._forward(batch)
        logits = -d  # [E, Q, W]
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_labels.flatten())
        if self.cfg.class_weight > 0:
            if self.cfg.class_loss_on == "head":
                feats = torch.cat([support, query], dim=1).mean(dim=2)  # [E, S+Q, D] (or [E, W+Q] merged)
                s_labels = (torch.arange(batch.ways, device=d.device).expand(len(batch), -1)
                            if self.cfg.merge_before else batch.support_labels)
            else:
                feats = torch.cat([batch.support.emb, batch.query.emb], dim=1).mean(dim=2)
                s_labels = batch.support_labels
            labels = torch.cat([s_labels, batch.query_labels], dim=1)  # [E, S+Q]
            class_logits = self.class_scale * _cos_eps(feats, text)  # [E, S+Q, W]
            loss = loss + self.cfg.class_weight * F.cross_entropy(class_logits.flatten(0, 1), labels.flatten())
        return loss, logits

    def episode_loss(self, ep: Episode) -> tuple[Tensor, Tensor]:
        loss, logits = self.episode_batch_loss(self._one(ep))
        return loss, logits[0]


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> Method:
    return CLIPFSARHead(cfg, info, frames)

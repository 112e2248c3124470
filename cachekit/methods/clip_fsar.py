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
from ..metrics import class_prototypes, frame_cosine, otam_from_dists
from .base import CacheNeeds, Episode, Method
from .ma_fsar import CLIP_LOGIT_SCALE, PrototypeAttention

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
        if self.otam_lambda <= 0:
            raise InputError(f"clip_fsar otam_lambda must be > 0, got {self.otam_lambda}")
        if self.class_weight < 0:
            raise InputError(f"clip_fsar class_weight must be >= 0, got {self.class_weight}")


def _cos_eps(a: Tensor, b: Tensor, eps: float = 0.01) -> Tensor:
    """``a·b / (|a||b| + eps)``: a ``[B, D]``, b ``[W, D]`` -> ``[B, W]`` (CLIP-FSAR's cos_sim)."""
    return (a @ b.t()) / (a.norm(dim=-1)[:, None] * b.norm(dim=-1)[None, :] + eps)


class CLIPFSARHead(Method):
    """CLIP-FSAR's few-shot head on cached frame and class-text embeddings."""

    name = "clip_fsar"
    protocols = ("episodic",)

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True, text=True), DISPLAY_NAME)
        self.cfg = cfg
        self.transformer = PrototypeAttention(info.embed_dim, cfg.heads, cfg.ffn_dim, qkv_bias=False,
                                              ffn_norm=False, dropout=cfg.dropout,
                                              attn_dropout=cfg.attn_dropout)
        self.class_scale = nn.Parameter(torch.tensor(1.0))

    def _support(self, feats: Tensor, text: Tensor) -> Tensor:
        """feats ``[S, T, D]``, own-class text ``[S, D]`` -> ``[S, T, D]`` (text as token T+1)."""
        x = torch.cat([feats, text[:, None]], dim=1)  # [S, T+1, D]
        return self.transformer(feats, x)  # the first T outputs of self-attention over T+1 tokens

    def _forward(self, ep: Episode) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> distances ``[Q, W]``, class text ``[W, D]``, transformed supports ``[S, T, D]`` and queries."""
        if ep.text is None:
            raise InputError("clip_fsar needs class text embeddings in the store (re-run extract)")
        text = ep.text.mean(dim=1)  # [W, D]
        ways = ep.ways
        query = self.transformer(ep.query.emb, ep.query.emb)  # [Q, T, D]
        if self.cfg.merge_before:
            merged = class_prototypes(ep.support.emb, ep.support_labels, ways)  # [W, T, D]
            support = protos = self._support(merged, text)  # [W, T, D]
        else:
            support = self._support(ep.support.emb, text[ep.support_labels])  # [S, T, D]
            protos = class_prototypes(support, ep.support_labels, ways)  # [W, T, D]
        dists = 1.0 - frame_cosine(query, protos)  # [Q, W, T, T]
        both = torch.stack([dists, dists.transpose(-1, -2)])  # [2, Q, W, T, T]
        d = otam_from_dists(both, self.cfg.otam_lambda).sum(dim=0)  # [Q, W]
        return d, text, support, query

    def episode_logits(self, ep: Episode) -> Tensor:  # [W*Q, W]
        d, text, _, _ = self._forward(ep)
        if not self.cfg.combine:
            return -d
        q = F.normalize(ep.query.emb.mean(dim=1), dim=-1)  # [Q, D]
        p_text = F.log_softmax(CLIP_LOGIT_SCALE * q @ F.normalize(text, dim=-1).t(), dim=-1)
        return 0.9 * p_text + 0.1 * F.log_softmax((8.0 - d) / 8.0, dim=-1)

    def prototype_metric(self) -> None:
        """Scores are the head's own (transformer, text token, OTAM): see ``score_supports``."""
        return None

    def episode_loss(self, ep: Episode) -> tuple[Tensor, Tensor]:
        d, text, support, query = self._forward(ep)
        logits = -d
        loss = F.cross_entropy(logits, ep.query_labels)
        if self.cfg.class_weight > 0:
            if self.cfg.class_loss_on == "head":
                feats = torch.cat([support, query]).mean(dim=1)  # [S+Q, D] (or [W+Q] merged)
                s_labels = torch.arange(ep.ways, device=d.device) if self.cfg.merge_before else ep.support_labels
            else:
                feats = torch.cat([ep.support.emb, ep.query.emb]).mean(dim=1)
                s_labels = ep.support_labels
            labels = torch.cat([s_labels, ep.query_labels])
            class_logits = self.class_scale * _cos_eps(feats, text)  # [S+Q, W]
            loss = loss + self.cfg.class_weight * F.cross_entropy(class_logits, labels)
        return loss, logits


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> Method:
    return CLIPFSARHead(cfg, info, frames)

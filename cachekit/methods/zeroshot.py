"""Frozen CLIP zero-shot: cosine of the mean-pooled video to each class's text (methods.md §6.4).

Video vector = mean over T of the cached (un-normalised) projected frame embeddings, then
L2-normalised. Class vector = the class's cached text embeddings, one template (``template``) or
the mean of the raw embeddings over all cached templates (MA-FSAR: "encode all 16 and average
the outputs", §4.5-4.6), re-normalised.
Logit = ``logit_scale · cos``. No trainable parameters; reads only the cache.

Protocols: all-way / zero-shot / base-to-novel (``video_logits`` against any class set's text)
and episodic, where it is MA-FSAR's 5-way zero-shot "CLIP-Freeze" row (Table 11): the support
videos are ignored, queries are matched to the episode's class text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..encoder import ModelInfo
from ..errors import InputError
from .base import CacheNeeds, Episode, Method, VideoBatch, require_positive

DESCRIPTION = "Frozen CLIP zero-shot: cosine of the mean-pooled video to the class text (no training)"


@dataclass(frozen=True)
class Config:
    template: int | None = None  # None: mean over all cached templates; i: only template i
    logit_scale: float = 100.0  # CLIP's logit scale for OpenAI weights; accuracy does not depend on it

    def __post_init__(self) -> None:
        if self.template is not None and (isinstance(self.template, bool) or not isinstance(self.template, int)
                                          or self.template < 0):
            raise InputError(f"zeroshot template must be a template index >= 0 or None, got {self.template!r}")
        require_positive("zeroshot", logit_scale=self.logit_scale)


class ZeroShot(Method):
    name = "zeroshot"
    protocols = ("allway", "zeroshot", "base2novel", "episodic")
    predicts = "text"
    batched_episodes = True
    uses_support = False  # episodic: support videos are ignored (5-way zero-shot)

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True, text=True), "Frozen CLIP zero-shot")
        self.cfg = cfg

    @property
    def metric_name(self) -> str:
        t = self.cfg.template
        return "cosine to text" if t is None else f"cosine to text (template {t})"

    def class_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """text ``[..., C, P, D']`` -> normalised class vectors ``[..., C, D']``."""
        if text.shape[-2] == 0:
            raise InputError("zero-shot needs cached class text embeddings; none were given")
        if self.cfg.template is None:
            t = text.mean(dim=-2)  # [..., C, D'] mean of the raw template outputs (MA-FSAR §4.6)
        else:
            if self.cfg.template >= text.shape[-2]:
                raise InputError(
                    f"zeroshot template {self.cfg.template} but the store caches {text.shape[-2]} "
                    f"template(s) per class (0..{text.shape[-2] - 1})"
                )
            t = text[..., self.cfg.template, :]  # [..., C, D']
        return F.normalize(t, dim=-1)

    @staticmethod
    def video_vectors(emb: torch.Tensor) -> torch.Tensor:
        """emb ``[..., T, D']`` -> normalised mean-pooled video vectors ``[..., D']``."""
        return F.normalize(emb.mean(dim=-2), dim=-1)

    def video_logits(self, batch: VideoBatch, text: torch.Tensor) -> torch.Tensor:
        """batch.emb ``[B, T, D']``, text ``[C, P, D']`` -> ``[B, C]``."""
        v = self.video_vectors(batch.emb.float())  # [B, D']
        return self.cfg.logit_scale * v @ self.class_vectors(text.float()).t()  # [B, C]

    def query_features(self, batch: VideoBatch) -> torch.Tensor:
        """``logit_scale`` · the video vector for every frame ``[B, T, D']``: its mean over T dotted
        with :meth:`index_class_vectors` is the zero-shot logit."""
        v = self.cfg.logit_scale * self.video_vectors(batch.emb.float())  # [B, D']
        return v[..., None, :].expand(*batch.emb.shape[:-1], v.shape[-1])

    def index_class_vectors(self, text: torch.Tensor | None) -> torch.Tensor:
        """The normalised class text vectors ``[C, D']`` the videos are scored against."""
        if text is None:
            raise InputError("zero-shot needs cached class text embeddings; none were given")
        return self.class_vectors(text.float())

    def episode_logits(self, ep: Episode) -> torch.Tensor:
        """Queries against the episode's class text: ``[W*Q, W]``."""
        if ep.text is None:
            raise InputError("zero-shot episodes need the classes' text embeddings")
        v = self.video_vectors(ep.query.emb.float())  # [W*Q, D']
        return self.cfg.logit_scale * v @ self.class_vectors(ep.text.float()).t()  # [W*Q, W]

    def episodes_logits(self, emb: torch.Tensor, text: torch.Tensor | None, class_ids: torch.Tensor,
                        support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Many episodes at once: emb ``[V, T, D']`` all videos, text ``[C, P, D']`` all classes,
        class_ids ``[E, W]`` global ids, query ``[E, W, Q]`` video indices -> ``[E, W*Q, W]``.

        ``support`` (``[E, W, K]``) is not read.
        """
        if text is None:
            raise InputError("zero-shot episodes need the classes' text embeddings")
        vec = self.video_vectors(emb.float())  # [V, D']
        cls = self.class_vectors(text.float())  # [C, D']
        q = vec[query.reshape(query.shape[0], -1)]  # [E, W*Q, D']
        return self.cfg.logit_scale * q @ cls[class_ids].transpose(-1, -2)  # [E, W*Q, W]


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> ZeroShot:
    return ZeroShot(cfg, info, frames)

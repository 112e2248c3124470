"""Linear probe: a linear classifier over mean-pooled, L2-normalised frame embeddings (all-way).

The floor of an all-way K-shot table: video vector ``v = normalise(mean_T F)`` [D'], logits
``scale · v·Wᵀ + b`` over the C classes of the text it is given. With ``init="text"`` the rows of
W start as the normalised class-text embeddings (mean over the cached templates), so the untrained
probe is CLIP zero-shot; ``init="zeros"`` starts from nothing.

W has one row per class, and C is only known when the probe first sees the class text: W is a
lazy parameter, materialised (and initialised) on the first :meth:`video_logits` call and
restored with its shape by ``load_state_dict``. The trainer runs one forward before building the
optimiser when a method holds lazy parameters. Trainable parameters: ``C·(D' + 1)``
(101 UCF101 classes at D' = 512: 51,813).

Episodic protocol: not offered; a probe trained on training classes says nothing about the
test classes of an episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parameter import UninitializedParameter, is_lazy

from ..encoder import ModelInfo
from ..errors import InputError
from .base import CacheNeeds, Method, VideoBatch, require_positive

DESCRIPTION = "Linear probe over mean-pooled normalised embeddings, initialised from class text (all-way floor)"
DISPLAY_NAME = "Linear probe (frozen encoder)"
VARIANTS: list[dict] = [{"init": "text"}, {"init": "zeros"}]


@dataclass(frozen=True)
class Config:
    """init: "text" (rows = normalised class text: starts as zero-shot CLIP) or "zeros".
    scale: fixed logit scale (CLIP's 100)."""

    init: Literal["text", "zeros"] = "text"
    scale: float = 100.0

    def __post_init__(self):
        if self.init not in ("text", "zeros"):
            raise InputError(f"linear_probe init must be text or zeros, not {self.init!r}")
        require_positive("linear_probe", scale=self.scale)


class LinearProbe(Method):
    name = "linear_probe"
    protocols = ("allway",)
    predicts = "classifier"

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True, text=True), DISPLAY_NAME)
        self.cfg = cfg
        self.weight = UninitializedParameter()  # [C, D']
        self.bias = UninitializedParameter()  # [C]
        self.register_load_state_dict_pre_hook(self._materialise_from_state)

    @staticmethod
    def _materialise_from_state(module, state_dict, prefix, *args) -> None:
        w = state_dict.get(prefix + "weight")
        if w is not None and is_lazy(module.weight):
            module._materialise(w.shape[0], w.device)

    def _materialise(self, classes: int, device) -> None:
        self.weight.materialize((classes, self.info.embed_dim), device=device)
        self.bias.materialize((classes,), device=device)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()

    def _rows(self, text: Tensor | None) -> None:
        """Materialise W from the class text on first use; refuse text of another class count."""
        if text is None:
            if is_lazy(self.weight):
                raise InputError("the linear probe has no weights yet: it needs the class text to start from")
            return
        classes = text.shape[0]
        if is_lazy(self.weight):
            self._materialise(classes, text.device)
            if self.cfg.init == "text":
                with torch.no_grad():
                    self.weight.copy_(F.normalize(F.normalize(text, dim=-1).mean(dim=1), dim=-1))
        elif self.weight.shape[0] != classes:
            raise InputError(
                f"the linear probe was trained on {self.weight.shape[0]} classes; got text for {classes} "
                "(a probe classifies its own class set only)"
            )

    def video_logits(self, batch: VideoBatch, text: Tensor) -> Tensor:
        """batch.emb ``[B, T, D']``, text ``[C, P, D']`` -> ``[B, C]``; leading axes pass through
        (``[E, B, T, D']`` -> ``[E, B, C]``: the videos of E episodes at once)."""
        self._rows(text)
        v = F.normalize(batch.emb.mean(dim=-2), dim=-1)  # [..., B, D']
        return self.cfg.scale * v @ self.weight.t() + self.bias

    def query_features(self, batch: VideoBatch) -> Tensor:
        """``[B, T, D'+1]``: ``(scale · v, 1)`` for every frame, so that its mean over T dotted with
        :meth:`index_class_vectors` ``(W_c, b_c)`` is the probe's logit."""
        v = self.cfg.scale * F.normalize(batch.emb.float().mean(dim=-2), dim=-1)  # [B, D']
        f = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # [B, D'+1]
        return f[..., None, :].expand(*batch.emb.shape[:-1], f.shape[-1])

    def index_class_vectors(self, text: Tensor | None) -> Tensor:
        """The probe's rows with their bias, ``[C, D'+1]`` (see :meth:`query_features`)."""
        self._rows(text)
        return torch.cat([self.weight, self.bias[:, None]], dim=-1).detach().float()


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> Method:
    return LinearProbe(cfg, info, frames)

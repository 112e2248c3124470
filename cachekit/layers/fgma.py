"""The FgMA adapted ViT block of MA-FSAR (Xing et al., seed 003, Eqs. 4–8; spec methods.md §4.2).

Per adapted block l, on ``z [B, T, N+1, W]`` entering the block (the frozen block's own
``ln_1``/``attn``/``ln_2``/``mlp`` throughout; GT-MSA, LST-MSA, LM-MSA are the same frozen
attention on different inputs): GTA over the T class tokens (Eq. 4), LSTA / LMA over the patch
tokens with the temporal (and, for supports, text) token appended (Eqs. 5–7), JA beside the MLP
(Eq. 8). :class:`FgMABlock` plugs into :class:`cachekit.backbone.Backbone` as a
:class:`~cachekit.backbone.BlockOverride`; :class:`NoTPCM` stands in for TPCM in the head when
the variant has none. The method around them is :mod:`cachekit.methods.ma_fsar`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbone import Adapter, BlockOverride, FrozenBlock


class FgMABlock(BlockOverride):
    """One adapted ViT block: GTA, LSTA (queries) / LMA (supports, with a text token), JA.

    ``local=False`` drops GTA and LSTA/LMA (no inserted tokens; the block is then the frozen
    block plus JA); ``temporal=False`` drops GTA only (LSTA/LMA without the temporal token, the
    paper's "Frozen + LMA/LSTA" row); ``joint=False`` drops JA.
    """

    def __init__(self, width: int, ratio: float = 0.25, r: float = 0.5, local: bool = True,
                 temporal: bool = True, joint: bool = True):
        super().__init__()
        self.r = r
        self.temporal = Adapter(width, ratio, skip=False) if (local and temporal) else None  # Adapter_G
        self.spatial = Adapter(width, ratio, skip=True) if local else None  # Adapter_S (LSTA = LMA)
        self.joint = Adapter(width, ratio, skip=False) if joint else None  # Adapter_J

    def forward(self, block: FrozenBlock, x: torch.Tensor, frames: int, text: torch.Tensor | None = None,
                **ctx) -> torch.Tensor:
        # x [F, N+1, W] (F = B*T, video-major); text [B, W] (support branch) or None (query branch)
        f, n1, w = x.shape
        b = f // frames
        if self.spatial is None:
            x = x + block.attention(x)
        else:
            extra = []
            if self.temporal is not None:
                cls = x[:, 0].reshape(b, frames, w)  # [B, T, W]
                ta = cls + self.temporal(block.attention(cls))  # Eq. 4, attention over T
                extra.append(ta.reshape(f, 1, w))
            if text is not None:
                extra.append(text[:, None, None, :].expand(b, frames, 1, w).reshape(f, 1, w))  # Eq. 6
            seq = torch.cat([x, *extra], dim=1) if extra else x  # [F, N+1(+2), W]
            seq = seq + self.spatial(block.attention(seq))  # Eqs. 5 / 7
            x = seq[:, :n1]  # Select: leading N+1 tokens
        y = x + block.mlp(x)
        if self.joint is not None:
            y = y + self.r * self.joint(block.ln_2(x))  # Eq. 8
        return y


class NoTPCM(nn.Module):
    """Stands in for TPCM in ``modules="fgma"``: prototypes straight from the adapted features."""

    def support(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return feats

    def query(self, feats: torch.Tensor) -> torch.Tensor:
        return feats

    def both(self, support: torch.Tensor, text: torch.Tensor, query: torch.Tensor):
        return support, query

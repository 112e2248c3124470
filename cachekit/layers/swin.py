"""Swin-UNet-style decoder pieces: (shifted) window attention blocks and patch expansion.

EV-CLIP's mask generator (:class:`cachekit.methods.ev_clip.MaskPrompt`) upsamples a 7x7 feature
map to a 224x224 mask with :class:`PatchExpand` stages and pairs of :class:`SwinBlock` (window 7,
shift 0 then 3), as the public EV-CLIP code does; any decoder of a token grid can reuse them.

Why not timm's ``timm.models.swin_transformer.SwinTransformerBlock``: it computes the same
function (checked with timm 1.0.31 at the decoder's sizes: same parameter count, outputs equal to
1e-6 with the same weights, window clipped to the map and no shift when the map is no larger than
the window), but its module names differ (``attn.relative_position_bias_table``, ``mlp.fc1`` /
``mlp.fc2`` against ``attn.bias_table``, ``mlp.0`` / ``mlp.2`` here), so saved EV-CLIP runs would
no longer load without a key-renaming shim, and it takes ``[B, H, W, C]`` where the decoder
carries ``[B, H*W, C]``. These ~90 lines keep the checkpoints' keys and need no timm import.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` windows with relative position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))  # [(2w-1)^2, H]
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # [w*w, w*w, 2]
        self.register_buffer("bias_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # x [B*nW, w*w, C]; mask [nW, w*w, w*w] additive (0 / -inf-like) or None
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # [B*nW, H, n, c/H]
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # [H, n, n]
        bias = bias.unsqueeze(0).to(q.dtype)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.view(1, 1, self.heads, n, n) + mask.view(1, nw, 1, n, n).to(q.dtype))
            bias = bias.expand(bw // nw, -1, -1, -1, -1).reshape(bw, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B*nW, H, n, c/H]
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Swin transformer block on a ``[B, H*W, C]`` map: (shifted) window attention, then MLP."""

    def __init__(self, dim: int, heads: int, size: int, window: int = 7, shift: int = 0, mlp_ratio: float = 4.0):
        super().__init__()
        if size <= window:
            window, shift = size, 0
        self.size, self.window, self.shift = size, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        if shift:
            region = torch.zeros(size, size, dtype=torch.long)
            cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for i, (hs, ws) in enumerate((h, w) for h in cuts for w in cuts):
                region[hs, ws] = i
            win = self._partition(region.view(1, size, size, 1)).squeeze(-1)  # [nW, w*w]
            mask = (win[:, :, None] != win[:, None, :]).float() * -100.0  # [nW, w*w, w*w]
            self.register_buffer("mask", mask, persistent=False)
        else:
            self.mask = None

    def _partition(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, S, C] -> [B*nW, w*w, C]
        b, s, _, c = x.shape
        w = self.window
        x = x.view(b, s // w, w, s // w, w, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, w * w, c)

    def _merge(self, x: torch.Tensor, b: int) -> torch.Tensor:  # [B*nW, w*w, C] -> [B, S, S, C]
        s, w, c = self.size, self.window, x.shape[-1]
        x = x.view(b, s // w, s // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, s, s, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S*S, C]
        b, _, c = x.shape
        y = self.norm1(x).view(b, self.size, self.size, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self._merge(self.attn(self._partition(y), self.mask), b)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, -1, c)
        return x + self.mlp(self.norm2(x))


class PatchExpand(nn.Module):
    """``[B, S*S, C_in] -> [B, (f*S)^2, C_out]``: bias-free Linear to ``f*f*C_out``, each token to an
    ``f x f`` block, then LayerNorm(C_out)."""

    def __init__(self, dim_in: int, dim_out: int, factor: int, size: int):
        super().__init__()
        self.factor, self.size, self.dim_out = factor, size, dim_out
        self.expand = nn.Linear(dim_in, factor * factor * dim_out, bias=False)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        s, f, c = self.size, self.factor, self.dim_out
        x = self.expand(x).view(b, s, s, f, f, c).permute(0, 1, 3, 2, 4, 5)  # [B, S, f, S, f, C]
        return self.norm(x.reshape(b, s * f * s * f, c))

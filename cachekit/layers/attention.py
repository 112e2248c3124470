"""The attention + FFN layer over frame sequences of TPCM (MA-FSAR) and of the CLIP-FSAR head.

Both papers put one transformer layer over per-frame CLIP embeddings; they differ only in q/k/v
biases and the LayerNorm before the FFN, which :class:`PrototypeAttention` takes as options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError

CLIP_LOGIT_SCALE = 100.0  # exp(4.6052), CLIP's frozen temperature


class PrototypeAttention(nn.Module):
    """One attention + FFN layer over frame sequences, pre-norm, residual onto the query.

    ``out = q + Drop(Out(Attn(Wq·LN(q), Wk·LN(kv), Wv·LN(kv))))``; ``out = out + FFN(LN'(out))``
    with one LayerNorm shared by q, k and v. ``qkv_bias`` and ``ffn_norm`` (LN' or identity)
    select the TPCM (True, True) or CLIP-FSAR (False, False) form.
    """

    def __init__(self, dim: int, heads: int = 8, ffn_dim: int = 2048, qkv_bias: bool = True,
                 ffn_norm: bool = True, dropout: float = 0.1, attn_dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise InputError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim) if ffn_norm else nn.Identity()
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim), nn.Dropout(dropout))

    def _split(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, h, T, D/h]
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, q: Tensor, kv: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """q ``[B, Tq, D]``, kv ``[B, Tk, D]`` -> ``[B, Tq, D]``; ``key_mask`` ``[B, Tk]``
        (True = a real key; None: all are) keeps padding keys out of the attention."""
        nq, nkv = self.norm(q), self.norm(kv)
        att = F.scaled_dot_product_attention(
            self._split(self.q_proj(nq)), self._split(self.k_proj(nkv)), self._split(self.v_proj(nkv)),
            attn_mask=None if key_mask is None else key_mask[:, None, None, :],
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # [B, h, Tq, D/h]
        att = att.transpose(1, 2).reshape(q.shape)  # [B, Tq, D]
        x = q + self.drop(self.out_proj(att))
        return x + self.ffn(self.ffn_norm(x))

    def joint(self, support_q: Tensor, support_kv: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Both branches in one call of the shared layer: supports ``[S, T, D]`` attending over
        ``support_kv [S, T+e, D]`` (T frames and e extra tokens, e.g. the class text) and queries
        ``[Q, T, D]`` attending over themselves -> ``([S, T, D], [Q, T, D])``.

        The queries' keys are padded with e masked tokens, so the numbers are those of two calls;
        one call means one set of larger matrix products and no summing of two weight gradients
        in the backward (the two calls of a shared layer cost both, on the step's critical path).
        """
        s_n, t = support_q.shape[:2]
        extra = support_kv.shape[1] - t
        if extra == 0:
            out = self(torch.cat([support_q, query]), torch.cat([support_kv, query]))
            return out[:s_n], out[s_n:]
        pad = query.new_zeros(query.shape[0], extra, query.shape[2])  # [Q, e, D]
        kv = torch.cat([support_kv, torch.cat([query, pad], dim=1)])  # [S+Q, T+e, D]
        mask = torch.ones(kv.shape[:2], dtype=torch.bool, device=kv.device)  # [S+Q, T+e]
        mask[s_n:, t:] = False  # the queries' pad keys
        out = self(torch.cat([support_q, query]), kv, mask)  # [S+Q, T, D]
        return out[:s_n], out[s_n:]

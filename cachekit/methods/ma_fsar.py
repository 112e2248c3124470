"""MA-FSAR (Xing et al., seed 003), the part that trains from the cache: TPCM + metric + text losses.

``modules="tpcm"`` (this module) is the paper's "Frozen" configuration (Table 3 "× ✓", Table 4
"Frozen", 3.2M tunable; 42.3 SSv2-Small / 46.5 SSv2-Full 5-way 1-shot with ViT-B/32): frozen CLIP
frame embeddings ``F`` [T, D'] and frozen class-text embeddings ``F_T`` [P, D'] are read from the
cache, and only the Text-guided Prototype Construction Module (TPCM) trains. ``modules="fgma"``
and ``"all"`` put adapters inside the encoder; they are built by :mod:`.ma_fsar_fgma`, which reuses
:class:`TPCM`, :class:`TPCMHead` and the loss / prediction functions below.

Per episode (W ways, K shots, Q queries per class, T frames; methods.md §4.3–4.5):

- Templates (§4.5): the cache holds all P templates per class ``text [W, P, D']``. Training: one
  template at random per video (used for every class that video is compared with); evaluation:
  the mean of the P template embeddings.
- TPCM support branch (Eqs. 9–12): ``q = F_S + Repeat_T(F_T)``, ``k = v = [F_S; F_T]``
  ``[T+1, D']``, ``F~ = q + MHA(q, k, v)``, ``F~ = F~ + FFN(F~)``; query branch: the same layer
  with ``q = k = v = F_Q``. One layer, shared by both branches. K > 1: per-frame mean of the K
  transformed shots (CLIP-FSAR practice; the paper does not say) [inferred].
- Visual branch (Eq. 13): score ``M(F~_q, F~_S)`` with a metric of
  :data:`cachekit.metrics.SIMILARITIES` (default OTAM, λ = 0.1, symmetric) or the trainable TRX
  head; ``p_Q2S = softmax(q2s_scale · score)`` with score = −distance for OTAM / Bi-MHM
  (CLIP-FSAR's logits = −D [inferred]).
- Text branch (Eqs. 14–15): cosine of the temporal mean of ``F_S`` / ``F_q`` (before TPCM) with
  the W class texts, times CLIP's frozen logit scale (100) [inferred]; softmax over the episode's
  classes. The ActionCLIP KL with a one-hot target (the W classes are distinct) is cross-entropy.
- Loss (Eq. 16): ``α·½(L_S2T + L_Q2T) + (1 − α)·L_Q2S``; prediction (Eq. 17):
  ``p = α·p_Q2T + (1 − α)·p_Q2S``; :meth:`episode_logits` returns ``log p``.
  α = 0.75 for spatial data sets (Kinetics, HMDB51, UCF101), 0.25 for temporal ones (SSv2).

In this frozen-feature variant ``F_S``, ``F_Q`` and ``F_T`` are constants, so the text losses
L_S2T, L_Q2T carry no gradient (they only shift the loss value); they train the adapters in
the backbone variant. The text branch still enters the prediction through α.

Trainable parameters (TPCM, one layer at width D', h heads, FFN width F = 2048) [inferred]:
q/k/v and output projections with biases ``4·(D'² + D')``, FFN ``2·D'·F + F + D'``, two
LayerNorms ``2·2·D'`` (pre-norm: one before the attention, shared by q/k/v, one before the FFN;
the paper's Eqs. 11–12 show no normalisation, so their placement is [inferred]). ViT-B/32 (D' = 512):
``4·(262,144 + 512) + (2,097,152 + 2,048 + 512) + 2,048 = 1,050,624 + 2,099,712 + 2,048 =
3,152,384`` — the paper's "3.15M" (Table 4 text; "3.2M" in the table). With ``metric="trx"``
the TRX head adds 5,907,456 parameters (metrics.TRX).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoder import ModelInfo
from ..errors import InputError
from ..metrics import SIMILARITIES, TRX, check_support_labels, class_prototypes
from .base import CacheNeeds, Episode, EpisodeBatch, Method

DESCRIPTION = "MA-FSAR: text-guided prototypes (TPCM) + OTAM + video-text losses; tpcm trains from the cache"
DISPLAY_NAME = "MA-FSAR (TPCM only, frozen encoder)"

METRICS: tuple[str, ...] = (*SIMILARITIES, "trx")
CLIP_LOGIT_SCALE = 100.0  # exp(4.6052), CLIP's frozen temperature

VARIANTS: list[dict] = [{"modules": "tpcm"}, {"modules": "fgma"}, {"modules": "all"}]


@dataclass(frozen=True)
class Config:
    """MA-FSAR options; defaults are the paper's where it gives them.

    modules: "tpcm" trains TPCM on cached features (this module); "fgma" / "all" add the
        encoder adapters (built by :mod:`.ma_fsar_fgma`, needs the backbone).
    metric: temporal alignment metric: one of :data:`METRICS` ("otam" in the paper).
    alpha: weight of the text branch in the loss (Eq. 16) and prediction (Eq. 17): 0.75 for
        spatial data sets, 0.25 for temporal ones (SSv2).
    from_block, adapter_r, adapter_ratio: FgMA options (first adapted block; Joint-Adaptation
        scale r = 0.5; adapter bottleneck ratio 0.25), used only by ``modules != "tpcm"``.
    heads, ffn_dim, dropout: the TPCM layer (the paper gives one layer; 8 heads and a 2048-wide
        FFN reproduce its 3.15M parameters; dropout is not given) [inferred].
    text_scale: logit scale of the video-text cosines (CLIP's frozen 100) [inferred].
    q2s_scale: logits of the visual branch = q2s_scale · score; None: 1 for distances
        (OTAM, Bi-MHM, TRX: logits = −D), ``text_scale`` for the "mean" cosine.
    """

    modules: Literal["tpcm", "fgma", "all"] = "tpcm"
    metric: str = "otam"
    alpha: float = 0.75
    from_block: int = 0
    adapter_r: float = 0.5
    adapter_ratio: float = 0.25
    heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    text_scale: float = CLIP_LOGIT_SCALE
    q2s_scale: float | None = None

    def __post_init__(self):
        if self.modules not in ("tpcm", "fgma", "all"):
            raise InputError(f"ma_fsar modules must be tpcm, fgma or all, not {self.modules!r}")
        if self.metric not in METRICS:
            raise InputError(f"ma_fsar metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"ma_fsar alpha must lie in [0, 1], got {self.alpha}")
        if self.heads < 1 or self.ffn_dim < 1:
            raise InputError(f"ma_fsar heads and ffn_dim must be >= 1, got {self.heads}, {self.ffn_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"ma_fsar dropout must lie in [0, 1), got {self.dropout}")

    @property
    def resolved_q2s_scale(self) -> float:
        if self.q2s_scale is not None:
            return float(self.q2s_scale)
        return self.text_scale if self.metric == "mean" else 1.0


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


class TPCM(nn.Module):
    """Text-guided Prototype Construction Module (Eqs. 9–12): one layer shared by both branches."""

    def __init__(self, dim: int, heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.layer = PrototypeAttention(dim, heads, ffn_dim, qkv_bias=True, ffn_norm=True,
                                        dropout=dropout, attn_dropout=dropout)

    def support(self, feats: Tensor, text: Tensor) -> Tensor:
        """feats ``[S, T, D]``, own-class text ``[S, D]`` -> ``[S, T, D]``."""
        q = feats + text[:, None]  # [S, T, D]  Eq. 9
        kv = torch.cat([feats, text[:, None]], dim=1)  # [S, T+1, D]  Eq. 10
        return self.layer(q, kv)  # Eqs. 11-12

    def query(self, feats: Tensor) -> Tensor:
        """feats ``[Q, T, D]`` -> ``[Q, T, D]`` (self-attention, no text)."""
        return self.layer(feats, feats)

    def both(self, support: Tensor, text: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`support` and :meth:`query` in one call of the layer (``PrototypeAttention.joint``)."""
        q = support + text[:, None]  # [S, T, D]  Eq. 9
        kv = torch.cat([support, text[:, None]], dim=1)  # [S, T+1, D]  Eq. 10
        return self.layer.joint(q, kv, query)  # Eqs. 11-12, both branches


def pick_templates(text: Tensor, videos: int, training: bool) -> Tensor:
    """Class text each video is compared with: ``text [W, P, D]`` -> ``[videos, W, D]``, or per
    episode of a batch: ``[E, W, P, D]`` -> ``[E, videos, W, D]``.

    Training: one of the P templates at random per video (the same template for all W classes
    of that video); evaluation: the mean of the P template embeddings (§4.5). A batch draws its
    E·videos templates in one call, so E = 1 draws what one episode does.
    """
    if text.dim() == 3:
        return pick_templates(text[None], videos, training)[0]
    e_n, p_n = text.shape[0], text.shape[2]
    if training and p_n > 1:
        pick = torch.randint(p_n, (e_n * videos,), device=text.device).view(e_n, videos)  # [E, videos]
        episode = torch.arange(e_n, device=text.device)[:, None]  # [E, 1]
        return text.transpose(1, 2)[episode, pick]  # [E, videos, W, D]
    return text.mean(dim=2)[:, None].expand(-1, videos, -1, -1)  # [E, videos, W, D]


def text_logits(video: Tensor, text: Tensor, scale: float) -> Tensor:
    """Eqs. 14–15: ``scale · cos(mean_T video, text)``; video ``[B, T, D]``, text ``[B, W, D]`` -> ``[B, W]``."""
    v = F.normalize(video.mean(dim=1), dim=-1)  # [B, D]
    return scale * torch.einsum("bd,bwd->bw", v, F.normalize(text, dim=-1))


def ma_fsar_loss(s2t: Tensor, support_labels: Tensor, q2t: Tensor, q2s: Tensor,
                 query_labels: Tensor, alpha: float) -> Tensor:
    """Eq. 16: ``α·½(L_S2T + L_Q2T) + (1 − α)·L_Q2S`` from logits ``[S, W]``, ``[Q, W]``, ``[Q, W]``.

    The video-text KL losses have one-hot targets (distinct episode classes), i.e. cross-entropy.
    """
    l_s2t = F.cross_entropy(s2t, support_labels)
    l_q2t = F.cross_entropy(q2t, query_labels)
    l_q2s = F.cross_entropy(q2s, query_labels)
    return alpha * 0.5 * (l_s2t + l_q2t) + (1.0 - alpha) * l_q2s


def fuse_prediction(q2t: Tensor, q2s: Tensor, alpha: float) -> Tensor:
    """Eq. 17: ``log(α·softmax(q2t) + (1 − α)·softmax(q2s))``, logits ``[Q, W]`` -> ``[Q, W]``."""
    if alpha == 0.0:
        return F.log_softmax(q2s, dim=-1)
    if alpha == 1.0:
        return F.log_softmax(q2t, dim=-1)
    both = torch.stack([F.log_softmax(q2t, dim=-1) + math.log(alpha),
                        F.log_softmax(q2s, dim=-1) + math.log(1.0 - alpha)])
    return torch.logsumexp(both, dim=0)


class TPCMHead(nn.Module):
    """TPCM + metric + text branch on per-frame features, for any encoder (frozen or adapted).

    :meth:`forward` takes the frame features of E episodes' supports ``[E, W*K, T, D]`` and
    queries ``[E, W*Q, T, D]``, the episode-local labels ``[E, W*K]``, ``[E, W*Q]`` and the
    class text ``[E, W, P, D]``, and returns ``(loss, log p)`` with ``log p [E, W*Q, W]``
    (Eq. 17) and the loss averaged over episodes. One episode (no E axis) gives ``[W*Q, W]``.
    Videos of all episodes go through TPCM together, and the metric runs on all (query,
    prototype) pairs of the batch in one call.
    """

    def __init__(self, cfg: Config, dim: int, frames: int):
        super().__init__()
        self.alpha = cfg.alpha
        self.metric = cfg.metric
        self.text_scale = cfg.text_scale
        self.q2s_scale = cfg.resolved_q2s_scale
        self.tpcm = TPCM(dim, cfg.heads, cfg.ffn_dim, cfg.dropout)
        self.trx = TRX(dim, frames) if cfg.metric == "trx" else None

    def q2s_logits(self, support: Tensor, support_labels: Tensor, query: Tensor, ways: int) -> Tensor:
        """Visual branch on TPCM outputs: support ``[E, S, T, D]``, labels ``[E, S]``, query
        ``[E, Q, T, D]`` -> ``[E, Q, W]``."""
        if self.trx is not None:  # TRX masks by class per episode
            return self.q2s_scale * torch.stack([self.trx(s, lab, q, ways)
                                                 for s, lab, q in zip(support, support_labels, query)])
        protos = class_prototypes(support, support_labels, ways)  # [E, W, T, D]
        return self.q2s_scale * SIMILARITIES[self.metric](query, protos)

    def forward(self, support: Tensor, query: Tensor, support_labels: Tensor,
                query_labels: Tensor | None, text: Tensor) -> tuple[Tensor | None, Tensor]:
        if support.dim() == 3:  # one episode
            check_support_labels(support_labels, text.shape[0])
            loss, log_p = self(support[None], query[None], support_labels[None],
                               None if query_labels is None else query_labels[None], text[None])
            return loss, log_p[0]
        e_n, s_n, _, dim = support.shape
        q_n, ways = query.shape[1], text.shape[1]
        s_text = pick_templates(text, s_n, self.training)  # [E, S, W, D]
        q_text = pick_templates(text, q_n, self.training)  # [E, Q, W, D]
        own = s_text.gather(2, support_labels[:, :, None, None].expand(-1, -1, 1, dim))[:, :, 0]  # [E, S, D]
        s_feat, q_feat = self.tpcm.both(support.flatten(0, 1), own.flatten(0, 1), query.flatten(0, 1))
        s_feat, q_feat = s_feat.view_as(support), q_feat.view_as(query)  # [E, S, T, D], [E, Q, T, D]
        q2s = self.q2s_logits(s_feat, support_labels, q_feat, ways)  # [E, Q, W]
        q2t = text_logits(query.flatten(0, 1), q_text.flatten(0, 1), self.text_scale)  # [E*Q, W]
        log_p = fuse_prediction(q2t, q2s.flatten(0, 1), self.alpha).view(e_n, q_n, ways)  # [E, Q, W]
        if query_labels is None:
            return None, log_p
        s2t = text_logits(support.flatten(0, 1), s_text.flatten(0, 1), self.text_scale)  # [E*S, W]
        # cross-entropy means over E*S and E*Q rows = the mean over episodes of each one's loss
        loss = ma_fsar_loss(s2t, support_labels.flatten(), q2t, q2s.flatten(0, 1), query_labels.flatten(),
                            self.alpha)
        return loss, log_p


class MAFSARFrozen(Method):
    """MA-FSAR with the frozen encoder: TPCM on cached frame and class-text embeddings."""

    name = "ma_fsar"
    protocols = ("episodic",)
    batched_training = True

    def __init__(self, cfg: Config, info: ModelInfo, frames: int):
        super().__init__(info, frames, CacheNeeds(emb=True, text=True), DISPLAY_NAME)
        self.cfg = cfg
        self.head = TPCMHead(cfg, info.embed_dim, frames)

    def _run(self, ep: Episode, labels: Tensor | None) -> tuple[Tensor | None, Tensor]:
        if ep.text is None:
            raise InputError("ma_fsar needs class text embeddings in the store (extract with --templates ma_fsar16)")
        return self.head(ep.support.emb, ep.query.emb, ep.support_labels, labels, ep.text)

    def episode_logits(self, ep: Episode) -> Tensor:  # [W*Q, W] log p
        return self._run(ep, None)[1]

    def episode_loss(self, ep: Episode) -> tuple[Tensor, Tensor]:
        loss, log_p = self._run(ep, ep.query_labels)
        return loss, log_p

    @property
    def metric_name(self) -> str:
        return self.cfg.metric

    def _run_batch(self, batch: EpisodeBatch, labels: Tensor | None) -> tuple[Tensor | None, Tensor]:
        if batch.text is None:
            raise InputError("ma_fsar needs class text embeddings in the store (extract with --templates ma_fsar16)")
        return self.head(batch.support.emb, batch.query.emb, batch.support_labels, labels, batch.text)

    def episode_batch_logits(self, batch: EpisodeBatch) -> Tensor:  # [E, W*Q, W] log p
        return self._run_batch(batch, None)[1]

    def episode_batch_loss(self, batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
        loss, log_p = self._run_batch(batch, batch.query_labels)
        return loss, log_p

    def prototype_metric(self) -> None:
        """Scores are the method's own (TPCM, metric and text branch): see ``score_supports``."""
        return None


def build(cfg: Config, info: ModelInfo, frames: int, backbone=None) -> Method:
    if cfg.modules != "tpcm":
        try:
            from .ma_fsar_fgma import build as build_fgma
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.ma_fsar_fgma":
                raise
            raise InputError(
                f"ma_fsar modules={cfg.modules} puts adapters inside the encoder and needs the backbone "
                "variant (cachekit.methods.ma_fsar_fgma), which is not installed; use modules=tpcm"
            ) from err
        return build_fgma(cfg, info, frames, backbone)
    return MAFSARFrozen(cfg, info, frames)

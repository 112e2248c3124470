"""MA-FSAR's prototype head (Xing et al., seed 003, Eqs. 9–17), shared by its two builds.

The frozen-encoder variant (``ma_fsar modules=tpcm``) feeds it cached frame embeddings, the FgMA
variants (``modules=fgma|all``) the adapted ones; the equations, template handling and loss are
described in :mod:`cachekit.methods.ma_fsar`. :class:`TPCMHead` takes the options it uses
(not the method's Config), so the layer knows no method.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics import TRX, check_support_labels, class_prototypes
from ..similarity import SIMILARITIES
from .attention import CLIP_LOGIT_SCALE, PrototypeAttention


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


def fuse_prediction(q2t: Tensor, q2s: Tensor, alpha: float | Tensor) -> Tensor:
    """Eq. 17: ``log(α·softmax(q2t) + (1 − α)·softmax(q2s))``, logits ``[Q, W]`` -> ``[Q, W]``;
    ``alpha`` a number or a tensor ``[Q, 1]`` (one weight per row, :func:`checked_alpha`)."""
    if isinstance(alpha, Tensor):
        both = torch.stack([F.log_softmax(q2t, dim=-1) + torch.log(alpha),
                            F.log_softmax(q2s, dim=-1) + torch.log1p(-alpha)])
        return torch.logsumexp(both, dim=0)
    if alpha == 0.0:
        return F.log_softmax(q2s, dim=-1)
    if alpha == 1.0:
        return F.log_softmax(q2t, dim=-1)
    both = torch.stack([F.log_softmax(q2t, dim=-1) + math.log(alpha),
                        F.log_softmax(q2s, dim=-1) + math.log(1.0 - alpha)])
    return torch.logsumexp(both, dim=0)


class RowMemo:
    """Outputs of a row-wise function (one video in, its frames out) kept by input row, for
    inference with fixed weights: a row equal in every value to one seen before, in this call or
    an earlier one, is not computed again. Rows are looked up by ``probes`` of their values (a
    dict; sorting whole rows costs more than the layer), then checked whole against the row kept.
    Past ``max_bytes`` of kept rows, new rows are computed and not kept."""

    def __init__(self, probes: int = 8, max_bytes: int = 1 << 30):
        self.probes, self.max_bytes = probes, max_bytes
        self._slots: dict[tuple, int] = {}  # probe values -> row of the tables below
        self._inputs: Tensor | None = None  # [capacity, F] the rows computed (the first len(_slots))
        self._outputs: Tensor | None = None  # [capacity, ...] their outputs

    def _keep(self, keys: list[tuple], inputs: Tensor, outputs: Tensor) -> None:
        n, new = len(self._slots), len(keys)
        if self._inputs is None:
            self._inputs = inputs.new_empty((max(new, 64), *inputs.shape[1:]))
            self._outputs = outputs.new_empty((max(new, 64), *outputs.shape[1:]))
        elif n + new > self._inputs.shape[0]:  # grow by doubling: a long evaluation adds rows call by call
            size = max(2 * self._inputs.shape[0], n + new)
            row_bytes = (self._inputs[0].numel() + self._outputs[0].numel()) * self._inputs.element_size()
            if size * row_bytes > self.max_bytes:
                return
            self._inputs = torch.cat([self._inputs[:n], self._inputs.new_empty((size - n, *inputs.shape[1:]))])
            self._outputs = torch.cat([self._outputs[:n], self._outputs.new_empty((size - n, *outputs.shape[1:]))])
        self._inputs[n:n + new] = inputs
        self._outputs[n:n + new] = outputs
        self._slots.update((k, n + u) for u, k in enumerate(keys))

    def rows(self, x: Tensor, fn) -> Tensor:
        """``fn`` applied to each row of ``x [N, ...]`` (``fn`` maps ``[M, ...]`` to ``[M, ...]``
        row by row), each distinct row not seen before computed once."""
        n = x.shape[0]
        if n == 0:
            return fn(x)
        flat = x.reshape(n, -1)  # [N, F]
        cols = torch.linspace(0, flat.shape[1] - 1, min(self.probes, flat.shape[1]), device=x.device).long()
        keys = [tuple(k) for k in flat[:, cols].tolist()]
        first: dict[tuple, int] = {}  # the probe values of rows not seen before -> the first such row
        for i, k in enumerate(keys):
            if k not in self._slots:
                first.setdefault(k, i)
        if first:
            rows = list(first.values())
            self._keep(list(first), flat[rows], fn(x[rows]))
            if any(k not in self._slots for k in first):  # not kept (memory): every row computed
                return fn(x)
        slot = torch.tensor([self._slots[k] for k in keys], device=x.device)  # [N]
        if not torch.equal(self._inputs[slot], flat):  # a row agrees with another on the probes only (or NaN)
            return fn(x)
        return self._outputs[slot]


def checked_alpha(s2t: Tensor, support_labels: Tensor, alpha: float) -> Tensor:
    """clipcache's check of the text branch on the labelled supports (not the paper's): the
    weight ``α`` updated by how well the class texts name the supports against chance, the
    Bayes factor ``BF = Π_s W·p_text(y_s | x_s)``, and never raised: ``min(α, α·BF / (α·BF + 1 − α))``.
    Class texts that name the supports at least as well as chance keep ``α`` (Eq. 17 unchanged);
    texts the encoder cannot read (words it never learnt) are weighed down instead of deciding
    the prediction at scale 100. s2t ``[E, S, W]``, labels ``[E, S]`` -> ``[E]``."""
    ways = s2t.shape[-1]
    log_bf = (F.log_softmax(s2t, dim=-1).gather(-1, support_labels[..., None])[..., 0] + math.log(ways)).sum(-1)
    updated = torch.sigmoid(math.log(alpha / (1.0 - alpha)) + log_bf)  # [E]
    return torch.clamp(updated, max=alpha)


class TPCMHead(nn.Module):
    """TPCM + metric + text branch on per-frame features, for any encoder (frozen or adapted).

    :meth:`forward` takes the frame features of E episodes' supports ``[E, W*K, T, D]`` and
    queries ``[E, W*Q, T, D]``, the episode-local labels ``[E, W*K]``, ``[E, W*Q]`` and the
    class text ``[E, W, P, D]``, and returns ``(loss, log p)`` with ``log p [E, W*Q, W]``
    (Eq. 17) and the loss averaged over episodes. One episode (no E axis) gives ``[W*Q, W]``.
    Videos of all episodes go through TPCM together, and the metric runs on all (query,
    prototype) pairs of the batch in one call.

    ``metric``: a name of :data:`cachekit.similarity.SIMILARITIES` or ``"trx"`` (the trainable TRX
    head); ``alpha``: weight of the text branch (Eqs. 16–17); ``text_scale``, ``q2s_scale``: logit
    scales of the text and visual branches; ``heads``, ``ffn_dim``, ``dropout``: the TPCM layer;
    ``text_check``: the prediction's α per episode from :func:`checked_alpha` (the loss keeps α).
    """

    def __init__(self, dim: int, frames: int, metric: str = "otam", alpha: float = 0.75,
                 text_scale: float = CLIP_LOGIT_SCALE, q2s_scale: float = 1.0, heads: int = 8, ffn_dim: int = 2048,
                 dropout: float = 0.1, text_check: bool = False):
        super().__init__()
        self.alpha = alpha
        self.text_check = text_check
        self.metric = metric
        self.text_scale = text_scale
        self.q2s_scale = q2s_scale
        self.tpcm = TPCM(dim, heads, ffn_dim, dropout)
        self.trx = TRX(dim, frames) if metric == "trx" else None
        self._memo: tuple[RowMemo, RowMemo] | None = None  # inside reusing_videos()

    def _tpcm(self, support: Tensor, own: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """TPCM of supports ``[S, T, D]`` (own text ``[S, D]``) and queries ``[Q, T, D]``. In
        inference each distinct support (frames and text) and query goes through it once per call,
        and once per :meth:`reusing_videos` scope: the episodes of a validation draw the same
        videos again and again."""
        if self.training or torch.is_grad_enabled():
            return self.tpcm.both(support, own, query)
        s_memo, q_memo = self._memo or (RowMemo(), RowMemo())
        s_feat = s_memo.rows(torch.cat([support, own[:, None]], dim=1),  # [S, T+1, D]: what a support's output reads
                             lambda x: self.tpcm.support(x[:, :-1], x[:, -1]))
        return s_feat, q_memo.rows(query, self.tpcm.query)

    @contextmanager
    def reusing_videos(self):
        """Inside, inference calls (weights fixed: a validation, an evaluation) reuse TPCM's output
        for every support and query video seen before in the scope."""
        self._memo = (RowMemo(), RowMemo())
        try:
            yield
        finally:
            self._memo = None

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
        s_feat, q_feat = self._tpcm(support.flatten(0, 1), own.flatten(0, 1), query.flatten(0, 1))
        s_feat, q_feat = s_feat.view_as(support), q_feat.view_as(query)  # [E, S, T, D], [E, Q, T, D]
        q2s = self.q2s_logits(s_feat, support_labels, q_feat, ways)  # [E, Q, W]
        q2t = text_logits(query.flatten(0, 1), q_text.flatten(0, 1), self.text_scale)  # [E*Q, W]
        check = self.text_check and 0.0 < self.alpha < 1.0
        s2t = None  # [E*S, W]: read by the loss and the text check only
        if check or query_labels is not None:
            s2t = text_logits(support.flatten(0, 1), s_text.flatten(0, 1), self.text_scale)
        alpha = self.alpha
        if check:
            alpha = checked_alpha(s2t.view(e_n, s_n, ways), support_labels, alpha)  # [E]
            alpha = alpha.repeat_interleave(q_n)[:, None]  # [E*Q, 1]
        log_p = fuse_prediction(q2t, q2s.flatten(0, 1), alpha).view(e_n, q_n, ways)  # [E, Q, W]
        if query_labels is None:
            return None, log_p
        # cross-entropy means over E*S and E*Q rows = the mean over episodes of each one's loss
        loss = ma_fsar_loss(s2t, support_labels.flatten(), q2t, q2s.flatten(0, 1), query_labels.flatten(),
                            self.alpha)
        return loss, log_p

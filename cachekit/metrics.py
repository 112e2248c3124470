"""Temporal alignment metrics between frame sequences (methods.md §6) and prototype scoring.

Every function is pure, batched over queries and supports, differentiable, and device-agnostic:
it works on per-frame features ``[..., T, D]`` (T frames, D width) and returns scores or
distances ``[..., Q, S]``. Frame distance is ``1 - cos`` throughout (§6).

- :func:`mean_pool_similarity` — cosine of the temporal means (order-blind baseline, §6.4).
- :func:`otam_distance` / :func:`otam_from_dists` — OTAM with the exact padded recursion of the
  public code lineage (§6.1); CLIP-FSAR's head calls :func:`otam_from_dists` with λ = 0.5.
- :func:`bimhm_distance` — Bi-MHM of HyRSM (§6.2).
- :func:`centred_frames` — unit frames minus their clip's mean: OTAM on them (``otam_centred``)
  aligns only what changes along a clip (clipcache's variant, not in the papers).
- :class:`TRX` — trainable tuple cross-attention head (§6.3).
- the torch forms of the metric registry's entries (:mod:`cachekit.similarity`, which imports this
  module when a tensor first arrives): :func:`similarity_scores`, :func:`unit_frame_scores` (frames
  normalised once per table), :func:`shot_prototypes`.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cachekit.errors import InputError

if TYPE_CHECKING:  # the registry imports this module for its torch forms, not the other way
    from cachekit.similarity import Similarity

OTAM_LAMBDA = 0.1
"""λ of the OTAM code lineage (§6.1). CLIP-FSAR uses 0.5 and passes it explicitly."""

_OTAM_CHUNK = 32768
"""Pairs per block in :func:`otam_from_dists`: keeps the per-column working set in cache."""


def frame_cosine(q: Tensor, s: Tensor) -> Tensor:
    """Cosine similarity of every query frame with every support frame.

    q ``[..., Q, Tq, D]``, s ``[..., S, Ts, D]`` (same leading dims) -> ``[..., Q, S, Tq, Ts]``.
    Frames are L2-normalised inside, so inputs may be raw embeddings.
    """
    q = F.normalize(q, dim=-1)
    s = F.normalize(s, dim=-1)
    return torch.einsum("...qid,...sjd->...qsij", q, s)  # [..., Q, S, Tq, Ts]


def mean_pool_similarity(q: Tensor, s: Tensor) -> Tensor:
    """Cosine of the temporally mean-pooled videos (§6.4): blind to frame order by design.

    Video vector = mean over T of the un-normalised frames, then L2-normalised.
    q ``[..., Q, T, D]``, s ``[..., S, T, D]`` -> ``[..., Q, S]``, higher = more similar.
    """
    qv = F.normalize(q.mean(dim=-2), dim=-1)  # [..., Q, D]
    sv = F.normalize(s.mean(dim=-2), dim=-1)  # [..., S, D]
    return qv @ sv.transpose(-1, -2)  # [..., Q, S]


def _check_lambda(lbda: float) -> None:
    if not lbda > 0:
        raise InputError(f"OTAM lambda must be > 0, got {lbda!r}")


def otam_reference(dists: Tensor, lbda: float = OTAM_LAMBDA) -> Tensor:
    """OTAM written cell by cell, exactly as the recursion of §6.1 reads; slow.

    Kept as the executable definition that :func:`otam_from_dists` is tested and benchmarked
    against. With P = [0 | D | 0] (one zero column each side) and
    ``softmin(a) = -λ·log Σ exp(-a/λ)``:

    - top row, hard cumulative sum: ``C[0,m] = P[0,m] + C[0,m-1]``; column 0 stays 0;
    - ``C[l,1]    = P[l,1]    + softmin(C[l-1,0], C[l-1,1], C[l,0])``
    - ``C[l,m]    = P[l,m]    + softmin(C[l-1,m-1], C[l,m-1])``,  m = 2..Ls
    - ``C[l,Ls+1] = P[l,Ls+1] + softmin(C[l-1,Ls], C[l-1,Ls+1], C[l,Ls])``

    dists ``[..., Lq, Ls]`` -> ``C[Lq-1, Ls+1]`` of shape ``[...]``.
    """
    _check_lambda(lbda)
    *batch, n_q, n_s = dists.shape
    pad = F.pad(dists.reshape(-1, n_q, n_s), (1, 1))  # [N, Lq, W], W = Ls + 2
    width = n_s + 2

    def softmin(*a: Tensor) -> Tensor:
        return -lbda * torch.logsumexp(torch.stack(a, dim=-1) / -lbda, dim=-1)

    zero = pad.new_zeros(pad.shape[0])
    cum = [[zero] * width for _ in range(n_q)]  # cum[l][m]: [N]
    for m in range(1, width):
        cum[0][m] = pad[:, 0, m] + cum[0][m - 1]
    for l in range(1, n_q):
        cum[l][1] = pad[:, l, 1] + softmin(cum[l - 1][0], cum[l - 1][1], cum[l][0])
        for m in range(2, width - 1):
            cum[l][m] = pad[:, l, m] + softmin(cum[l - 1][m - 1], cum[l][m - 1])
        last = width - 1
        cum[l][last] = pad[:, l, last] + softmin(
            cum[l - 1][last - 1], cum[l - 1][last], cum[l][last - 1]
        )
    return cum[n_q - 1][width - 1].reshape(batch)


def otam_from_dists(dists: Tensor, lbda: float = OTAM_LAMBDA) -> Tensor:
    """OTAM cumulative distance (§6.1): the numbers of :func:`otam_reference`, computed fast.

    dists ``[..., Lq, Ls]``: frame distances, rows = query frames, columns = support frames
    (Lq may differ from Ls). Returns ``[...]``, the value ``C[Lq-1, Ls+1]`` of the padded soft-DTW
    with softmin temperature λ: every support frame is matched in order, leading and trailing
    query frames may be skipped at no cost (the zero pad columns).

    Why it is fast, and still exact: inside the real columns (m = 2..Ls) a cell reads only column
    m-1 (diagonal and left moves), so the DP runs column by column, vectorised over all rows and
    pairs (Ls-1 steps of a two-way logaddexp) instead of cell by cell. Column 1 is a chain down
    the rows whose other two inputs are the zero pad, ``softmin(0, 0, x)``. The right pad column
    adds 0 and only merges, so its last cell is one logsumexp over column Ls with multiplicities
    2, ..., 2, 1 (each ``C[l,Ls]`` enters the merges of rows l and l+1, the last row only once).
    The DP runs in units of λ on a ``[Lq, Ls, N]`` layout so each column is contiguous in pairs.

    Leading dims are free (e.g. ``[2, E, Q, W, Lq, Ls]``: both directions of E episodes in one
    call, the loop still over the T frames only), and no step reduces across pairs, so each
    pair's value and gradient are bit-identical to a call on that pair alone.
    """
    _check_lambda(lbda)
    *batch, n_q, n_s = dists.shape
    flat = dists.reshape(-1, n_q * n_s)  # [N, Lq*Ls]
    if flat.shape[0] == 0:
        return dists.new_zeros(batch)
    blocks = [_otam_columns(block, n_q, n_s, lbda) for block in flat.split(_OTAM_CHUNK)]
    return torch.cat(blocks).reshape(batch)


_OTAM_LANES = 64
"""The DP's pairs are padded to a multiple of this: every kernel then runs each pair through its
vectorised body (a loop's scalar tail computes ``logaddexp`` with other roundings), so a pair's
value and gradient do not depend on what else shares the call."""


def _otam_columns(flat: Tensor, n_q: int, n_s: int, lbda: float) -> Tensor:
    """Column sweep of :func:`otam_from_dists` on one block: flat ``[N, Lq*Ls]`` -> ``[N]``.

    With gradients it runs as :class:`_OTAMSweep`, whose backward is the DP's own reverse sweep.
    """
    if torch.is_grad_enabled() and flat.requires_grad:
        return _OTAMSweep.apply(flat, n_q, n_s, lbda)
    return _otam_sweep(flat, n_q, n_s, lbda, for_backward=False)[0]


def _otam_sweep(flat: Tensor, n_q: int, n_s: int, lbda: float, for_backward: bool = True):
    """The forward DP: ``(out [N], g [Lq, Ls, N'], lae [Lq, Ls, N'], weights [Lq, N'])``, N' = N
    padded to a multiple of :data:`_OTAM_LANES` (zero distances, dropped from ``out``).

    Works on ``g = -C/λ`` (negated, in units of λ), so every softmin is a plain logaddexp;
    ``g[:, m]`` is padded column m + 1 (pairs innermost: each column's rows are contiguous runs
    of pairs). With ``for_backward``: ``lae = g - (-P/λ)``, each cell's merge of its
    predecessors, and ``weights``, the right pad column's softmax; else None.
    """
    n = flat.shape[0]
    lae = torch.logaddexp  # one fused kernel per merge
    # -P/λ of the real columns, pairs padded with zeros to whole vectors (_OTAM_LANES)
    width = -(-n // _OTAM_LANES) * _OTAM_LANES
    neg_p = flat.new_zeros(n_q * n_s, width)
    neg_p[:, :n] = flat.t()  # a 2-D transpose takes PyTorch's blocked fast path
    neg_p = neg_p.mul_(-1.0 / lbda).view(n_q, n_s, width)  # [Lq, Ls, N']
    g = torch.empty_like(neg_p)  # [Lq, Ls, N']
    neg_cols, g_cols = neg_p.unbind(1), g.unbind(1)  # Ls x [Lq, N']: the loops index lists, not tensors
    # The top row is the hard cumulative sum: g[0, m] for every column at once.
    torch.cumsum(neg_p[0], dim=0, out=g[0])
    log2 = flat.new_full((), math.log(2.0))
    # Column 1: g[0,1] = -P[0,1]; g[l,1] = -P[l,1] + log(2 + exp(g[l-1,1])) (two zero-pad inputs).
    g_rows, neg_rows = g_cols[0].unbind(0), neg_cols[0].unbind(0)  # Lq x [N]
    for l in range(1, n_q):
        torch.add(neg_rows[l], lae(g_rows[l - 1], log2), out=g_rows[l])
    # Columns 2..Ls below the top row: diagonal and left moves from the previous column.
    if n_q > 1:
        for m in range(1, n_s):
            prev = g_cols[m - 1]
            torch.add(neg_cols[m][1:], lae(prev[:-1], prev[1:]), out=g_cols[m][1:])
    # Right pad column: merge of column Ls with multiplicities 2, ..., 2, 1. Summed row by row
    # rather than by torch.logsumexp / sum(dim=0), whose reduction order depends on N: this way
    # every pair's value and gradient is the same whatever else shares the call (a batch of
    # episodes equals its episodes one by one, bit for bit).
    log_mult = torch.full((n_q, 1), math.log(2.0), dtype=flat.dtype, device=flat.device)
    log_mult[-1] = 0.0
    merged = g_cols[n_s - 1] + log_mult  # [Lq, N]
    shift = merged.amax(dim=0)  # [N]
    terms = torch.exp(merged - shift)  # [Lq, N]
    total = terms[0].clone()
    for l in range(1, n_q):
        total += terms[l]
    out = (shift + torch.log(total)) * (-lbda)  # [N']
    if not for_backward:
        return out[:n], None, None, None
    return out[:n], g, g - neg_p, terms / total


class _OTAMSweep(torch.autograd.Function):
    """The OTAM DP with its gradient by the reverse sweep (as in soft-DTW): the adjoint of a cell
    flows to its predecessors weighted by ``exp(g_pred - lae_cell)``, column by column from the
    right, then down-to-up along column 1 and back along the top row's cumulative sum. The same
    numbers as autograd through the forward, with about half its kernel launches and no
    slice-backward buffers: the sweep is most of a from-cache step's overhead. Elementwise across
    pairs, like the forward."""

    @staticmethod
    def forward(ctx, flat: Tensor, n_q: int, n_s: int, lbda: float) -> Tensor:
        out, g, lae, weights = _otam_sweep(flat, n_q, n_s, lbda)
        ctx.save_for_backward(g, lae, weights)
        ctx.sizes = (n_q, n_s, lbda)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        g, lae, weights = ctx.saved_tensors
        n_q, n_s, lbda = ctx.sizes
        n, width = grad_out.shape[0], g.shape[2]
        if width != n:  # the padding pairs: no gradient flows into them
            grad_out = torch.cat([grad_out, grad_out.new_zeros(width - n)])
        adj = torch.empty_like(g)  # [Lq, Ls, N']: d out / d g
        adj_cols = adj.unbind(1)  # Ls x [Lq, N]
        # weight of each move into a cell: exp(g_pred - lae_cell), for every column at once
        diag = torch.exp(g[:-1, :-1] - lae[1:, 1:]).unbind(1)  # (Ls-1) x [Lq-1, N]
        left = torch.exp(g[1:, :-1] - lae[1:, 1:]).unbind(1)
        col = weights * (grad_out * -lbda)  # [Lq, N]: adjoint of column Ls (merge into the pad)
        for m in range(n_s - 1, 0, -1):
            adj_cols[m].copy_(col)
            below = col[1:]  # rows 1.. read the previous column; the top row reads the cumsum
            col = F.pad(below * diag[m - 1], (0, 0, 0, 1)) + F.pad(below * left[m - 1], (0, 0, 1, 0))
        rows = list(col.unbind(0))  # column 1: a chain down the rows
        chain = torch.exp(g[:-1, 0] - lae[1:, 0]).unbind(0)  # (Lq-1) x [N]
        for l in range(n_q - 1, 0, -1):
            rows[l - 1] = rows[l - 1] + rows[l] * chain[l - 1]
        adj_cols[0].copy_(torch.stack(rows))
        # top row: g[0, m] = Σ_{j <= m} -P[0, j]/λ, so d(-P[0, j]/λ) = Σ_{m >= j} adj[0, m]
        adj[0] = torch.flip(torch.cumsum(torch.flip(adj[0], [0]), dim=0), [0])
        grad = (adj * (-1.0 / lbda)).view(n_q * n_s, width)[:, :n].t().contiguous()  # [N, Lq*Ls]
        return grad, None, None, None


def otam_distance(
    q: Tensor, s: Tensor, lbda: float = OTAM_LAMBDA, symmetric: bool = True
) -> Tensor:
    """OTAM distance between query and support videos (lower = closer).

    q ``[..., Q, Tq, D]``, s ``[..., S, Ts, D]`` -> ``[..., Q, S]``.
    With ``D_ij = 1 - cos(q_i, s_j)``: ``d = OTAM(D)`` (query frames as rows) or, if
    ``symmetric``, ``(OTAM(D) + OTAM(Dᵀ)) / 2``.
    CLIP-FSAR sums the two directions instead (§5); that only doubles the logits.
    """
    dists = 1.0 - frame_cosine(q, s)  # [..., Q, S, Tq, Ts]
    if not symmetric:
        return otam_from_dists(dists, lbda)
    if dists.shape[-1] == dists.shape[-2]:  # one DP call over both directions
        both = torch.stack([dists, dists.transpose(-1, -2)])  # [2, ..., Q, S, T, T]
        return otam_from_dists(both, lbda).mean(dim=0)
    return 0.5 * (otam_from_dists(dists, lbda) + otam_from_dists(dists.transpose(-1, -2), lbda))


def bimhm_distance(q: Tensor, s: Tensor) -> Tensor:
    """Bi-MHM distance of HyRSM (§6.2): bidirectional mean Hausdorff, order-blind (lower = closer).

    ``d = Σ_i min_j D_ij + Σ_j min_i D_ij`` with ``D_ij = 1 - cos(q_i, s_j)``. We follow the code
    lineage's sums; the paper's 1/T factors would only divide the logits by T.
    q ``[..., Q, Tq, D]``, s ``[..., S, Ts, D]`` -> ``[..., Q, S]``.
    """
    dists = 1.0 - frame_cosine(q, s)  # [..., Q, S, Tq, Ts]
    return dists.amin(dim=-1).sum(dim=-1) + dists.amin(dim=-2).sum(dim=-1)


def centred_frames(x: Tensor) -> Tensor:
    """Unit frames minus the mean unit frame of their clip: ``[..., T, D]`` -> same shape.

    What a whole clip shares (its scene, its object) cancels and what changes along it stays, so
    a frame distance on these compares motion, not scenes. Normalised first, so raw embeddings and
    unit frames give the same result."""
    u = F.normalize(x, dim=-1)
    return u - u.mean(dim=-2, keepdim=True)


def _unit_frames(x: Tensor, centred: bool) -> Tensor:
    """Unit frames, or (centred) unit frames minus their clip's mean, re-normalised."""
    u = F.normalize(x, dim=-1)
    return F.normalize(u - u.mean(dim=-2, keepdim=True), dim=-1) if centred else u


def _align(sim: Similarity, dists: Tensor) -> Tensor:
    """A frame-distance kernel as a score: dists ``[..., Q, S, Tq, Ts]`` -> ``[..., Q, S]``."""
    if sim.kernel == "otam":  # symmetric, the entry's λ
        if dists.shape[-1] == dists.shape[-2]:  # one DP call over both directions
            return -otam_from_dists(torch.stack([dists, dists.transpose(-1, -2)]), sim.lbda).mean(dim=0)
        return -0.5 * (otam_from_dists(dists, sim.lbda) + otam_from_dists(dists.transpose(-1, -2), sim.lbda))
    if sim.kernel == "bimhm":
        return -(dists.amin(dim=-1).sum(dim=-1) + dists.amin(dim=-2).sum(dim=-1))
    raise InputError(f"metric {sim.name!r} has no frame-alignment kernel {sim.kernel!r}")


def similarity_scores(sim: Similarity, q: Tensor, s: Tensor) -> Tensor:
    """The torch form of a registry entry: q ``[..., Q, T, D]``, s ``[..., S, T, D]`` raw frames
    -> ``[..., Q, S]``, higher = better (:meth:`Similarity.__call__`)."""
    if sim.pooled:
        return mean_pool_similarity(q, s)
    sim.check_frames(q.shape[-2], s.shape[-2])
    if sim.centred:
        q, s = centred_frames(q), centred_frames(s)
    return _align(sim, 1.0 - frame_cosine(q, s))


def unit_frame_scores(sim: Similarity, qn: Tensor, pn: Tensor) -> Tensor:
    """A temporal entry on frames normalised once per table: qn ``[..., M, T, D]``, pn
    ``[..., W, T, D]`` unit frames -> ``[..., M, W]``; frame cosines by one matmul per batch entry
    (:meth:`Similarity.on_unit_frames`)."""
    if sim.pooled:
        raise InputError(f"metric {sim.name!r} compares pooled clips, not unit frames")
    sim.check_frames(qn.shape[-2], pn.shape[-2])
    if sim.centred:
        qn, pn = _unit_frames(qn, True), _unit_frames(pn, True)
    m, t = qn.shape[-3], qn.shape[-2]
    w, ts = pn.shape[-3], pn.shape[-2]
    cos = qn.flatten(-3, -2) @ pn.flatten(-3, -2).transpose(-1, -2)  # [..., M*T, W*Ts]
    return _align(sim, 1.0 - cos.unflatten(-1, (w, ts)).unflatten(-3, (m, t)).transpose(-3, -2))  # [..., M, W, T, Ts]


def shot_prototypes(sim: Similarity, support: Tensor) -> Tensor:
    """Class prototypes from shots ``[..., W, K, T, D]`` -> ``[..., W, T', D]``
    (:meth:`Similarity.prototypes`): pooled, the re-normalised mean of the shots' unit video
    vectors as a one-frame sequence; temporal, the per-frame mean of the raw shots."""
    if support.shape[-3] == 0:
        raise InputError("support prototypes need at least one shot per class (shots >= 1)")
    if sim.pooled:
        sv = F.normalize(support.mean(dim=-2), dim=-1)  # [..., W, K, D] shot video vectors
        return F.normalize(sv.mean(dim=-2), dim=-1).unsqueeze(-2)  # [..., W, 1, D]
    return support.mean(dim=-3)  # [..., W, T, D]


def class_prototypes(support: Tensor, support_labels: Tensor, ways: int) -> Tensor:
    """Per-frame mean of the shots of each class (CLIP-FSAR convention).

    support ``[S, T, D]``, support_labels ``[S]`` in 0..ways-1 -> ``[W, T, D]``; or a batch of
    episodes: ``[E, S, T, D]``, ``[E, S]`` -> ``[E, W, T, D]``. One episode's labels are checked
    (every class needs a shot); a batch's are not (the trainer builds them, class-major and
    complete), which keeps a training step free of device-to-host syncs.
    """
    if support_labels.dim() == 1:
        one_hot = _class_one_hot(support_labels, ways).to(support.dtype)  # [W, S]
        sums = torch.einsum("ws,std->wtd", one_hot, support)
        return sums / one_hot.sum(dim=1)[:, None, None]  # [W, T, D]
    classes = torch.arange(ways, device=support_labels.device)
    one_hot = (support_labels[..., None, :] == classes[:, None]).to(support.dtype)  # [E, W, S]
    sums = torch.einsum("...ws,...std->...wtd", one_hot, support)
    return sums / one_hot.sum(dim=-1)[..., None, None]  # [E, W, T, D]


def check_support_labels(support_labels: Tensor, ways: int) -> None:
    """Raise :class:`InputError` unless ``support_labels [S]`` lie in 0..ways-1 and cover every class."""
    _class_one_hot(support_labels, ways)


def _class_one_hot(labels: Tensor, ways: int) -> Tensor:
    """``[W, S]`` bool membership; every class 0..ways-1 must have a shot."""
    if labels.dim() != 1:
        raise InputError(f"support_labels must be 1-D, got shape {tuple(labels.shape)}")
    one_hot = labels[None, :] == torch.arange(ways, device=labels.device)[:, None]  # [W, S]
    counts = one_hot.sum(dim=1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= ways):
        raise InputError(f"support_labels must lie in 0..{ways - 1}, got {labels.tolist()}")
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise InputError(f"classes {empty} have no support video (ways={ways})")
    return one_hot


def _sinusoid(frames: int, dim: int) -> Tensor:
    """Transformer sinusoidal position code ``[T, D]``: sin on even, cos on odd channels."""
    pos = torch.arange(frames, dtype=torch.float32)[:, None]  # [T, 1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(frames, dim)
    code[:, 0::2] = torch.sin(pos * freq)
    code[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return code


class _TupleCrossTransformer(nn.Module):
    """TRX cross-attention for one tuple cardinality ω (§6.3).

    Each ordered frame tuple t1 < ... < tω is the concatenation of its frames (ω·D). A query
    tuple attends over all tuples of a class's K shots; the class-specific prototype is the
    attention-weighted sum of their values, and the distance is the mean squared error between
    query values and that prototype over tuples.
    """

    def __init__(self, dim: int, frames: int, omega: int, proj_dim: int) -> None:
        super().__init__()
        tuples = torch.tensor(list(itertools.combinations(range(frames), omega)))  # [n, ω]
        self.register_buffer("tuples", tuples, persistent=False)
        self.k_linear = nn.Linear(omega * dim, proj_dim)
        self.v_linear = nn.Linear(omega * dim, proj_dim)
        self.norm_k = nn.LayerNorm(proj_dim)  # keys only, as in the public code
        self.proj_dim = proj_dim

    def forward(self, support: Tensor, class_mask: Tensor, query: Tensor) -> Tensor:
        """support ``[S, T, D]``, class_mask ``[W, S]`` (True = shot of class w),
        query ``[Q, T, D]`` -> distances ``[Q, W]``."""
        s_t = support[:, self.tuples].flatten(2)  # [S, n, ω·D]
        q_t = query[:, self.tuples].flatten(2)  # [Q, n, ω·D]
        s_k = self.norm_k(self.k_linear(s_t))  # [S, n, P]
        q_k = self.norm_k(self.k_linear(q_t))  # [Q, n, P]
        s_v = self.v_linear(s_t)  # [S, n, P]
        q_v = self.v_linear(q_t)  # [Q, n, P]
        scores = torch.einsum("qip,sjp->qisj", q_k, s_k) / math.sqrt(self.proj_dim)  # [Q, n, S, n]
        n_q, n_t, n_s, _ = scores.shape
        ways = class_mask.shape[0]
        outside = ~class_mask[None, :, None, :, None]  # [1, W, 1, S, 1]
        scores = scores[:, None].masked_fill(outside, float("-inf"))  # [Q, W, n, S, n]
        attn = scores.reshape(n_q, ways, n_t, n_s * n_t).softmax(dim=-1)
        attn = attn.view(n_q, ways, n_t, n_s, n_t)
        proto = torch.einsum("qwisj,sjp->qwip", attn, s_v)  # [Q, W, n, P]
        return (q_v[:, None] - proto).pow(2).sum(dim=(-2, -1)) / n_t  # [Q, W]


class TRX(nn.Module):
    """TRX head (Perrett et al., as in CLIP-FSAR ``CNN_TRX``, §6.3): trainable tuple matching.

    Frames get a sinusoidal position code scaled by 0.1 and dropout; for each cardinality ω in
    ``set_sizes`` a shared key/value map sends every ordered ω-tuple of frames to ``proj_dim``
    (LayerNorm on keys), query tuples attend over the tuples of each class's shots, and the logit
    is minus the mean squared query-to-prototype error. Logits are averaged over ω.
    Trainable parameters: ``Σ_ω (2·ω·dim·proj_dim + 4·proj_dim)`` (5,907,456 at dim 512).
    """

    def __init__(
        self,
        dim: int,
        frames: int,
        set_sizes: tuple[int, ...] = (2, 3),
        proj_dim: int = 1152,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not set_sizes or any(not 1 <= w <= frames for w in set_sizes):
            raise InputError(f"TRX set_sizes must lie in 1..{frames}, got {set_sizes!r}")
        self.frames = frames
        self.register_buffer("position", 0.1 * _sinusoid(frames, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.cross = nn.ModuleList(
            _TupleCrossTransformer(dim, frames, w, proj_dim) for w in set_sizes
        )

    def forward(self, support: Tensor, support_labels: Tensor, query: Tensor, ways: int) -> Tensor:
        """support ``[S, T, D]``, support_labels ``[S]`` in 0..ways-1, query ``[Q, T, D]``
        -> logits ``[Q, W]`` (higher = better)."""
        if support.shape[-2] != self.frames or query.shape[-2] != self.frames:
            raise InputError(
                f"TRX was built for {self.frames} frames, got support {tuple(support.shape)} "
                f"and query {tuple(query.shape)}"
            )
        class_mask = _class_one_hot(support_labels, ways)  # [W, S]
        position = self.position.to(support.dtype)
        support = self.dropout(support + position)  # [S, T, D]
        query = self.dropout(query + position)  # [Q, T, D]
        dists = torch.stack([c(support, class_mask, query) for c in self.cross])  # [ω, Q, W]
        return -dists.mean(dim=0)


__all__ = [
    "OTAM_LAMBDA",
    "SIMILARITIES",
    "TRX",
    "bimhm_distance",
    "check_support_labels",
    "class_prototypes",
    "frame_cosine",
    "mean_pool_similarity",
    "otam_distance",
    "otam_from_dists",
    "otam_reference",
    "prototype_scores",
]

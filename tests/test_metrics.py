"""Temporal alignment metrics (methods.md §6): OTAM against path enumeration and the cell-by-cell
recursion, order sensitivity, Bi-MHM, TRX, prototype scoring."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cachekit import metrics
from cachekit.errors import InputError
from cachekit import similarity
from cachekit.metrics import (
    TRX,
    bimhm_distance,
    frame_cosine,
    mean_pool_similarity,
    otam_distance,
    otam_from_dists,
    otam_reference,
)
from cachekit.similarity import SIMILARITIES

LAMBDAS = (0.05, 0.1, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------
# Independent references, pure Python


def _padded_predecessors(l: int, m: int, width: int) -> list[tuple[int, int]] | None:
    """Moves into cell (l, m) of the padded grid P = [0 | D | 0]; None = a free start (column 0)."""
    if m == 0:
        return None
    if l == 0:
        return [(0, m - 1)]  # top row: only from the left
    if m == 1:
        return [(l - 1, 0), (l - 1, 1), (l, 0)]
    if m == width - 1:
        return [(l - 1, m - 1), (l - 1, m), (l, m - 1)]
    return [(l - 1, m - 1), (l, m - 1)]


def _path_costs(dists: list[list[float]]) -> list[float]:
    """Cost of every path into the bottom-right padded cell, enumerated one by one."""
    width = len(dists[0]) + 2
    pad = [[0.0, *row, 0.0] for row in dists]

    def walk(l: int, m: int):
        preds = _padded_predecessors(l, m, width)
        if preds is None:
            yield 0.0
            return
        for pl, pm in preds:
            for cost in walk(pl, pm):
                yield cost + pad[l][m]

    return list(walk(len(dists) - 1, width - 1))


def brute_force_otam(dists: list[list[float]], lbda: float) -> float:
    """Softmin over all paths, ``-λ log Σ_paths exp(-cost/λ)``: no dynamic programming."""
    costs = _path_costs(dists)
    low = min(costs)
    return low - lbda * math.log(sum(math.exp(-(c - low) / lbda) for c in costs))


def hard_alignment_cost(dists: list[list[float]]) -> float:
    """λ -> 0 limit from the alignment semantics: support frame j goes to query frame f(j), with
    f(1) free and f(j+1) - f(j) in {0, 1} (interior query frames cannot be skipped)."""
    n_q, n_s = len(dists), len(dists[0])
    best = math.inf
    for first in range(n_q):
        for steps in itertools.product((0, 1), repeat=n_s - 1):
            rows = list(itertools.accumulate(steps, initial=first))
            if rows[-1] < n_q:
                best = min(best, sum(dists[r][j] for j, r in enumerate(rows)))
    return best


def _rand_dists(*shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 2.0 * torch.rand(*shape, generator=gen, dtype=dtype)  # 1 - cos lies in [0, 2]


def _frames(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)


# ---------------------------------------------------------------------------------------------
# OTAM: exactness


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (3, 4), (4, 2), (1, 3), (3, 1), (2, 2)])
@pytest.mark.parametrize("lbda", LAMBDAS)
def test_otam_equals_path_enumeration(shape, lbda):
    dists = _rand_dists(5, *shape, seed=10 * shape[0] + shape[1])
    fast = otam_from_dists(dists, lbda)
    cells = otam_reference(dists, lbda)
    expected = torch.tensor(
        [brute_force_otam(d, lbda) for d in dists.double().tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(fast.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cells.double(), expected, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    n_q=st.integers(1, 4),
    n_s=st.integers(1, 4),
    lbda=st.sampled_from((0.01, 0.1, 0.3, 2.0)),
    seed=st.integers(0, 10_000),
)
def test_otam_equals_path_enumeration_float64(n_q, n_s, lbda, seed):
    dists = _rand_dists(n_q, n_s, seed=seed, dtype=torch.float64)
    expected = brute_force_otam(dists.tolist(), lbda)
    assert otam_from_dists(dists, lbda).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("shape", [(4, 5, 8, 8), (3, 2, 5, 7), (6, 1, 7, 3), (10, 1, 1)])
@pytest.mark.parametrize("lbda", LAMBDAS)
def test_fast_otam_equals_cell_by_cell(shape, lbda):
    dists = _rand_dists(*shape, seed=7)
    torch.testing.assert_close(
        otam_from_dists(dists, lbda), otam_reference(dists, lbda), atol=1e-5, rtol=0
    )


def test_fast_otam_gradient_equals_cell_by_cell():
    dists = _rand_dists(3, 4, 8, 8, seed=3, dtype=torch.float64).requires_grad_()
    (g_fast,) = torch.autograd.grad(otam_from_dists(dists, 0.1).sum(), dists)
    (g_cells,) = torch.autograd.grad(otam_reference(dists, 0.1).sum(), dists)
    torch.testing.assert_close(g_fast, g_cells, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n_q,n_s", [(1, 1), (1, 5), (5, 1), (2, 2), (3, 7), (8, 8)])
def test_otam_reverse_sweep_gradient_equals_autograd_cell_by_cell(n_q, n_s):
    """The DP's hand-written backward (reverse sweep) against autograd through the cell-by-cell
    recursion, on every edge shape (one query frame, one support frame)."""
    dists = _rand_dists(4, n_q, n_s, seed=n_q * 10 + n_s, dtype=torch.float64).requires_grad_()
    weights = _rand_dists(4, seed=5, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((otam_from_dists(dists, 0.3) * weights).sum(), dists)
    (g_cells,) = torch.autograd.grad((otam_reference(dists, 0.3) * weights).sum(), dists)
    torch.testing.assert_close(g_fast, g_cells, atol=1e-12, rtol=1e-10)


def test_otam_blocks_and_leading_dims(monkeypatch):
    dists = _rand_dists(3, 7, 6, 5, seed=11)
    whole = otam_from_dists(dists)
    assert whole.shape == (3, 7)
    monkeypatch.setattr(metrics, "_OTAM_CHUNK", 4)  # 21 pairs -> 6 blocks
    torch.testing.assert_close(otam_from_dists(dists), whole, atol=0, rtol=0)
    torch.testing.assert_close(otam_from_dists(dists.reshape(21, 6, 5)), whole.reshape(21))
    assert otam_from_dists(dists[:0]).shape == (0, 7)


# ---------------------------------------------------------------------------------------------
# OTAM: alignment semantics (§6.1 properties)


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (4, 2), (2, 4), (5, 3)])
@pytest.mark.parametrize("lbda", (0.01, 0.1, 0.5))
def test_otam_brackets_the_hard_alignment(shape, lbda):
    """softmin over n paths lies in [min - λ log n, min]."""
    for d in _rand_dists(4, *shape, seed=5, dtype=torch.float64):
        rows = d.tolist()
        hard = hard_alignment_cost(rows)
        assert min(_path_costs(rows)) == pytest.approx(hard, abs=1e-12)
        value = otam_from_dists(d, lbda).item()
        assert hard - lbda * math.log(len(_path_costs(rows))) - 1e-9 <= value <= hard + 1e-9


def test_otam_small_lambda_limits():
    lbda = 1e-3
    ones = torch.ones(8, 8)
    assert otam_from_dists(ones, lbda).item() == pytest.approx(8.0, abs=0.05)
    zero_diag = 1.0 - torch.eye(8)
    assert otam_from_dists(zero_diag, lbda).item() == pytest.approx(0.0, abs=0.05)


def test_otam_skips_end_query_frames_but_not_interior_ones():
    lbda = 1e-3
    # Query rows 1..3 match supports 0..2; rows 0 and 4 are bad and skipped for free.
    ends = torch.ones(5, 3)
    ends[1, 0] = ends[2, 1] = ends[3, 2] = 0.0
    assert otam_from_dists(ends, lbda).item() == pytest.approx(0.0, abs=0.01)
    # Matches at query rows 0 and 3 would need to skip interior rows 1, 2: not allowed.
    gap = torch.ones(4, 2)
    gap[0, 0] = gap[3, 1] = 0.0
    assert otam_from_dists(gap, lbda).item() == pytest.approx(1.0, abs=0.01)


def test_otam_stays_finite_where_raw_exp_underflows():
    dists = torch.full((2, 8, 8), 2.0, requires_grad=True)  # cost 16 >> 87·λ at λ = 0.01
    value = otam_from_dists(dists, 0.01)
    (grad,) = torch.autograd.grad(value.sum(), dists)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    assert value[0].item() == pytest.approx(16.0, abs=0.1)


def test_otam_rejects_nonpositive_lambda():
    with pytest.raises(InputError, match="lambda"):
        otam_from_dists(torch.zeros(2, 2), 0.0)


# ---------------------------------------------------------------------------------------------
# Order sensitivity: OTAM versus mean pooling


def test_otam_tells_time_reversal_mean_pool_cannot():
    frames = torch.linalg.qr(_frames(64, 8, seed=0)).Q.T  # [T, D], orthonormal frames
    video = frames[None]  # [1, T, D]
    reverse = video.flip(dims=(1,))
    noisy = video + 0.01 * _frames(1, 8, 64, seed=1)

    torch.testing.assert_close(
        mean_pool_similarity(reverse, video), mean_pool_similarity(video, video), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        bimhm_distance(reverse, video), bimhm_distance(video, video), atol=1e-5, rtol=0
    )
    d_self = otam_distance(video, video).item()
    d_noisy = otam_distance(noisy, video).item()
    d_reverse = otam_distance(reverse, video).item()
    assert d_self < d_noisy < d_reverse
    assert d_reverse - d_noisy > 1.0  # several frames forced onto wrong partners


def test_centred_frames_are_unit_frames_minus_their_clip_mean():
    x = _frames(3, 5, 16, seed=20) * torch.rand(3, 5, 1) * 4  # varied frame norms
    c = metrics.centred_frames(x)
    unit = F.normalize(x, dim=-1)
    torch.testing.assert_close(c, unit - unit.mean(dim=-2, keepdim=True))
    torch.testing.assert_close(c.sum(dim=-2), torch.zeros(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(metrics.centred_frames(unit), c)  # raw and unit frames agree


def test_centred_otam_refuses_single_frame_clips():
    with pytest.raises(InputError, match="at least 2 frames"):
        SIMILARITIES["otam_centred"](_frames(2, 1, 8, seed=0), _frames(3, 1, 8, seed=1))


def test_centred_otam_sees_the_order_where_the_scene_swamps_raw_otam():
    """Query and support share a motion (a path through 8 orthonormal directions) but not their
    scene (a large constant vector per clip); the reversed support's scene is the query's near
    twin. Raw OTAM and mean pooling follow the scene; OTAM on clip-centred frames follows the order."""
    path = torch.linalg.qr(_frames(64, 8, seed=0)).Q.T  # [T, D] orthonormal
    scene = _frames(3, 1, 64, seed=21)[:, 0]  # [3, D]: query, forward support, reversed support
    scene = 3.0 * F.normalize(scene, dim=-1)
    scene[2] = scene[0] + 0.3 * F.normalize(scene[2], dim=-1)  # the reversal's scene ~ the query's
    query = (scene[0] + path)[None]  # [1, T, D]
    support = torch.stack([scene[1] + path, scene[2] + path.flip(0)])  # [2, T, D]: forward, reversed
    assert SIMILARITIES["mean"](query, support).argmax().item() == 1
    assert SIMILARITIES["otam"](query, support).argmax().item() == 1
    assert SIMILARITIES["otam_centred"](query, support).argmax().item() == 0


# ---------------------------------------------------------------------------------------------
# otam_distance / frame_cosine / mean pooling


def test_symmetric_otam_is_mean_of_both_directions():
    q, s = _frames(3, 8, 16, seed=2), _frames(4, 8, 16, seed=3)
    forward = otam_distance(q, s, lbda=0.5, symmetric=False)  # [Q, S]
    backward = otam_distance(s, q, lbda=0.5, symmetric=False).T  # s -> q
    torch.testing.assert_close(otam_distance(q, s, lbda=0.5), (forward + backward) / 2)
    assert not torch.allclose(forward, backward)
    q_short = _frames(3, 5, 16, seed=4)  # Tq != Ts takes the two-call path
    expected = (
        otam_distance(q_short, s, symmetric=False) + otam_distance(s, q_short, symmetric=False).T
    ) / 2
    torch.testing.assert_close(otam_distance(q_short, s), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_otam_over_a_batch_of_episodes_equals_episode_by_episode(dtype):
    """Training sends E episodes through one DP call, [2, E, Q, W, T, T] (both directions): values
    and gradients equal E separate calls exactly (the DP is elementwise across pairs)."""
    e_n, q_n, w_n, t = 6, 5, 5, 8
    dists = _rand_dists(2, e_n, q_n, w_n * t, t, seed=21, dtype=dtype).reshape(2, e_n, q_n, w_n, t, t)
    weights = _rand_dists(e_n, q_n, w_n, 1, 1, seed=22, dtype=dtype)[..., 0, 0]  # a loss that mixes pairs
    batched = dists.clone().requires_grad_()
    value = otam_from_dists(batched, 0.5).sum(dim=0)  # [E, Q, W]
    (grad,) = torch.autograd.grad((value * weights).sum(), batched)
    for e in range(e_n):
        one = dists[:, e].clone().requires_grad_()
        v = otam_from_dists(one, 0.5).sum(dim=0)  # [Q, W]
        (g,) = torch.autograd.grad((v * weights[e]).sum(), one)
        torch.testing.assert_close(value[e].detach(), v, atol=0, rtol=0)
        torch.testing.assert_close(grad[:, e], g, atol=0, rtol=0)


def test_otam_distance_over_a_batch_of_episodes():
    """otam_distance on [E, Q, T, D] x [E, W, T, D] equals the per-episode calls, gradients too."""
    q = _frames(4, 5, 8, 16, seed=23).requires_grad_()  # [E, Q, T, D]
    s = _frames(4, 5, 8, 16, seed=24).requires_grad_()  # [E, W, T, D]
    batched = otam_distance(q, s)  # [E, Q, W]
    gq, gs = torch.autograd.grad(batched.sum(), (q, s))
    for e in range(4):
        qe, se = q[e].detach().requires_grad_(), s[e].detach().requires_grad_()
        one = otam_distance(qe, se)
        gqe, gse = torch.autograd.grad(one.sum(), (qe, se))
        torch.testing.assert_close(batched[e].detach(), one.detach())
        torch.testing.assert_close(gq[e], gqe)
        torch.testing.assert_close(gs[e], gse)


def test_otam_distance_gradients_flow():
    q = _frames(2, 4, 6, seed=4).double().requires_grad_()
    s = _frames(3, 4, 6, seed=5).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: otam_distance(a, b, lbda=0.3), (q, s))
    gq, gs = torch.autograd.grad(otam_distance(q, s).sum(), (q, s))
    for g in (gq, gs):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_frame_cosine_and_leading_dims():
    q, s = _frames(2, 3, 5, 8, seed=6), _frames(2, 4, 6, 8, seed=7)  # [E, Q, T, D], [E, S, T, D]
    cos = frame_cosine(q, s)
    assert cos.shape == (2, 3, 4, 5, 6)
    e, i, j, a, b = 1, 2, 3, 4, 5
    expected = torch.nn.functional.cosine_similarity(q[e, i, a], s[e, j, b], dim=0)
    assert cos[e, i, j, a, b].item() == pytest.approx(expected.item(), abs=1e-6)
    per_episode = torch.stack([otam_distance(q[k], s[k]) for k in range(2)])
    torch.testing.assert_close(otam_distance(q, s), per_episode)


def test_mean_pool_similarity_by_hand():
    q = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # mean (1, 1)
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[3.0, 3.0], [1.0, 1.0]]])  # means (1, 0), (2, 2)
    torch.testing.assert_close(mean_pool_similarity(q, s), torch.tensor([[math.sqrt(0.5), 1.0]]))


# ---------------------------------------------------------------------------------------------
# Bi-MHM


def test_bimhm_identical_is_minimal():
    video = _frames(1, 8, 32, seed=8)
    others = _frames(6, 8, 32, seed=9)
    assert bimhm_distance(video, video).item() == pytest.approx(0.0, abs=1e-5)
    assert (bimhm_distance(video, others) > 0.1).all()


def test_bimhm_known_example():
    # q = (e0, e1), s = (e0, (e1 + e2)/√2): D = [[0, 1], [1, 1 - 1/√2]].
    # Row minima 0 and 1 - 1/√2, column minima the same: d = 2 - √2.
    q = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    s = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    assert bimhm_distance(q, s).item() == pytest.approx(2 - math.sqrt(2), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# TRX


def _trx_params(dim: int, proj: int, set_sizes=(2, 3)) -> int:
    """Per ω: key and value maps (ω·dim -> proj, with bias) and the key LayerNorm."""
    return sum(2 * (w * dim * proj + proj) + 2 * proj for w in set_sizes)


@pytest.mark.parametrize(
    "dim,proj,set_sizes", [(16, 24, (2, 3)), (32, 8, (1, 2, 3)), (8, 12, (2,))]
)
def test_trx_trainable_parameter_count(dim, proj, set_sizes):
    head = TRX(dim, frames=5, set_sizes=set_sizes, proj_dim=proj)
    count = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert count == _trx_params(dim, proj, set_sizes)


def test_trx_parameter_count_at_clip_width():
    head = TRX(512, frames=8)
    assert sum(p.numel() for p in head.parameters()) == 5_907_456 == _trx_params(512, 1152)


def test_trx_shapes_and_gradients():
    torch.manual_seed(0)
    head = TRX(16, frames=6, proj_dim=24)
    support = _frames(7, 6, 16, seed=10).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])  # uneven shots
    query = _frames(4, 6, 16, seed=11)
    logits = head(support, labels, query, ways=3)
    assert logits.shape == (4, 3)
    assert torch.isfinite(logits).all() and (logits <= 0).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert support.grad.abs().sum() > 0


def test_trx_relabelling_permutes_logits():
    torch.manual_seed(0)
    head = TRX(16, frames=5, proj_dim=12).eval()
    support, query = _frames(6, 5, 16, seed=12), _frames(3, 5, 16, seed=13)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    perm = torch.tensor([2, 0, 1])  # class c becomes perm[c]
    order = torch.tensor([5, 2, 0, 3, 1, 4])  # shuffled support order
    logits = head(support, labels, query, ways=3)
    relabelled = head(support[order], perm[labels][order], query, ways=3)
    torch.testing.assert_close(relabelled[:, perm], logits, atol=1e-5, rtol=1e-5)


def test_trx_rejects_bad_inputs():
    head = TRX(8, frames=4, proj_dim=8)
    support, query = _frames(2, 4, 8, seed=0), _frames(1, 4, 8, seed=1)
    with pytest.raises(InputError, match="no support"):
        head(support, torch.tensor([0, 0]), query, ways=2)
    with pytest.raises(InputError, match="frames"):
        head(_frames(2, 5, 8, seed=0), torch.tensor([0, 1]), query, ways=2)
    with pytest.raises(InputError, match="set_sizes"):
        TRX(8, frames=4, set_sizes=(5,))


# ---------------------------------------------------------------------------------------------
# Prototype scoring


@pytest.mark.parametrize("name", list(SIMILARITIES))
def test_every_registry_entry_is_its_papers_distance_as_a_score(name):
    """Each entry's torch form is minus its defining distance (or the pooled cosine), on centred
    frames when the entry says so; its unit-frame form gives the same numbers."""
    sim = SIMILARITIES[name]
    q, s = _frames(2, 4, 8, seed=14), _frames(3, 4, 8, seed=15)
    assert sim.name == name and sim.origin and sim.summary
    if sim.pooled:
        torch.testing.assert_close(sim(q, s), mean_pool_similarity(q, s))
        return
    fq, fs = (metrics.centred_frames(q), metrics.centred_frames(s)) if sim.centred else (q, s)
    dist = {"otam": otam_distance, "bimhm": bimhm_distance}[sim.kernel]
    torch.testing.assert_close(sim(q, s), -dist(fq, fs))
    torch.testing.assert_close(sim.on_unit_frames(F.normalize(q, dim=-1), F.normalize(s, dim=-1)), sim(q, s))


def test_registry_entries_only_from_the_papers_or_named_as_clipcaches():
    """Help texts name where each metric comes from; clipcache's own variants say so."""
    for sim in SIMILARITIES.values():
        assert "methods.md" in sim.origin or "clipcache's variant" in sim.origin, sim
        assert sim.origin in sim.help


@pytest.mark.parametrize("metric", list(SIMILARITIES))
def test_each_entry_builds_its_prototypes_from_the_shots(metric):
    """Temporal entries: the per-frame mean of the raw shots (merged before the metric, not the
    mean of per-shot scores); pooled ones: the re-normalised mean of the shots' unit vectors."""
    sim = SIMILARITIES[metric]
    support = _frames(6, 4, 8, seed=16).view(3, 2, 4, 8)  # [W, K, T, D]
    support[:, 0] *= 7  # shots of different norms
    query = _frames(5, 4, 8, seed=17)
    protos = sim.prototypes(support)
    if sim.pooled:
        unit = F.normalize(F.normalize(support.mean(dim=2), dim=-1).mean(dim=1), dim=-1)  # [W, D]
        torch.testing.assert_close(protos, unit[:, None])
        return
    torch.testing.assert_close(protos, support.mean(dim=1))
    scores = sim(query, protos)  # [Q, W]
    per_shot = sim(query, support.flatten(0, 1)).view(5, 3, 2).mean(dim=2)  # [Q, W]
    assert not torch.allclose(scores, per_shot)


def test_unknown_metric_and_missing_class_are_user_errors():
    with pytest.raises(InputError, match="bimhm"):
        similarity.get("dtw")
    with pytest.raises(InputError, match="0..1"):
        metrics.check_support_labels(torch.tensor([0, 2]), ways=2)
    with pytest.raises(InputError, match="at least one shot"):
        SIMILARITIES["otam"].prototypes(torch.zeros(2, 0, 4, 8))


def test_otam_entries_carry_the_papers_lambda():
    assert {s.lbda for s in SIMILARITIES.values() if s.kernel == "otam"} == {metrics.OTAM_LAMBDA}

"""Inference reusing TPCM's output per video (RowMemo) gives the numbers of computing every row,
in a validation and across calls, and computes each distinct video once."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from cachekit.encoder import ModelInfo
from cachekit.layers.tpcm import RowMemo, TPCMHead
from cachekit.methods import build_method

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ModelInfo(embed_dim=32, width=48, layers=2, heads=2, grid=(7, 7), image_size=224, text_width=32)


def test_row_memo_computes_each_distinct_row_once():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x.sum(dim=-1, keepdim=True) * 2  # [M, T, 1]

    memo = RowMemo()
    base = torch.randn(5, 3, 4)
    first = base[torch.tensor([0, 1, 1, 2, 0])]
    torch.testing.assert_close(memo.rows(first, fn), fn(first), rtol=0, atol=0)
    assert calls[0] == 3  # rows 0, 1, 2
    second = base[torch.tensor([4, 2, 3, 4])]
    torch.testing.assert_close(memo.rows(second, fn), fn(second), rtol=0, atol=0)
    assert calls[2] == 2  # rows 4 and 3 are new, 2 was kept
    # a row equal to a kept one on the probed values only: computed, not looked up
    near = base[2:3].clone()
    near[0, 1, 1] += 1.0  # not a probed position (8 probes over 12 values miss this one)
    probed = torch.linspace(0, 11, 8).long().tolist()
    assert 1 * 4 + 1 not in probed
    torch.testing.assert_close(memo.rows(near, fn), fn(near), rtol=0, atol=0)


@pytest.mark.parametrize("metric", ["otam", "mean"])
def test_tpcm_inference_reuses_videos_with_the_same_logits(metric):
    """In inference each distinct video goes through TPCM once per scope; the logits are those of
    computing every row (float rounding of other matrix sizes aside)."""
    torch.manual_seed(0)
    head = TPCMHead(32, 8, metric=metric, ffn_dim=64).eval()
    g = torch.Generator().manual_seed(1)
    videos = torch.randn(7, 8, 32, generator=g)
    text = torch.randn(3, 5, 4, 32, generator=g)  # [E, W, P, D]
    labels = torch.arange(5).expand(3, -1)
    rows = []
    head.tpcm.layer.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]) if
                                          not torch.is_grad_enabled() else None)
    pairs, queries = set(), set()  # a support's output reads its frames and its class's text
    with head.reusing_videos():
        for call in range(3):
            pick = torch.randint(7, (2, 3, 5), generator=g)
            sup, qry = videos[pick[0]], videos[pick[1]]  # [E, W, T, D] each, videos drawn again and again
            pairs |= {(v, e, w) for (e, w), v in np.ndenumerate(pick[0].numpy())}
            queries |= set(pick[1].flatten().tolist())
            with torch.enable_grad():  # with gradients: every row through TPCM, no reuse
                _, want = head(sup, qry, labels, None, text)
            with torch.no_grad():
                _, got = head(sup, qry, labels, None, text)
            torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    assert sum(rows) == len(pairs) + len(queries) < 2 * 3 * 3 * 5  # each distinct one once
    # the scope is over: new weights (a training step) give new outputs, nothing reused
    with torch.no_grad():
        for p in head.tpcm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        rows.clear()
        _, after = head(sup, qry, labels, None, text)
    assert sum(rows) > 0
    with torch.enable_grad():
        _, want = head(sup, qry, labels, None, text)
    torch.testing.assert_close(after, want.detach(), rtol=1e-5, atol=1e-5)


def test_validation_accuracy_is_the_same_with_and_without_reuse():
    from cachekit.episodes import EpisodeBatcher
    from cachekit.resident import ResidentFeatures, episodic_accuracy
    from cachekit.methods.base import CacheNeeds

    class Data:  # what ResidentFeatures.load reads: 6 classes x 4 videos, one view
        needs = CacheNeeds(emb=True, text=True)
        device, views, cache, cls = torch.device("cpu"), 1, None, None
        labels = torch.arange(6).repeat_interleave(4)
        rows = torch.arange(24)  # cache index -> row of emb (CacheData.rows)
        emb = torch.randn(24, 1, 8, 32, generator=torch.Generator().manual_seed(2))
        text = torch.randn(6, 3, 32, generator=torch.Generator().manual_seed(3))

    torch.manual_seed(0)
    m = build_method("ma_fsar", {"ffn_dim": 64}, SMALL, 8).eval()
    feats = ResidentFeatures.load(Data, np.arange(24))
    index = EpisodeBatcher(Data.labels.numpy(), np.arange(24), 5, 1, 1, 100, seed=0).sample(0)
    with torch.no_grad():
        reused = episodic_accuracy(m, feats, index, 16)
        m.reusing_videos = contextlib.nullcontext
        per_chunk = episodic_accuracy(m, feats, index, 16)
        with torch.enable_grad():
            every = episodic_accuracy(m, feats, index, 16)
    np.testing.assert_array_equal(reused, every)
    np.testing.assert_array_equal(per_chunk, every)

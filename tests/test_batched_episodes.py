"""Several episodes per step: the index-array batcher, and every from-cache method on a batch of
episodes [E, W*K, T, D] against the same episodes one by one (values and gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cachekit.encoder import ModelInfo
from cachekit.episodes import EpisodeBatcher, EpisodeIndex, EpisodeSampler
from cachekit.errors import InputError
from cachekit.methods import build_method
from cachekit.methods.base import Episode, EpisodeBatch, VideoBatch
from cachekit.similarity import SIMILARITIES

SMALL = ModelInfo(embed_dim=32, width=48, layers=2, heads=2, grid=(7, 7), image_size=224, text_width=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny heads: one thread (conftest)


# ------------------------------------------------------------------ the batcher
def _labels(classes=12, per_class=7, short=(3,)):
    """Video labels [V]: ``per_class`` videos per class, 2 for the classes in ``short``."""
    counts = [2 if c in short else per_class for c in range(classes)]
    return np.repeat(np.arange(classes), counts)


def test_batcher_draws_valid_reproducible_episodes():
    labels = _labels()
    pool = np.arange(labels.size)
    b = EpisodeBatcher(labels, pool, ways=5, shots=2, queries=3, episodes_per_step=16, seed=4, split_name="train")
    idx = b.sample(7)
    assert isinstance(idx, EpisodeIndex) and len(idx) == 16
    assert idx.class_ids.shape == (16, 5) and idx.support.shape == (16, 5, 2) and idx.query.shape == (16, 5, 3)
    assert idx.support_views is None
    for e in range(16):
        assert len(set(idx.class_ids[e].tolist())) == 5  # distinct classes
        assert 3 not in idx.class_ids[e]  # 2 videos < K + Q: never drawn, as EpisodeSampler says
        for w in range(5):
            vids = np.concatenate([idx.support[e, w], idx.query[e, w]])
            assert len(set(vids.tolist())) == 5  # K + Q distinct videos, support and query disjoint
            assert (labels[vids] == idx.class_ids[e, w]).all()
    assert b.notes == EpisodeSampler(labels, pool, 5, 2, 3, 4, "train").notes and b.notes
    again = EpisodeBatcher(labels, pool, 5, 2, 3, 16, seed=4).sample(7)
    for a, c in zip((idx.class_ids, idx.support, idx.query), (again.class_ids, again.support, again.query)):
        np.testing.assert_array_equal(a, c)
    other = b.sample(8)
    assert not np.array_equal(other.support, idx.support)
    part = b.sample(7, episodes=3)  # a last, partial step: a prefix of the full one
    np.testing.assert_array_equal(part.support, idx.support[:3])
    np.testing.assert_array_equal(part.class_ids, idx.class_ids[:3])
    spec = idx.specs()[2]
    assert spec.class_ids == tuple(idx.class_ids[2].tolist()) and spec.support[1] == tuple(idx.support[2, 1].tolist())


def test_batcher_covers_classes_and_videos_uniformly_and_draws_views():
    labels = _labels(classes=6, per_class=4, short=())
    b = EpisodeBatcher(labels, np.arange(labels.size), ways=2, shots=1, queries=1, episodes_per_step=600,
                       seed=0, views=3)
    idx = b.sample(0)
    first = np.bincount(idx.class_ids[:, 0], minlength=6)  # label 0's class: uniform over 6
    assert first.min() > 60 and first.max() < 140
    shots = np.bincount(idx.support.ravel(), minlength=labels.size)
    assert shots.min() > 20  # every video is drawn as a shot
    assert idx.support_views.shape == (600, 2) and idx.query_views.shape == (600, 2)
    assert set(np.unique(idx.support_views)) == {0, 1, 2}


def test_batcher_rejects_bad_counts():
    labels = _labels()
    with pytest.raises(InputError, match="episodes_per_step"):
        EpisodeBatcher(labels, np.arange(labels.size), 5, 1, 1, episodes_per_step=0)
    with pytest.raises(InputError, match="needs 13 classes"):
        EpisodeBatcher(labels, np.arange(labels.size), 13, 1, 1)


def test_episode_index_of_specs_round_trips():
    labels = _labels()
    specs = EpisodeSampler(labels, np.arange(labels.size), 4, 1, 2, seed=1).sample(5)
    idx = EpisodeIndex.of(specs)
    assert idx.specs() == specs
    assert idx[1:3].specs() == specs[1:3]


# ------------------------------------------------------------------ methods on a batch
def _batch(e_n=4, ways=3, shots=2, queries=2, frames=8, dim=32, templates=4, seed=0) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    s, q = ways * shots, ways * queries
    lab = torch.arange(ways)

    def videos(n):
        return VideoBatch(index=torch.arange(e_n * n).view(e_n, n), labels=torch.zeros(e_n, n, dtype=torch.long),
                          emb=torch.randn(e_n, n, frames, dim, generator=g))

    return EpisodeBatch(support=videos(s), query=videos(q),
                        support_labels=lab.repeat_interleave(shots).expand(e_n, -1),
                        query_labels=lab.repeat_interleave(queries).expand(e_n, -1),
                        class_ids=torch.arange(e_n * ways).view(e_n, ways),
                        text=torch.randn(e_n, ways, templates, dim, generator=g))


# every metric of the registry, for each method that takes one (ma_fsar also its trainable TRX)
CASES = [*(("ma_fsar", {"metric": m}) for m in (*SIMILARITIES, "trx")), ("ma_fsar", {"alpha": 0.0}),
         ("clip_fsar", {}), ("clip_fsar", {"merge_before": True}), ("clip_fsar", {"combine": True}),
         ("clip_fsar", {"class_loss_on": "encoder"}), *(("proto", {"metric": m}) for m in SIMILARITIES)]


def _build(name, opts):
    torch.manual_seed(0)
    small = {"ffn_dim": 64} if name in ("ma_fsar", "clip_fsar") else {}
    return build_method(name, {**small, **opts}, SMALL, 8)


@pytest.mark.parametrize("name,opts", CASES)
def test_a_batch_of_episodes_equals_the_episodes_one_by_one(name, opts):
    """Deterministic mode (no dropout, template mean): the batch's logits are each episode's,
    its loss is their mean and its gradients are the mean of theirs."""
    m = _build(name, opts).eval()
    assert m.batched_training
    batch = _batch()
    loss, logits = m.episode_batch_loss(batch)
    assert logits.shape == (4, 6, 3)
    params = m.trainable_parameters()
    grads = torch.autograd.grad(loss, params) if params else ()
    singles = [m.episode_loss(batch.episode(e)) for e in range(len(batch))]
    for e, (l_e, lg_e) in enumerate(singles):
        torch.testing.assert_close(logits[e], lg_e, rtol=1e-5, atol=1e-5)
    mean = torch.stack([l for l, _ in singles]).mean()
    torch.testing.assert_close(loss, mean, rtol=1e-5, atol=1e-6)
    if params:
        want = torch.autograd.grad(mean, params)
        for g, w in zip(grads, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # prediction logits (CLIP-FSAR's combine fuses them; the loss does not)
        want = torch.stack([m.episode_logits(batch.episode(e)) for e in range(len(batch))])
        torch.testing.assert_close(m.episode_batch_logits(batch), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,opts", [c for c in CASES if c[0] != "proto"])
def test_one_episode_is_a_batch_of_one_bit_for_bit_while_training(name, opts):
    """Training mode (dropout, random templates): an episode and the batch E = 1 holding it draw
    the same random numbers and give the same loss, logits and gradients."""
    m = _build(name, opts).train()
    batch = _batch(e_n=1)
    torch.manual_seed(11)
    loss, logits = m.episode_batch_loss(batch)
    g_batch = torch.autograd.grad(loss, m.trainable_parameters())
    torch.manual_seed(11)
    loss1, logits1 = m.episode_loss(batch.episode(0))
    g_one = torch.autograd.grad(loss1, m.trainable_parameters())
    assert torch.equal(loss, loss1) and torch.equal(logits[0], logits1)
    for a, b in zip(g_batch, g_one):
        assert torch.equal(a, b)


def test_default_batch_path_loops_over_episode_loss():
    """The base class's default, for methods without a batched forward: the mean of
    episode_loss over the batch's episodes, and their logits stacked."""
    from cachekit.methods.base import Method

    m = _build("ma_fsar", {}).eval()
    batch = _batch(e_n=3)
    loss, logits = Method.episode_batch_loss(m, batch)
    want = torch.stack([m.episode_loss(batch.episode(e))[0] for e in range(3)]).mean()
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    torch.testing.assert_close(Method.episode_batch_logits(m, batch), logits, rtol=0, atol=0)


def test_batch_of_one_from_an_episode_views_its_tensors():
    ep = _batch(e_n=1).episode(0)
    assert isinstance(ep, Episode) and ep.support.emb.shape == (6, 8, 32)
    back = EpisodeBatch.of(ep)
    assert back.support.emb.shape == (1, 6, 8, 32) and back.text.shape == (1, 3, 4, 32)
    assert back.support.emb.data_ptr() == ep.support.emb.data_ptr()


def test_linear_probe_takes_episode_axes():
    m = _build("linear_probe", {})
    text = torch.randn(5, 2, 32)
    emb = torch.randn(3, 4, 8, 32)  # [E, B, T, D']
    flat = m.video_logits(VideoBatch(index=torch.arange(12), labels=torch.zeros(12, dtype=torch.long),
                                     emb=emb.flatten(0, 1)), text)  # [E*B, C]
    out = m.video_logits(VideoBatch(index=torch.arange(12).view(3, 4), labels=torch.zeros(3, 4, dtype=torch.long),
                                    emb=emb), text)
    assert out.shape == (3, 4, 5)
    torch.testing.assert_close(out.flatten(0, 1), flat)

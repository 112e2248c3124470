"""The no-training baselines: frozen CLIP zero-shot and support prototypes, against hand computations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from cachekit.similarity import SIMILARITIES
from cachekit.encoder import ModelInfo
from cachekit.errors import InputError
from cachekit.methods import build_method, make_config, method_module
from cachekit.methods.base import Episode, VideoBatch
from cachekit.methods.proto import Config as ProtoConfig, Proto
from cachekit.methods.zeroshot import Config as ZeroConfig, ZeroShot

T, D = 4, 12
INFO = ModelInfo(embed_dim=D, width=8, layers=2, heads=2, grid=(2, 2), image_size=32, text_width=8)


def batch(emb: torch.Tensor, labels=None) -> VideoBatch:
    n = emb.shape[0]
    lab = torch.full((n,), -1) if labels is None else torch.as_tensor(labels)
    return VideoBatch(index=torch.arange(n), labels=lab, emb=emb)


def episode(support: torch.Tensor, query: torch.Tensor, ways: int, text=None) -> Episode:
    """support [W, K, T, D], query [W, Q, T, D] -> class-major Episode."""
    k, q = support.shape[1], query.shape[1]
    return Episode(support=batch(support.flatten(0, 1)), query=batch(query.flatten(0, 1)),
                   support_labels=torch.arange(ways).repeat_interleave(k),
                   query_labels=torch.arange(ways).repeat_interleave(q),
                   class_ids=torch.arange(ways), text=text)


def one_hot_videos(classes, per_class, noise, gen):
    """[len(classes), per_class, T, D]: class c's frames = e_c + noise."""
    e = torch.eye(D)[torch.as_tensor(classes)]  # [W, D]
    return e[:, None, None, :] + noise * torch.randn(len(classes), per_class, T, D, generator=gen)


# ------------------------------------------------------------------------------ registry
def test_registered_and_parameter_free():
    for name, cls in (("zeroshot", ZeroShot), ("proto", Proto)):
        mod = method_module(name)
        assert isinstance(mod.DESCRIPTION, str) and mod.DESCRIPTION
        assert dataclasses.is_dataclass(mod.Config) and mod.Config.__dataclass_params__.frozen
        m = build_method(name, None, INFO, T)
        assert isinstance(m, cls) and m.num_trainable() == 0 and not m.needs_backbone
        assert m.trainable_state_dict() == {}
    assert build_method("zeroshot", None, INFO, T).display_name == "Frozen CLIP zero-shot"
    assert build_method("zeroshot", None, INFO, T).needs.text
    assert not build_method("proto", None, INFO, T).needs.text
    assert build_method("proto", {"metric": "bimhm"}, INFO, T).cfg.metric == "bimhm"
    assert ProtoConfig().metric == "mean" and ZeroConfig().template is None


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="no option"):
        make_config("proto", {"metrc": "otam"})
    with pytest.raises(InputError, match="unknown"):
        ProtoConfig(metric="cosine")
    with pytest.raises(InputError, match="template index"):
        ZeroConfig(template=-1)
    z = ZeroShot(ZeroConfig(template=3), INFO, T)
    with pytest.raises(InputError, match="caches 2 template"):
        z.video_logits(batch(torch.randn(2, T, D)), torch.randn(4, 2, D))


# ------------------------------------------------------------------------------ zero-shot
def test_zeroshot_is_the_cosine_of_the_pooled_video_to_the_class_text():
    g = torch.Generator().manual_seed(0)
    emb, text = torch.randn(6, T, D, generator=g), torch.randn(5, 3, D, generator=g)  # [B, T, D], [C, P, D]
    logits = ZeroShot(ZeroConfig(), INFO, T).video_logits(batch(emb), text)
    v = emb.mean(1)
    c = text.mean(1)  # mean of the raw template outputs, then normalised
    hand = 100 * torch.stack([torch.stack([F.cosine_similarity(v[b], c[k], dim=0) for k in range(5)])
                              for b in range(6)])
    torch.testing.assert_close(logits, hand)
    one = ZeroShot(ZeroConfig(template=2, logit_scale=1.0), INFO, T).video_logits(batch(emb), text)
    torch.testing.assert_close(one, F.normalize(v, dim=-1) @ F.normalize(text[:, 2], dim=-1).t())


def test_zeroshot_template_choice_matters_when_templates_disagree():
    # template 0 = the class direction; template 1 (larger) = the next class's direction
    e = torch.eye(D)[:4]
    text = torch.stack([e, 3 * torch.roll(e, 1, dims=0)], dim=1)  # [C, 2, D]
    emb = e[:, None, :].repeat(1, T, 1)  # one video per class
    pred0 = ZeroShot(ZeroConfig(template=0), INFO, T).video_logits(batch(emb), text).argmax(-1)
    pred_mean = ZeroShot(ZeroConfig(), INFO, T).video_logits(batch(emb), text).argmax(-1)
    assert pred0.tolist() == [0, 1, 2, 3]
    assert pred_mean.tolist() == [1, 2, 3, 0]


def test_zeroshot_episodes_text_equals_class_direction_gives_100_percent():
    g = torch.Generator().manual_seed(1)
    z = ZeroShot(ZeroConfig(), INFO, T)
    classes = [3, 7, 1, 9, 5]
    query = one_hot_videos(classes, 2, 0.1, g)  # [W, Q, T, D]
    text = torch.eye(D)[classes][:, None, :].repeat(1, 4, 1)  # [W, P, D]
    ep = episode(query[:, :0], query, 5, text=text)  # query-only (5-way zero-shot)
    logits = z.episode_logits(ep)
    assert (logits.argmax(-1) == ep.query_labels).all()
    # the batched form: 3 episodes over a table of the 10 query videos, classes in other orders
    emb = query.flatten(0, 1)  # [10, T, D]: table rows
    all_text = torch.eye(D)[:, None, :].repeat(1, 4, 1)  # [C=D, P, D]: text of class c = e_c
    perms = [torch.tensor(p) for p in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3])]
    class_ids = torch.stack([torch.tensor(classes)[p] for p in perms])  # [E, W]
    query_idx = torch.stack([torch.arange(10).view(5, 2)[p] for p in perms])  # [E, W, Q]
    batched = z.episodes_logits(emb, all_text, class_ids, torch.zeros(3, 5, 0, dtype=torch.long), query_idx)
    assert batched.shape == (3, 10, 5)
    for e, p in enumerate(perms):
        ep = episode(query[p, :0], query[p], 5, text=text[p])
        torch.testing.assert_close(batched[e], z.episode_logits(ep))
        assert (batched[e].argmax(-1) == ep.query_labels).all()


# ------------------------------------------------------------------------------ prototypes
@pytest.mark.parametrize("metric", [n for n, e in SIMILARITIES.items() if not e.centred])  # static classes
def test_one_hot_classes_plus_noise_are_solved(metric):
    g = torch.Generator().manual_seed(2)
    p = Proto(ProtoConfig(metric=metric), INFO, T)
    classes = [0, 4, 8, 2, 6]
    support, query = one_hot_videos(classes, 3, 0.2, g), one_hot_videos(classes, 4, 0.2, g)
    ep = episode(support, query, 5)
    assert (p.episode_logits(ep).argmax(-1) == ep.query_labels).all()


def test_mean_prototype_follows_the_pooled_normalised_recipe():
    g = torch.Generator().manual_seed(3)
    support, query = torch.randn(3, 2, T, D, generator=g), torch.randn(3, 2, T, D, generator=g)
    # shots of very different norms: the recipe normalises each shot's pooled vector first
    support[:, 0] *= 10
    logits = Proto(ProtoConfig(metric="mean", logit_scale=1.0), INFO, T).episode_logits(episode(support, query, 3))
    sv = F.normalize(support.mean(2), dim=-1)  # [W, K, D]
    proto = F.normalize(sv.mean(1), dim=-1)  # [W, D]
    qv = F.normalize(query.flatten(0, 1).mean(1), dim=-1)  # [W*Q, D]
    torch.testing.assert_close(logits, qv @ proto.t())


@pytest.mark.parametrize("metric", [n for n, e in SIMILARITIES.items() if not e.pooled])
def test_temporal_prototype_is_the_per_frame_mean_of_the_shots(metric):
    """Proto's unit-frame path (one matmul per table) equals the registry's plain torch form on
    the per-frame mean of the shots."""
    g = torch.Generator().manual_seed(4)
    support, query = torch.randn(4, 3, T, D, generator=g), torch.randn(4, 2, T, D, generator=g)
    logits = Proto(ProtoConfig(metric=metric), INFO, T).episode_logits(episode(support, query, 4))
    proto = support.mean(1)  # [W, T, D]
    torch.testing.assert_close(logits, SIMILARITIES[metric](query.flatten(0, 1), proto))
    # K = 1: the prototype is the shot
    one = Proto(ProtoConfig(metric=metric), INFO, T).episode_logits(episode(support[:, :1], query, 4))
    torch.testing.assert_close(one, SIMILARITIES[metric](query.flatten(0, 1), support[:, 0]))


@pytest.mark.parametrize("metric", list(SIMILARITIES))
@pytest.mark.parametrize("shots", [1, 3])
def test_batched_episodes_equal_episode_by_episode(metric, shots):
    g = torch.Generator().manual_seed(5)
    p = Proto(ProtoConfig(metric=metric), INFO, T)
    v_n, e_n, w, q = 30, 6, 4, 2
    emb = torch.randn(v_n, T, D, generator=g) * torch.rand(v_n, 1, 1, generator=g) * 5  # varied norms
    idx = torch.stack([torch.randperm(v_n, generator=g)[: w * (shots + q)] for _ in range(e_n)])
    idx = idx.view(e_n, w, shots + q)
    support, query = idx[..., :shots], idx[..., shots:]  # [E, W, K], [E, W, Q]
    batched = p.episodes_logits(emb, None, torch.zeros(e_n, w, dtype=torch.long), support, query)
    assert batched.shape == (e_n, w * q, w)
    for e in range(e_n):
        one = p.episode_logits(episode(emb[support[e]], emb[query[e]], w))
        torch.testing.assert_close(batched[e], one)
        if not SIMILARITIES[metric].pooled:  # and the registry's plain torch form
            want = SIMILARITIES[metric](emb[query[e]].flatten(0, 1), emb[support[e]].mean(1))
            torch.testing.assert_close(one, want)


@pytest.mark.parametrize("metric", list(SIMILARITIES))
def test_fit_support_then_video_logits_matches_episode_scoring(metric):
    g = torch.Generator().manual_seed(6)
    p = Proto(ProtoConfig(metric=metric), INFO, T)
    support, query = torch.randn(4, 2, T, D, generator=g), torch.randn(4, 3, T, D, generator=g)
    global_ids = [11, 3, 7, 5]  # prototypes are kept in the order given
    labels = torch.tensor(global_ids).repeat_interleave(2)
    p.fit_support(support.flatten(0, 1), labels, global_ids)
    logits = p.video_logits(batch(query.flatten(0, 1)), torch.zeros(4, 0, D))
    torch.testing.assert_close(logits, p.episode_logits(episode(support, query, 4)))
    with pytest.raises(InputError, match="fitted on 4 classes"):
        p.video_logits(batch(query.flatten(0, 1)), torch.zeros(5, 0, D))
    with pytest.raises(InputError, match="no training video"):
        p.fit_support(support.flatten(0, 1), labels, [11, 3, 99])
    with pytest.raises(InputError, match="call fit_support"):
        Proto(ProtoConfig(), INFO, T).video_logits(batch(query.flatten(0, 1)), torch.zeros(4, 0, D))


def test_prototypes_need_shots():
    p = Proto(ProtoConfig(), INFO, T)
    with pytest.raises(InputError, match="at least one shot"):
        p.episodes_logits(torch.randn(9, T, D), None, torch.zeros(2, 5, dtype=torch.long),
                          torch.zeros(2, 5, 0, dtype=torch.long), torch.zeros(2, 5, 1, dtype=torch.long))


def test_normalised_table_is_reused_only_while_unchanged():
    g = torch.Generator().manual_seed(7)
    p = Proto(ProtoConfig(metric="otam"), INFO, T)
    emb = torch.randn(12, T, D, generator=g)
    cls = torch.zeros(1, 3, dtype=torch.long)
    support, query = torch.arange(3).view(1, 3, 1), torch.arange(3, 9).view(1, 3, 2)
    first = p.episodes_logits(emb, None, cls, support, query)
    torch.testing.assert_close(p.episodes_logits(emb, None, cls, support, query), first)
    emb[3:9] = emb[0:3].repeat_interleave(2, dim=0)  # in place: every query becomes its class's shot
    after = p.episodes_logits(emb, None, cls, support, query)
    assert (after.argmax(-1) == torch.arange(3).repeat_interleave(2)).all()
    torch.testing.assert_close(after[0], p.episode_logits(episode(emb[support[0]], emb[query[0]], 3)))

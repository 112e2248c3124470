"""Methods trained from the cache (ma_fsar tpcm, clip_fsar, linear_probe): parameter counts against
the papers, gradients, the MA-FSAR equations, order sensitivity, options, and `clipcache methods`."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cachekit.encoder import ModelInfo
from cachekit.errors import InputError
from cachekit.methods import METHODS, build_method, make_config
from cachekit.methods.base import Episode, VideoBatch
from cachekit.layers.tpcm import TPCM, fuse_prediction, ma_fsar_loss, pick_templates, text_logits
from cachekit.methods.ma_fsar import MAFSARFrozen
from cachekit.runs import DeferredEncoder
from cachekit.options import parse_options
from cachekit.train import list_methods, model_info_for

VIT_B32 = ModelInfo(embed_dim=512, width=768, layers=12, heads=12, grid=(7, 7), image_size=224, text_width=512)
SMALL = ModelInfo(embed_dim=32, width=48, layers=2, heads=2, grid=(7, 7), image_size=224, text_width=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny heads: one thread (conftest)


def episode(ways=3, shots=1, queries=2, frames=8, dim=32, templates=4, seed=0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    s, q = ways * shots, ways * queries
    return Episode(
        support=VideoBatch(index=torch.arange(s), labels=torch.arange(s), emb=torch.randn(s, frames, dim, generator=g)),
        query=VideoBatch(index=torch.arange(q), labels=torch.arange(q), emb=torch.randn(q, frames, dim, generator=g)),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_ids=torch.arange(ways),
        text=torch.randn(ways, templates, dim, generator=g),
    )


# ------------------------------------------------------------------ parameter counts
def test_model_info_for_vit_b32_needs_no_weights():
    assert model_info_for("ViT-B-32") == VIT_B32


def test_model_info_for_matches_the_built_encoder(tiny_cfg):
    from cachekit.encoder import EncoderConfig, load_clip

    enc = load_clip(EncoderConfig(model=tiny_cfg, pretrained="random", device="cpu"))
    assert model_info_for(tiny_cfg) == enc.info


def test_tpcm_trainable_count_is_the_papers_3_15m():
    """MA-FSAR Table 4 / text: frozen CLIP + TPCM has 3.15M tunable parameters (ViT-B/32, D' = 512)."""
    m = build_method("ma_fsar", {}, VIT_B32, 8)
    d, f = 512, 2048
    expected = 4 * (d * d + d) + (2 * d * f + f + d) + 2 * 2 * d  # q/k/v/out + FFN + 2 LayerNorms
    assert m.num_trainable() == expected == 3_152_384
    assert round(m.num_trainable() / 1e6, 2) == 3.15
    # Frozen row total: CLIP ViT-B/32 (151,277,313) + TPCM = 154.4M in the paper
    assert round((151_277_313 + m.num_trainable()) / 1e6, 1) == 154.4
    assert m.display_name == "MA-FSAR (TPCM only, frozen encoder)"
    assert not m.needs.backbone and m.needs.emb and m.needs.text


def test_other_cache_method_counts():
    assert build_method("clip_fsar", {}, VIT_B32, 8).num_trainable() == 3_149_824 + 1  # + class-text scale
    trx = build_method("ma_fsar", {"metric": "trx"}, VIT_B32, 8).num_trainable()
    assert trx == 3_152_384 + 5_907_456


def test_trainable_state_dict_is_exactly_the_trainables():
    m = build_method("ma_fsar", {}, SMALL, 8)
    sd = m.trainable_state_dict()
    assert sum(v.numel() for v in sd.values()) == m.num_trainable()


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name,overrides", [
    ("ma_fsar", {}), ("ma_fsar", {"metric": "trx"}), ("ma_fsar", {"metric": "bimhm", "alpha": 0.25}),
    ("clip_fsar", {}), ("clip_fsar", {"class_loss_on": "encoder", "merge_before": True}),
])
def test_every_trainable_parameter_gets_a_gradient(name, overrides):
    torch.manual_seed(0)
    m = build_method(name, {**overrides, "ffn_dim": 64}, SMALL, 8)
    loss, logits = m.episode_loss(episode(shots=2))
    assert logits.shape == (6, 3) and loss.ndim == 0
    loss.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def test_linear_probe_allway_gradients_and_text_init():
    torch.manual_seed(0)
    m = build_method("linear_probe", {}, SMALL, 8)
    assert m.protocols == ("allway",)
    batch = VideoBatch(index=torch.arange(4), labels=torch.tensor([0, 1, 2, 0]), emb=torch.randn(4, 8, 32))
    text = torch.randn(3, 5, 32)
    logits = m.video_logits(batch, text)  # materialises W [3, D'] from the text
    zero_shot = 100.0 * F.normalize(batch.emb.mean(1), dim=-1) @ F.normalize(
        F.normalize(text, dim=-1).mean(1), dim=-1).t()
    torch.testing.assert_close(logits, zero_shot)
    assert m.num_trainable() == 3 * (32 + 1)
    loss, _ = m.video_loss(batch, text)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trainable_parameters())
    fresh = build_method("linear_probe", {}, SMALL, 8)
    fresh.load_state_dict(m.trainable_state_dict())  # the lazy rows take the checkpoint's shape
    torch.testing.assert_close(fresh.video_logits(batch, text), logits)
    with pytest.raises(InputError, match="trained on 3 classes"):
        fresh.video_logits(batch, torch.randn(4, 5, 32))


# ------------------------------------------------------------------ MA-FSAR equations
def test_tpcm_support_and_query_branches_follow_eqs_9_to_12():
    torch.manual_seed(0)
    tpcm = TPCM(32, heads=4, ffn_dim=64, dropout=0.0).eval()
    feats, text = torch.randn(2, 8, 32), torch.randn(2, 32)
    layer = tpcm.layer
    q = feats + text[:, None]
    kv = torch.cat([feats, text[:, None]], 1)
    attn = torch.nn.functional.scaled_dot_product_attention(
        *(layer._split(p(layer.norm(x))) for p, x in ((layer.q_proj, q), (layer.k_proj, kv), (layer.v_proj, kv))))
    f = q + layer.out_proj(attn.transpose(1, 2).reshape(q.shape))
    f = f + layer.ffn(layer.ffn_norm(f))
    torch.testing.assert_close(tpcm.support(feats, text), f)
    torch.testing.assert_close(tpcm.query(feats), layer(feats, feats))


def test_clip_fsar_support_attends_over_frames_and_class_text():
    """Supports: the class text appended as token T+1, self-attention over T+1 tokens, first T kept."""
    m = build_method("clip_fsar", {"ffn_dim": 64}, SMALL, 8).eval()
    feats, text, query = torch.randn(3, 8, 32), torch.randn(3, 32), torch.randn(4, 8, 32)
    x = torch.cat([feats, text[:, None]], 1)
    support, q = m.transformer.joint(feats, x, query)  # both branches in one call (padded, masked keys)
    torch.testing.assert_close(support, m.transformer(x, x)[:, :8])
    torch.testing.assert_close(q, m.transformer(query, query))


def test_tpcm_both_branches_in_one_call_equal_two_calls():
    tpcm = TPCM(32, heads=4, ffn_dim=64).eval()
    feats, text, query = torch.randn(3, 8, 32), torch.randn(3, 32), torch.randn(5, 8, 32)
    support, q = tpcm.both(feats, text, query)
    torch.testing.assert_close(support, tpcm.support(feats, text))
    torch.testing.assert_close(q, tpcm.query(query))


def test_templates_random_per_video_in_training_mean_at_test():
    text = torch.arange(3 * 16 * 2, dtype=torch.float32).view(3, 16, 2)  # [W, P, D]
    torch.manual_seed(0)
    train = pick_templates(text, 50, training=True)  # [50, W, D]
    assert train.shape == (50, 3, 2)
    picked = {int(train[v, 0, 0].item()) // 2 for v in range(50)}  # template index per video
    assert len(picked) > 5  # drawn per video
    for v in range(50):  # one template per video, the same for all its classes
        p = int(train[v, 0, 0].item()) // 2
        torch.testing.assert_close(train[v], text[:, p])
    torch.testing.assert_close(pick_templates(text, 4, training=False), text.mean(1).expand(4, -1, -1))


def test_loss_and_prediction_are_eqs_16_and_17():
    g = torch.Generator().manual_seed(1)
    s2t, q2t, q2s = torch.randn(3, 3, generator=g), torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    ls, lq = torch.arange(3), torch.arange(3).repeat_interleave(2)
    for alpha in (0.0, 0.25, 0.75, 1.0):
        want = alpha * 0.5 * (F.cross_entropy(s2t, ls) + F.cross_entropy(q2t, lq)) + (1 - alpha) * F.cross_entropy(q2s, lq)
        torch.testing.assert_close(ma_fsar_loss(s2t, ls, q2t, q2s, lq, alpha), want)
        p = alpha * q2t.softmax(-1) + (1 - alpha) * q2s.softmax(-1)
        torch.testing.assert_close(fuse_prediction(q2t, q2s, alpha).exp(), p)


def test_text_branch_is_scaled_cosine_of_the_temporal_mean():
    video, text = torch.randn(2, 8, 16), torch.randn(2, 3, 16)
    want = 100 * torch.stack([F.cosine_similarity(video[b].mean(0)[None], text[b]) for b in range(2)])
    torch.testing.assert_close(text_logits(video, text, 100.0), want)


def test_alpha_one_predicts_from_text_alone():
    m = build_method("ma_fsar", {"alpha": 1.0, "ffn_dim": 64}, SMALL, 8).eval()
    ep = episode()
    want = F.log_softmax(text_logits(ep.query.emb, ep.text.mean(1).expand(6, -1, -1), 100.0), -1)
    torch.testing.assert_close(m.episode_logits(ep), want)


def test_text_check_keeps_alpha_when_the_texts_name_the_supports_and_drops_it_when_they_do_not():
    """clipcache's ``text_check``: α is updated by the Bayes factor of the text branch on the
    labelled supports against chance, never raised."""
    from cachekit.layers.tpcm import checked_alpha

    labels = torch.arange(5)[None].expand(3, -1)  # [E=3, S=5]
    right = 100 * torch.eye(5)[None].expand(3, -1, -1) * 0.1  # texts name every support
    wrong = right.roll(1, dims=-1)  # every support named as another class
    flat = torch.zeros(3, 5, 5)  # texts say nothing: chance
    torch.testing.assert_close(checked_alpha(right, labels, 0.75), torch.full((3,), 0.75))
    torch.testing.assert_close(checked_alpha(flat, labels, 0.75), torch.full((3,), 0.75))
    assert (checked_alpha(wrong, labels, 0.75) < 1e-6).all()
    # one support named right with p, the Bayes update: odds(α) · Π W·p
    s2t = torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(2))
    bf = (5 * s2t.softmax(-1)[0, torch.arange(5), torch.arange(5)]).prod()
    post = 3 * bf / (3 * bf + 1)
    torch.testing.assert_close(checked_alpha(s2t, labels[:1], 0.75), torch.clamp(post, max=0.75)[None])

    ep = episode(ways=3, shots=2)
    plain = build_method("ma_fsar", {"ffn_dim": 64, "text_check": False}, SMALL, 8).eval()  # the paper's Eq. 17
    checked = build_method("ma_fsar", {"ffn_dim": 64}, SMALL, 8).eval()  # on by default
    assert checked.head.text_check and not plain.head.text_check
    checked.head.load_state_dict(plain.head.state_dict())
    aligned = replace(ep, text=ep.support.emb.view(3, 2, 8, -1).mean((1, 2))[:, None]
                         .expand(-1, 4, -1).contiguous())  # each class text is its supports' mean: named right
    torch.testing.assert_close(checked.episode_logits(aligned), plain.episode_logits(aligned))
    shuffled = replace(aligned, text=aligned.text.roll(1, dims=0))  # every support named wrong
    alpha0 = build_method("ma_fsar", {"ffn_dim": 64, "alpha": 0.0}, SMALL, 8).eval()
    alpha0.head.load_state_dict(plain.head.state_dict())
    torch.testing.assert_close(checked.episode_logits(shuffled).exp(), alpha0.episode_logits(shuffled).exp(),
                               atol=1e-4, rtol=0)
    assert not torch.allclose(plain.episode_logits(shuffled).exp(), alpha0.episode_logits(shuffled).exp(), atol=1e-2)


# ------------------------------------------------------------------ temporal order
@pytest.mark.parametrize("name,overrides,order_sensitive", [
    ("ma_fsar", {}, True), ("ma_fsar", {"metric": "bimhm"}, False), ("ma_fsar", {"metric": "mean"}, False),
    ("ma_fsar", {"metric": "trx"}, True), ("clip_fsar", {}, True),
])
def test_reversed_queries(name, overrides, order_sensitive):
    """No positional code in TPCM: only an order-aware metric can tell a clip from its reversal."""
    torch.manual_seed(0)
    m = build_method(name, {**overrides, "ffn_dim": 64}, SMALL, 8).eval()
    ep = episode()
    rev = Episode(ep.support, VideoBatch(ep.query.index, ep.query.labels, emb=ep.query.emb.flip(1)),
                  ep.support_labels, ep.query_labels, ep.class_ids, ep.text)
    with torch.no_grad():
        same = torch.allclose(m.episode_logits(ep), m.episode_logits(rev), atol=1e-5)
    assert same != order_sensitive


# ------------------------------------------------------------------ config, build, options
def test_ma_fsar_config_fields_for_the_backbone_variant():
    cfg = make_config("ma_fsar")
    assert (cfg.modules, cfg.metric, cfg.alpha, cfg.from_block, cfg.adapter_r, cfg.adapter_ratio) == (
        "tpcm", "otam", 0.75, 0, 0.5, 0.25)
    with pytest.raises(InputError, match="metric"):
        make_config("ma_fsar", {"metric": "dtw"})
    with pytest.raises(InputError, match="alpha"):
        make_config("ma_fsar", {"alpha": 1.5})
    assert isinstance(build_method("ma_fsar", {"modules": "tpcm"}, SMALL, 8), MAFSARFrozen)


def test_ma_fsar_fgma_without_the_backbone_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "cachekit.layers.fgma", None)
    with pytest.raises(InputError, match="needs the backbone"):
        build_method("ma_fsar", {"modules": "fgma"}, SMALL, 8)


def test_cache_methods_never_load_the_backbone():
    def boom():
        raise AssertionError("the encoder was loaded")

    for name in ("ma_fsar", "clip_fsar", "linear_probe"):
        enc = DeferredEncoder(boom)
        m = build_method(name, {}, SMALL, 8, backbone=enc)
        assert not m.needs.backbone and not enc.loaded


def test_parse_options_types_values_by_the_config():
    assert parse_options("ma_fsar", ["alpha=0.25", "metric=bimhm", "q2s_scale=none", "heads=4"]) == {
        "alpha": 0.25, "metric": "bimhm", "q2s_scale": None, "heads": 4}
    assert parse_options("clip_fsar", ["merge-before=true", "class_loss_on=encoder"]) == {
        "merge_before": True, "class_loss_on": "encoder"}
    with pytest.raises(InputError, match="one of tpcm, fgma, all"):
        parse_options("ma_fsar", ["modules=everything"])
    with pytest.raises(InputError, match="has no option"):
        parse_options("ma_fsar", ["prompts=both"])
    with pytest.raises(InputError, match="key=value"):
        parse_options("ma_fsar", ["alpha"])
    with pytest.raises(InputError, match="a number"):
        parse_options("ma_fsar", ["alpha=high"])
    from cachekit.methods import method_module

    cfg = method_module("clip_fsar").Config  # out-of-range sizes: one line, not a torch traceback later
    for bad, match in (({"heads": 0}, "heads and ffn_dim must be >= 1"), ({"ffn_dim": 0}, "heads and ffn_dim"),
                       ({"dropout": 2.0}, r"dropout must lie in \[0, 1\)"), ({"attn_dropout": -0.1}, "attn_dropout")):
        with pytest.raises(InputError, match=match):
            cfg(**bad)


# ------------------------------------------------------------------ listing
def _cli():
    from clipcache.cli.main import cli
    from clipcache.cli.train_cmd import methods, train

    for cmd in (methods, train):
        if cmd.name not in cli.commands:
            cli.add_command(cmd)
    return cli


def test_methods_listing_json_lists_every_method(tiny_cfg, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setitem(METHODS, "not_written", "cachekit.methods.not_written_yet")
    res = CliRunner().invoke(_cli(), ["methods", "--model", tiny_cfg, "--frames", "8", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["name"] for r in rows} == set(METHODS)
    missing = [r for r in rows if r["name"] == "not_written"]
    assert len(missing) == 1 and not missing[0]["available"] and missing[0]["error"]
    for r in rows:
        if r["available"]:
            assert {"name", "variant", "display_name", "needs", "needs_backbone", "protocols",
                    "trainable_params"} <= set(r)
    tpcm = next(r for r in rows if r["name"] == "ma_fsar" and r["variant"] == {"modules": "tpcm"})
    d = 64  # the tiny model's D'
    assert tpcm["trainable_params"] == 4 * (d * d + d) + (2 * d * 2048 + 2048 + d) + 4 * d
    assert tpcm["needs_backbone"] is False and tpcm["needs"]["text"] is True
    probe = [r for r in rows if r["name"] == "linear_probe"]
    assert probe and all(r["trainable_params"] is None for r in probe)


@pytest.mark.slow
def test_methods_listing_for_vit_b32_without_weights():
    rows = {(r["name"], json.dumps(r["variant"], sort_keys=True)): r
            for r in list_methods("ViT-B-32", 8, ["ma_fsar", "clip_fsar"]) if r["available"]}
    assert rows[("ma_fsar", '{"modules": "tpcm"}')]["trainable_params"] == 3_152_384
    assert rows[("clip_fsar", "{}")]["trainable_params"] == 3_149_825
    assert math.isclose(rows[("ma_fsar", '{"modules": "tpcm"}')]["trainable_params"] / 1e6, 3.15, abs_tol=0.005)


def test_methods_listing_text(tiny_cfg):
    from click.testing import CliRunner

    res = CliRunner().invoke(_cli(), ["methods", "--model", tiny_cfg])
    assert res.exit_code == 0, res.output
    assert "MA-FSAR (TPCM only, frozen encoder)" in res.stdout
    assert "CLIP-FSAR head (frozen encoder)" in res.stdout

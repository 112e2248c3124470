"""Methods inside the frozen encoder (EZ-CLIP, EV-CLIP, MA-FSAR FgMA) on the tiny model.

For each: what it reads from the cache, a training step that moves only its own parameters
(every CLIP tensor bitwise unchanged), gradients on every trainable parameter, identity at
initialisation where the paper's init allows it, cached-tokens == pixels for ``from_block``,
and the refusal when the store lacks the tokens. Parameter counts against the papers on the
real ViT-B shapes are ``slow``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from cachekit.backbone import changed_tensors, frozen_state
from cachekit.errors import InputError
from cachekit.methods import build_method, make_config
from cachekit.methods.base import Episode, VideoBatch
from cachekit.methods.ev_clip import ContextPrompt, MaskPrompt, consistency_loss
from cachekit.methods.ez_clip import motion_loss

T = 4
CLASSES = ["jumping", "riding a bike", "waving hands"]


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def pixels(tiny_encoder) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    s = tiny_encoder.info.image_size
    return torch.randn(3, T, 3, s, s, generator=g)  # [B, T, 3, S, S]


@pytest.fixture(scope="module")
def cached(tiny_encoder, pixels):
    """What extract would cache for ``pixels``: emb [B, T, D'], tokens {L: [B, T, N+1, W]}, text."""
    b = pixels.shape[0]
    with torch.no_grad():
        out = tiny_encoder.encode_frames(pixels.flatten(0, 1), token_blocks=(0, 1, 2, 3))
        text = tiny_encoder.encode_text([f"a video of a person {c}." for c in CLASSES])[:, None]  # [C, 1, D']
    tokens = {k: v.view(b, T, *v.shape[1:]) for k, v in out.tokens.items()}
    return {"emb": out.emb.view(b, T, -1), "tokens": tokens, "text": text}


def make_batch(method, pixels, cached, labels=(0, 2, 1)) -> VideoBatch:
    """The batch CacheData would assemble for ``method.needs``."""
    n = method.needs
    b = pixels.shape[0]
    return VideoBatch(
        index=torch.arange(b), labels=torch.tensor(labels[:b]),
        emb=cached["emb"] if n.emb else None,
        tokens={k: cached["tokens"][k] for k in n.tokens_at},
        pixels=pixels if n.pixels else None,
    )


def train_step(method, loss_fn, lr=1e-2):
    """One AdamW step on the method's trainables; returns (loss, params before)."""
    params = method.trainable_parameters()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.2)
    method.train()
    loss, logits = loss_fn()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], f"no gradient reached {missing}"
    frozen_grads = [n for n, p in method.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_grads == []
    opt.step()
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert moved > 0
    return loss, logits


def check_frozen_untouched(tiny_encoder, fn):
    before = frozen_state(tiny_encoder.model)
    out = fn()
    assert changed_tensors(before, tiny_encoder.model) == []
    assert not any(p.requires_grad for p in tiny_encoder.model.parameters())
    return out


def check_state_dict(method):
    sd = method.trainable_state_dict()
    assert not any(k.startswith("backbone.") for k in sd)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert sum(p.numel() for p in method.parameters() if id(p) in trainable) == method.num_trainable()


# --------------------------------------------------------------------------- EZ-CLIP
@pytest.mark.parametrize("overrides", [{}, {"from_block": 2}, {"prompts": False, "motion_weight": 0.0},
                                       {"text_adapters": False, "prompt_layers": "first", "from_block": 1}])
def test_ez_clip_trains_only_its_modules(tiny_encoder, pixels, cached, overrides):
    torch.manual_seed(0)
    m = build_method("ez_clip", overrides, tiny_encoder.info, T, tiny_encoder)
    m.bind_classes(CLASSES)
    batch = make_batch(m, pixels, cached)
    loss, logits = check_frozen_untouched(tiny_encoder, lambda: train_step(m, lambda: m.video_loss(batch, cached["text"])))
    assert logits.shape == (3, len(CLASSES))
    check_state_dict(m)


def test_ez_clip_needs_follow_from_block(tiny_encoder):
    full = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder)
    part = build_method("ez_clip", {"from_block": 2}, tiny_encoder.info, T, tiny_encoder)
    assert (full.needs.pixels, full.needs.tokens_at, full.needs.backbone) == (True, (), True)
    assert (part.needs.pixels, part.needs.tokens_at, part.needs.backbone) == (False, (2,), True)
    assert all(int(k) >= 2 for k in part.visual_blocks)
    with pytest.raises(InputError, match="from_block 4 is not a block"):
        build_method("ez_clip", {"from_block": 4}, tiny_encoder.info, T, tiny_encoder)
    with pytest.raises(InputError, match="ez_clip runs the frozen encoder"):
        build_method("ez_clip", {}, tiny_encoder.info, T, None)


def test_runs_of_other_configs_are_named_as_such(tiny_encoder):
    """Issue 23: a clip-trend EV-CLIP run and EZ-CLIP ablations showed the default's name."""
    def name(method, overrides, backbone=tiny_encoder):
        return build_method(method, overrides, tiny_encoder.info, T, backbone).display_name

    assert name("ez_clip", {}) == "EZ-CLIP"
    assert name("ez_clip", {"from_block": 2}) == "EZ-CLIP (from block 2)"
    assert name("ez_clip", {"from_block": 2, "motion_weight": 0.0}) == "EZ-CLIP (from block 2, no motion loss)"
    assert name("ez_clip", {"prompts": False, "motion_weight": 0.0}) == "EZ-CLIP (no temporal prompts, no motion loss)"
    assert name("ez_clip", {"image_adapters": False, "prompt_layers": "first", "motion_weight": 0.5}) == \
        "EZ-CLIP (prompts in the first block only, no image adapters, motion loss x0.5)"
    assert name("ev_clip", {"z_block": 2}, None) == "EV-CLIP (context prompts)"
    assert name("ev_clip", {"z_block": 2, "aux_encoder": "clip-trend"}, None) == "EV-CLIP (context prompts, clip-trend z)"
    assert name("ev_clip", {"prompts": "mask", "z_block": 2, "aux_encoder": "clip-trend"}) == \
        "EV-CLIP (mask prompts, clip-trend z)"


def test_ez_clip_parameter_count_tiny(tiny_encoder):
    # W = 64, 4 visual + 2 text blocks, T = 4: adapters 2,128 each, prompts 4 x 4 x 64
    m = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder)
    assert m.num_trainable() == 4 * 2_128 + 2 * 2_128 + 4 * T * 64
    m2 = build_method("ez_clip", {"from_block": 2}, tiny_encoder.info, T, tiny_encoder)
    assert m2.num_trainable() == 2 * 2_128 + 2 * 2_128 + 2 * T * 64


def test_ez_clip_adapters_are_identity_at_init(tiny_encoder, pixels, cached):
    """Without prompts (TVP is not the identity at init, by design) both towers equal CLIP."""
    m = build_method("ez_clip", {"prompts": False}, tiny_encoder.info, T, tiny_encoder).eval()
    m.bind_classes(CLASSES)
    with torch.no_grad():
        frames = m.frame_embeddings(make_batch(m, pixels, cached))
        text = m.class_text(cached["text"])
    torch.testing.assert_close(frames, cached["emb"], rtol=0, atol=1e-5)
    torch.testing.assert_close(text, F.normalize(cached["text"][:, 0], dim=-1), rtol=0, atol=1e-5)


def test_ez_clip_prompts_change_the_output_at_init(tiny_encoder, pixels, cached):
    m = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder).eval()
    with torch.no_grad():
        frames = m.frame_embeddings(make_batch(m, pixels, cached))
    assert (frames - cached["emb"]).abs().max() > 1e-4


@pytest.mark.parametrize("start", [1, 2, 3])
def test_ez_clip_from_cached_tokens_equals_from_pixels(tiny_encoder, pixels, cached, start):
    torch.manual_seed(0)
    m = build_method("ez_clip", {"from_block": start}, tiny_encoder.info, T, tiny_encoder).eval()
    for p in m.trainable_parameters():  # move off the init so adapters matter
        p.data.add_(0.02 * torch.randn_like(p))
    with torch.no_grad():
        via_cache = m.frame_embeddings(VideoBatch(index=torch.arange(3), labels=torch.zeros(3, dtype=torch.long),
                                                  tokens={start: cached["tokens"][start]}))
        via_pixels = m.frame_embeddings(VideoBatch(index=torch.arange(3), labels=torch.zeros(3, dtype=torch.long),
                                                   pixels=pixels))
    torch.testing.assert_close(via_cache, via_pixels, rtol=0, atol=1e-5)


def test_ez_clip_text_needs_bound_class_names(tiny_encoder, pixels, cached):
    m = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder)
    batch = make_batch(m, pixels, cached)
    with pytest.raises(InputError, match=r"call method.bind_classes\(class_names\)"):
        m.video_logits(batch, cached["text"])
    m.bind_classes(CLASSES[:2])
    with pytest.raises(InputError, match="bound to 2 class names but given text for 3"):
        m.video_logits(batch, cached["text"])


def test_ez_clip_rebinding_keeps_tokens_of_the_same_names_only(tiny_encoder, pixels, cached):
    m = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder).eval()
    m.bind_classes(CLASSES)
    tokens = m._class_tokens
    with torch.no_grad():
        first = m.video_logits(make_batch(m, pixels, cached), cached["text"])
    m.bind_classes(list(CLASSES))  # what the all-way feed does before every step
    assert m._class_tokens is tokens and m._text_cache is None  # not tokenised again; the eval cache dropped
    with torch.no_grad():
        torch.testing.assert_close(m.video_logits(make_batch(m, pixels, cached), cached["text"]), first)
    m.bind_classes(list(reversed(CLASSES)))  # other rows: tokenised again, in the new order
    assert not torch.equal(m._class_tokens, tokens)
    with torch.no_grad():
        again = m.video_logits(make_batch(m, pixels, cached), cached["text"][[2, 1, 0]])
    torch.testing.assert_close(again, first[:, [2, 1, 0]])


def test_ez_clip_descriptions_file(tiny_encoder, tmp_path, pixels, cached):
    f = tmp_path / "desc.tsv"
    f.write_text("".join(f"{c}\t{c} is an action performed by humans.\n" for c in CLASSES))
    m = build_method("ez_clip", {"descriptions": str(f)}, tiny_encoder.info, T, tiny_encoder).eval()
    m.bind_classes(CLASSES)
    with torch.no_grad():
        logits = m.video_logits(make_batch(m, pixels, cached), cached["text"])
    assert logits.shape == (3, 3)
    with pytest.raises(InputError, match="no description for 1 class"):
        m.bind_classes([*CLASSES, "swimming"])


def test_motion_loss_code_form():
    still = torch.ones(2, 5, 3)
    assert motion_loss(still).item() == pytest.approx(1.0)
    e = torch.tensor([[[0.0], [1.0], [3.0]]])  # [1, 3, 1]
    # central differences with replicate padding: |1-0|/2, |3-0|/2, |3-1|/2 -> mean 1.0; var = 7/3
    assert motion_loss(e).item() == pytest.approx(1 / (1 + 1.0 + 7 / 3))


# --------------------------------------------------------------------------- EV-CLIP
@pytest.mark.parametrize("prompts", ["context", "mask", "both"])
def test_ev_clip_variants_train_only_their_generators(tiny_encoder, pixels, cached, prompts):
    torch.manual_seed(0)
    m = build_method("ev_clip", {"prompts": prompts, "z_block": 2}, tiny_encoder.info, T,
                     tiny_encoder if prompts != "context" else None)
    n = m.needs
    assert n.tokens_at == (2,) and n.text
    assert (n.pixels, n.backbone, n.emb) == ((False, False, True) if prompts == "context" else (True, True, False))
    assert (m.context is not None) == (prompts != "mask") and (m.mask is not None) == (prompts != "context")
    batch = make_batch(m, pixels, cached)
    loss, logits = check_frozen_untouched(tiny_encoder, lambda: train_step(m, lambda: m.video_loss(batch, cached["text"])))
    assert logits.shape == (3, len(CLASSES))
    check_state_dict(m)


def test_ev_clip_context_variant_equals_pooled_clip_at_scale_zero(tiny_encoder, pixels, cached):
    m = build_method("ev_clip", {"z_block": 2, "context_scale_init": 0.0}, tiny_encoder.info, T, None).eval()
    with torch.no_grad():
        got = m.video_logits(make_batch(m, pixels, cached), cached["text"])
    video = torch.cat([torch.zeros(3, 1, cached["emb"].shape[-1]), cached["emb"]], 1).mean(1)
    ref = 100.0 * F.normalize(video, dim=-1) @ F.normalize(cached["text"][:, 0], dim=-1).t()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_ev_clip_mask_reweights_pixels_through_the_frozen_encoder(tiny_encoder, pixels, cached):
    m = build_method("ev_clip", {"prompts": "mask", "z_block": 2}, tiny_encoder.info, T, tiny_encoder).eval()
    batch = make_batch(m, pixels, cached)
    with torch.no_grad():
        z = m.aux.encode(batch)
        mask = m.mask(z)  # [B, 224, 224]
        got = m.frame_embeddings(batch)
        ref = tiny_encoder.encode_frames((pixels * mask[:, None, None]).flatten(0, 1)).emb.view(3, T, -1)
    assert z.shape == (3, 64, T, 7, 7)
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_index_hooks_use_what_the_method_classifies(tiny_encoder, pixels, cached):
    """index/query read support_features/query_features/explain_mask: for EV-CLIP mask prompts
    those are the masked frames' embeddings and the mask itself; EZ-CLIP's adapted embeddings; a
    query's features against the class vectors give the method's own logits."""
    m = build_method("ev_clip", {"prompts": "mask", "z_block": 2}, tiny_encoder.info, T, tiny_encoder).eval()
    batch = make_batch(m, pixels, cached)
    with torch.no_grad():
        want = m.frame_embeddings(batch)
        torch.testing.assert_close(m.support_features(batch), want, rtol=0, atol=0)
        # a query's features dotted with the class vectors are the method's logits (the index's scores)
        text = torch.randn(5, 2, tiny_encoder.info.embed_dim)  # [C, P, D']
        q = m.query_features(batch)  # [B, T, D']
        torch.testing.assert_close(q.mean(dim=1) @ m.index_class_vectors(text).t(), m.video_logits(batch, text),
                                   rtol=1e-5, atol=1e-4)
        mask = m.explain_mask(batch)
        torch.testing.assert_close(mask, m.mask(m.aux.encode(batch)), rtol=0, atol=0)
    assert mask.shape == (3, 224, 224)
    ctx = build_method("ev_clip", {"prompts": "context", "z_block": 2}, tiny_encoder.info, T, None)
    assert ctx.explain_mask(make_batch(ctx, pixels, cached)) is None
    ez = build_method("ez_clip", {}, tiny_encoder.info, T, tiny_encoder).eval()
    b = make_batch(ez, pixels, cached)
    ez.bind_classes([f"class {c}" for c in range(5)])
    with torch.no_grad():
        feats = ez.support_features(b)
        q = ez.query_features(b)  # [B, T, D']
        logits = ez.video_logits(b, text)
        vectors = ez.index_class_vectors(text)
    torch.testing.assert_close(feats, ez.frame_embeddings(b), rtol=0, atol=1e-5)  # same path, run twice
    assert feats.shape == q.shape == (3, T, tiny_encoder.info.embed_dim)
    torch.testing.assert_close(q.mean(dim=1) @ vectors.t(), logits, rtol=1e-5, atol=1e-4)


def test_ev_clip_z_block_is_validated(tiny_encoder):
    with pytest.raises(InputError, match=r"z_block 6 is not a block of this model \(blocks 0..3\); pass z_block=2"):
        build_method("ev_clip", {"z_block": 6}, tiny_encoder.info, T, None)
    with pytest.raises(InputError, match="ev_clip prompts=mask runs the frozen encoder"):
        build_method("ev_clip", {"prompts": "mask", "z_block": 2}, tiny_encoder.info, T, None)
    with pytest.raises(InputError, match="prompts must be context, mask or both"):
        make_config("ev_clip", {"prompts": "pixels"})


@pytest.mark.parametrize("layers", [4, 12, 24])
def test_ev_clip_default_z_is_the_middle_block(tiny_encoder, layers):
    """Spec 2.3: z defaults to the output of block L/2 (1-based), i.e. the tokens entering block L // 2:
    6 of ViT-B's 12 blocks, 12 of ViT-L's 24 (not 6 on every backbone)."""
    info = dataclasses.replace(tiny_encoder.info, layers=layers)
    m = build_method("ev_clip", {}, info, T, None)
    assert m.needs.tokens_at == (layers // 2,)
    assert build_method("ev_clip", {"z_block": 1}, info, T, None).needs.tokens_at == (1,)


def test_ev_clip_generator_sizes_match_the_public_code():
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(MaskPrompt(768, 4)) == 5_660_845
    assert count(MaskPrompt(768, 8)) == 5_660_845 + 52
    assert count(MaskPrompt(1024, 4)) == 10_020_031
    assert count(ContextPrompt(768, 512)) == 394_241
    assert count(ContextPrompt(768, 768)) == 591_361


def test_ev_clip_z_pools_other_grids_to_7x7():
    from cachekit.encoder import ModelInfo
    from cachekit.methods.ev_clip import ClipMidTokens

    info = ModelInfo(embed_dim=16, width=8, layers=4, heads=2, grid=(14, 14), image_size=224, text_width=8)
    tok = torch.randn(2, 4, 197, 8)
    z = ClipMidTokens(info, 2, "pairs").encode(VideoBatch(index=torch.arange(2), labels=torch.zeros(2), tokens={2: tok}))
    assert z.shape == (2, 8, 2, 7, 7)
    grid = tok[:, :, 1:].reshape(2, 4, 14, 14, 8)
    ref = grid.reshape(2, 2, 2, 7, 2, 7, 2, 8).mean(dim=(2, 4, 6)).permute(0, 4, 1, 2, 3)  # pairs, 2x2
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)


def test_ev_clip_trend_z_pools_to_the_tokens_slope_and_flips_with_time():
    """clip-trend: the level half is clip-mid's z; the trend half's mean over time is each token's
    least-squares slope per frame, which a time-reversed clip negates (clip-mid pools it away)."""
    from cachekit.encoder import ModelInfo
    from cachekit.methods.ev_clip import ClipMidTokens, ClipTrendTokens

    info = ModelInfo(embed_dim=16, width=8, layers=4, heads=2, grid=(7, 7), image_size=224, text_width=8)
    tok = torch.randn(2, 5, 50, 8)
    batch = lambda t: VideoBatch(index=torch.arange(2), labels=torch.zeros(2), tokens={2: t})  # noqa: E731
    trend = ClipTrendTokens(info, 2)
    assert trend.z_dim == 16 and trend.needs.tokens_at == (2,)
    z, z_rev = trend.encode(batch(tok)), trend.encode(batch(tok.flip(1)))
    mid = ClipMidTokens(info, 2).encode(batch(tok))
    assert z.shape == (2, 16, 5, 7, 7)
    torch.testing.assert_close(z[:, :8], mid)
    grid = tok[:, :, 1:].reshape(2, 5, 7, 7, 8).permute(0, 4, 1, 2, 3)  # [B, W, T, 7, 7]
    t = torch.arange(5, dtype=torch.float32)
    slope = ((t - t.mean())[None, None, :, None, None] * grid).sum(2) / ((t - t.mean()) ** 2).sum()
    torch.testing.assert_close(z[:, 8:].mean(dim=2), slope)
    torch.testing.assert_close(z_rev[:, 8:].mean(dim=2), -slope)  # time reversal flips the trend
    torch.testing.assert_close(ClipMidTokens(info, 2).encode(batch(tok.flip(1))).mean(dim=2), mid.mean(dim=2))


def test_consistency_loss_is_zero_for_identical_frames():
    e = torch.randn(2, 1, 8).expand(2, 5, 8)
    assert consistency_loss(e).item() == pytest.approx(0.0, abs=1e-5)
    assert consistency_loss(torch.randn(2, 5, 8)).item() > 0.1


# --------------------------------------------------------------------------- MA-FSAR FgMA
def episode(pixels, cached, needs, ways=3):
    """A 3-way 1-shot 1-query episode from the six videos (supports = first three)."""
    pix = torch.cat([pixels, pixels.flip(1)])  # [6, T, ...]: queries are the time-reversed clips
    tok = {k: torch.cat([v, v.flip(1)]) for k, v in cached["tokens"].items()}

    def vb(sl):
        return VideoBatch(index=torch.arange(6)[sl], labels=torch.arange(3).repeat(2)[sl],
                          tokens={k: tok[k][sl] for k in needs.tokens_at},
                          pixels=pix[sl] if needs.pixels else None,
                          emb=None)

    return Episode(support=vb(slice(0, 3)), query=vb(slice(3, 6)), support_labels=torch.arange(ways),
                   query_labels=torch.arange(ways), class_ids=torch.arange(ways), text=cached["text"])


@pytest.mark.parametrize("overrides", [{"modules": "fgma"}, {"modules": "all"}, {"modules": "all", "from_block": 2}])
def test_ma_fsar_fgma_trains_only_its_modules(tiny_encoder, pixels, cached, overrides):
    torch.manual_seed(0)
    m = build_method("ma_fsar", overrides, tiny_encoder.info, T, tiny_encoder)
    start = overrides.get("from_block", 0)
    assert m.needs.backbone and m.needs.text and m.needs.pixels == (start == 0)
    assert m.needs.tokens_at == ((start,) if start else ())
    ep = episode(pixels, cached, m.needs)
    loss, logits = check_frozen_untouched(tiny_encoder, lambda: train_step(m, lambda: m.episode_loss(ep)))
    assert logits.shape == (3, 3)
    check_state_dict(m)


def test_ma_fsar_joint_and_temporal_adapters_are_identity_at_init(tiny_encoder, pixels, cached):
    from cachekit.layers.fgma import FgMABlock

    m = build_method("ma_fsar", {"modules": "fgma"}, tiny_encoder.info, T, tiny_encoder).eval()
    blocks = {i: FgMABlock(64, 0.25, 0.5, local=False) for i in range(4)}
    with torch.no_grad():
        got = m.backbone.encode_video(pixels=pixels, overrides=blocks)
        # with the local (token-inserting) adaptation the output differs at init, as the paper builds it
        full = m.encode(VideoBatch(index=torch.arange(3), labels=torch.arange(3), pixels=pixels), None)
    torch.testing.assert_close(got, cached["emb"], rtol=0, atol=1e-5)
    assert (full - cached["emb"]).abs().max() > 1e-4
    blk = m.blocks["0"]  # GTA adds nothing at init (x_TA = the CLS tokens), nor does JA
    x = torch.randn(5, 64)
    assert torch.count_nonzero(blk.temporal(x)) == 0 and torch.count_nonzero(blk.joint(x)) == 0


def test_ma_fsar_fgma_from_cached_tokens_equals_from_pixels(tiny_encoder, pixels, cached):
    torch.manual_seed(0)
    m = build_method("ma_fsar", {"modules": "fgma", "from_block": 2}, tiny_encoder.info, T, tiny_encoder).eval()
    for p in m.trainable_parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    text = torch.randn(3, tiny_encoder.info.width)
    with torch.no_grad():
        a = m.encode(VideoBatch(index=torch.arange(3), labels=torch.arange(3), tokens={2: cached["tokens"][2]}), text)
        b = m.encode(VideoBatch(index=torch.arange(3), labels=torch.arange(3), pixels=pixels), text)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- real store
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_encoder):
    """Two PyAV-written clips (two classes) extracted with tokens at block 2, T = 4."""
    from cachekit.extract import ExtractConfig, extract
    from cachekit.inputs import collect_inputs
    from cachekit.video import SamplerConfig
    from helpers import synth_frames, write_h264

    root = tmp_path_factory.mktemp("videos")
    for i, cls in enumerate(["jumping", "waving"]):
        write_h264(root / cls / f"clip{i}.mp4", synth_frames(i, frames=20, height=96, width=128))
    store = tmp_path_factory.mktemp("store") / "tiny.zarr"
    cfg = ExtractConfig(sampler=SamplerConfig(frames=T), tokens_at=(2,), workers=0)
    extract(collect_inputs([str(root)]), str(store), cfg, progress=False, enc=tiny_encoder)
    return store


def test_store_refuses_from_block_without_cached_tokens(tiny_store, tiny_encoder):
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache

    m = build_method("ez_clip", {"from_block": 3}, tiny_encoder.info, T, tiny_encoder)
    with FeatureCache(tiny_store) as cache, pytest.raises(InputError) as err:
        CacheData(cache, m.needs, encoder=tiny_encoder)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("tokens at block 3 are not cached in ")  # issue 12: names the command
    assert f"(cached: 2); add them to this store with: clipcache extract --store {tiny_store} --tokens-at 2,3 " in msg


def test_store_tokens_and_decoded_frames_agree_and_train(tiny_store, tiny_encoder):
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache

    part = build_method("ez_clip", {"from_block": 2}, tiny_encoder.info, T, tiny_encoder)
    full = build_method("ez_clip", {"prompts": False}, tiny_encoder.info, T, tiny_encoder)
    with FeatureCache(tiny_store) as cache:
        assert cache.classes == ["jumping", "waving"]
        tok_batch = CacheData(cache, part.needs, encoder=tiny_encoder).batch([0, 1])
        pix_data = CacheData(cache, full.needs, encoder=tiny_encoder)
        pix_batch = pix_data.batch([0, 1])
        emb = torch.from_numpy(cache.emb())  # [V, T, D']
        text = torch.from_numpy(cache.text())  # [C, P, D']
    assert tok_batch.pixels is None and set(tok_batch.tokens) == {2}
    assert pix_batch.pixels.shape == (2, T, 3, 224, 224) and not pix_batch.tokens
    bb = part.backbone
    with torch.no_grad():  # decoded again at the cached frame indices: the same tokens and embeddings
        x = bb.run_blocks(bb.embed(pix_batch.pixels.flatten(0, 1)), 0, 2).view_as(tok_batch.tokens[2])
        torch.testing.assert_close(x, tok_batch.tokens[2], rtol=1e-2, atol=2e-2)  # tokens stored as fp16
        torch.testing.assert_close(bb.encode_video(pixels=pix_batch.pixels), emb, rtol=0, atol=1e-4)
        torch.testing.assert_close(bb.encode_video(tokens=tok_batch.tokens[2], start=2), emb, rtol=1e-2, atol=1e-2)
    for m, batch in ((part, tok_batch), (full, pix_batch)):
        m.bind_classes(["jumping", "waving"])
        check_frozen_untouched(tiny_encoder, lambda: train_step(m, lambda: m.video_loss(batch, text)))
    mask = build_method("ev_clip", {"prompts": "mask", "z_block": 2}, tiny_encoder.info, T, tiny_encoder)
    with FeatureCache(tiny_store) as cache:
        batch = CacheData(cache, mask.needs, encoder=tiny_encoder).batch([0, 1])
    check_frozen_untouched(tiny_encoder, lambda: train_step(mask, lambda: mask.video_loss(batch, text)))


def test_resident_tokens_equal_the_cached_ones(tiny_store, tiny_encoder):
    """Tokens a from-block method reads stay resident for training, in host memory when the
    device budget is exceeded, or are read from the store per step when the host's is too:
    each way a batch holds the cached tokens of its videos (as CacheData reads them)."""
    from cachekit.batches import CacheData
    from cachekit.cache import FeatureCache
    from cachekit.resident import ResidentFeatures

    m = build_method("ez_clip", {"from_block": 2}, tiny_encoder.info, T, tiny_encoder)
    with FeatureCache(tiny_store) as cache:
        data = CacheData(cache, m.needs, encoder=tiny_encoder)
        want = data.batch([1, 0, 1]).tokens[2]  # [3, T, N+1, W]
        idx = torch.tensor([[1, 0, 1]])  # [E=1, 3]
        for budget, host_budget, streamed in ((None, None, ()), (0, None, ()), (0, 0, (2,))):
            feats = ResidentFeatures.load(data, [0, 1], budget=budget, host_budget=host_budget)
            assert feats.streamed_tokens == streamed and feats.resident is (budget is None)
            got = feats.gather(idx).tokens[2]  # [1, 3, T, N+1, W]
            torch.testing.assert_close(got[0], want, rtol=0, atol=0)
            if streamed:
                assert any("read" in n and "from the store" in n for n in feats.notes)


# --------------------------------------------------------------------------- paper counts (real shapes)
def vit_b(name: str):
    import open_clip

    from cachekit.encoder import FrozenCLIP

    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    return FrozenCLIP(model, open_clip.get_tokenizer(name), name, None, "random:0", "", False, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-B-32"])
def test_ez_clip_trainable_count_is_the_papers_5_2M(name):
    enc = vit_b(name)
    m = build_method("ez_clip", {}, enc.info, 8, enc)
    assert m.num_trainable() == 5_204_736  # 3,550,464 image + 1,580,544 text adapters + 73,728 TVP
    prompts = sum(b.prompt.numel() for b in m.visual_blocks.values())
    assert prompts == 73_728  # the paper's "73K"
    if name == "ViT-B-32":
        assert build_method("ev_clip", {"prompts": "both"}, enc.info, 8, enc).num_trainable() == 5_660_897 + 394_241
        fg = build_method("ma_fsar", {"modules": "all"}, enc.info, 8, enc)
        assert fg.num_trainable() == 3 * 12 * 295_872 + 393_984 + 3_152_384  # 14,197,760 (paper 18.54M)


def test_ev_clip_context_never_loads_a_deferred_encoder(tiny_encoder):
    from cachekit.runs import DeferredEncoder

    def boom():
        raise AssertionError("the context variant must not load the encoder")

    enc = DeferredEncoder(boom)
    m = build_method("ev_clip", {"z_block": 2}, tiny_encoder.info, T, enc)
    assert not enc.loaded and not m.needs.backbone
    mask = build_method("ev_clip", {"prompts": "mask", "z_block": 2}, tiny_encoder.info, T,
                        DeferredEncoder(lambda: tiny_encoder))
    assert mask.needs.backbone and mask.logit_scale == tiny_encoder.model.logit_scale.exp()

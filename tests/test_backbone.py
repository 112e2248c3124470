"""The wrapped frozen towers: full == partial, overrides, adapters, text tower, frozen weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cachekit.backbone import (
    Adapter,
    Backbone,
    BlockOverride,
    FrozenBlock,
    RunConfig,
    changed_tensors,
    frozen_state,
    require_backbone,
)
from cachekit.errors import InputError

B, T = 2, 3


@pytest.fixture(scope="module")
def bb(tiny_encoder) -> Backbone:
    return Backbone(tiny_encoder)


@pytest.fixture(scope="module")
def pixels(tiny_encoder) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    s = tiny_encoder.info.image_size
    return torch.randn(B, T, 3, s, s, generator=g)  # [B, T, 3, S, S]


class Identity(BlockOverride):
    """An override that rebuilds the block from its frozen parts (must equal the block)."""

    def forward(self, block: FrozenBlock, x, frames, **ctx):
        x = x + block.attention(x)
        return x + block.mlp(x)


def test_pixels_path_equals_frozen_encoder(bb, tiny_encoder, pixels):
    with torch.no_grad():
        got = bb.encode_video(pixels=pixels)  # [B, T, D']
        ref = tiny_encoder.encode_frames(pixels.flatten(0, 1)).emb.view(B, T, -1)
    assert got.shape == (B, T, tiny_encoder.info.embed_dim)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("start", [1, 2, 3])
def test_blocks_from_cached_tokens_equal_full_forward(bb, tiny_encoder, pixels, start):
    """Running blocks L.. on the tokens entering L equals the full forward (fp32, tight)."""
    with torch.no_grad():
        out = tiny_encoder.encode_frames(pixels.flatten(0, 1), token_blocks=(start,))
        tokens = out.tokens[start].view(B, T, *out.tokens[start].shape[1:])  # [B, T, N+1, W]
        got = bb.encode_video(tokens=tokens, start=start)
        via_pixels = bb.encode_video(pixels=pixels, start=start)
    torch.testing.assert_close(got, out.emb.view(B, T, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(via_pixels, got, rtol=0, atol=1e-6)


def test_embed_gives_tokens_entering_block_zero(bb, tiny_encoder, pixels):
    with torch.no_grad():
        out = tiny_encoder.encode_frames(pixels.flatten(0, 1), token_blocks=(0,))
        torch.testing.assert_close(bb.embed(pixels.flatten(0, 1)), out.tokens[0], rtol=0, atol=0)


def test_override_from_frozen_parts_is_the_block(bb, pixels):
    ov = {i: Identity() for i in range(1, bb.info.layers)}
    with torch.no_grad():
        ref = bb.encode_video(pixels=pixels)
        got = bb.encode_video(pixels=pixels, start=1, overrides=ov)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_override_before_start_block_is_an_error(bb, pixels):
    with pytest.raises(ValueError, match=r"overrides for blocks \[0\] lie outside"):
        bb.encode_video(pixels=pixels, start=1, overrides={0: Identity()})
    with pytest.raises(InputError, match="start block 9 is not a block"):
        bb.encode_video(pixels=pixels, start=9)


def test_context_reaches_overrides(bb, pixels):
    seen = {}

    class Spy(BlockOverride):
        def forward(self, block, x, frames, **ctx):
            seen.update(ctx, frames=frames, rows=x.shape[0])
            return block(x)

    with torch.no_grad():
        bb.encode_video(pixels=pixels, start=2, overrides={2: Spy()}, text="hello")
    assert seen == {"text": "hello", "frames": T, "rows": B * T}


def test_text_tower_equals_frozen_text_encoder(bb, tiny_encoder):
    texts = ["a video of a person jumping.", "waving", "a much longer prompt about somebody riding a bike"]
    tok = bb.tokenize(texts)
    with torch.no_grad():
        got = bb.encode_text(tok)
        ref = tiny_encoder.model.encode_text(tok)  # full 77 positions, open_clip's own path
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

    class TextIdentity(BlockOverride):
        def forward(self, block, x, frames, attn_mask=None, **ctx):
            x = x + block.attention(x, attn_mask)
            return x + block.mlp(x)

    with torch.no_grad():
        got2 = bb.encode_text(tok, {i: TextIdentity() for i in range(bb.text_layers)})
    torch.testing.assert_close(got2, got, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim,expected", [(768, 295_872), (512, 131_712), (64, 2_128)])
def test_adapter_size_and_identity_at_init(dim, expected):
    a = Adapter(dim, 0.25)
    assert sum(p.numel() for p in a.parameters()) == expected
    x = torch.randn(4, 5, dim)
    torch.testing.assert_close(a(x), x, rtol=0, atol=0)
    assert torch.count_nonzero(Adapter(dim, 0.25, skip=False)(x)) == 0


def test_checkpointing_gives_same_values_and_gradients(tiny_encoder, pixels):
    def run(ckpt: bool):
        torch.manual_seed(1)
        bb = Backbone(tiny_encoder, RunConfig(checkpointing=ckpt))

        class Ad(BlockOverride):
            def __init__(self):
                super().__init__()
                self.adapter = Adapter(bb.info.width, 0.25, zero_init=False)

            def forward(self, block, x, frames, **ctx):
                x = self.adapter(x + block.attention(x))
                return x + block.mlp(x)

        ov = torch.nn.ModuleDict({str(i): Ad() for i in range(2, bb.info.layers)})
        out = bb.encode_video(pixels=pixels, start=2, overrides={int(k): m for k, m in ov.items()})
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in ov.parameters()]

    v0, g0 = run(False)
    v1, g1 = run(True)
    torch.testing.assert_close(v1, v0, rtol=0, atol=1e-6)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_frozen_and_eval_whatever_train_asks(tiny_encoder, pixels):
    bb = Backbone(tiny_encoder)
    bb.train()
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    before = frozen_state(bb.model)
    ad = Adapter(bb.info.width, zero_init=False)

    class Ad(BlockOverride):
        def forward(self, block, x, frames, **ctx):
            return block(ad(x))

    opt = torch.optim.AdamW(ad.parameters(), lr=0.1, weight_decay=0.5)
    loss = bb.encode_video(pixels=pixels, start=1, overrides={1: Ad()}).square().mean()
    loss.backward()
    assert all(p.grad is None for p in bb.model.parameters())
    opt.step()
    assert changed_tensors(before, bb.model) == []


def test_cpu_runs_in_fp32(bb, pixels):
    assert bb.device.type == "cpu"
    with bb.autocast():
        assert not torch.is_autocast_enabled()
    assert bb.encode_video(pixels=pixels).dtype == torch.float32
    with pytest.raises(InputError, match="precision must be"):
        RunConfig(precision="fp8")


def test_require_backbone_says_what_is_missing():
    with pytest.raises(InputError, match="ez_clip runs the frozen encoder"):
        require_backbone(None, "ez_clip")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_close_to_fp32(tiny_encoder, pixels, precision):  # pragma: no cover - GPU only
    import copy

    enc = copy.copy(tiny_encoder)
    enc.model = copy.deepcopy(tiny_encoder.model).cuda()
    bb32 = Backbone(enc, RunConfig(precision="fp32"))
    bb16 = Backbone(enc, RunConfig(precision=precision))
    with torch.no_grad():
        a = bb32.encode_video(pixels=pixels.cuda())
        b = bb16.encode_video(pixels=pixels.cuda())
    assert b.dtype == torch.float32
    assert F.cosine_similarity(a, b, dim=-1).min() > 0.99

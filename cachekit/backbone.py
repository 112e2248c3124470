"""Run the frozen open_clip towers with prompts and adapters placed inside them.

Methods whose trainable parts sit at the input of, or inside, the frozen encoder (EZ-CLIP,
MA-FSAR FgMA, EV-CLIP mask prompts) run the towers through :class:`Backbone`. It *wraps*
open_clip: every block is open_clip's own ``ResidualAttentionBlock``; a method changes what a
block does by giving a :class:`BlockOverride` for that block index, which calls the frozen
block's own ``ln_1`` / ``attn`` / ``ls_1`` / ``ln_2`` / ``mlp`` / ``ls_2`` through the thin
:class:`FrozenBlock` view. No weight or transformer code is copied; blocks without an override
run open_clip's ``forward`` unchanged.

Partial caching (``--from-block L``): the tokens entering block L are cached by ``extract
--tokens-at L`` (exactly what :meth:`Backbone.run_blocks` would compute for blocks < L without
overrides), so a method that places every prompt and adapter in blocks >= L can start from the
cache and run blocks L..end only. :meth:`Backbone.encode_video` takes either pixels (runs the
patch embedding and blocks 0..L-1 frozen first) or the cached tokens; both give the same result.

Precision: fp32 on CPU; on CUDA the tower runs under ``torch.autocast`` (``bf16`` where the
device supports it, else ``fp16``, or as asked). Outputs are returned in float32. fp16 training
needs a gradient scaler in the trainer; bf16 does not. Gradient checkpointing (per block,
non-reentrant) trades one extra block forward for not keeping block activations.

Shapes: B videos, T frames, F = B*T frames, N+1 tokens (class token first), W visual width,
D' joint embedding width, P prompts (text), n text positions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch
from torch import nn

from .encoder import FrozenCLIP, ModelInfo
from .errors import InputError, ModelError

Precision = Literal["auto", "fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class RunConfig:
    """How the frozen towers run (never what they compute)."""

    precision: Precision = "auto"  # auto: bf16 on CUDA if supported, else fp16; always fp32 on CPU
    checkpointing: bool = False  # per-block gradient checkpointing while training

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise InputError(f"precision must be auto, fp32, fp16 or bf16, not {self.precision!r}")


# --------------------------------------------------------------------------- building blocks
class Adapter(nn.Module):
    """Bottleneck adapter ``x -> [x +] up(act(down(x)))`` (Houlsby / AIM / EZ-CLIP).

    ``dim -> int(dim * ratio) -> dim`` with biases. ``skip`` keeps the internal residual.
    ``zero_init`` zeroes the up-projection and its bias, so at initialisation the adapter returns
    ``x`` (with skip) or ``0`` (without): the adapted model starts equal to the frozen one.
    Parameters: ``2 * dim * hidden + hidden + dim`` (295,872 at 768 / 131,712 at 512, ratio 0.25).
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True, zero_init: bool = True):
        super().__init__()
        hidden = int(dim * ratio)
        if hidden < 1:
            raise InputError(f"adapter ratio {ratio} leaves no hidden unit at width {dim}")
        self.skip = skip
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., dim] -> [..., dim]
        y = self.up(self.act(self.down(x)))
        return x + y if self.skip else y


class FrozenBlock:
    """A view on one frozen open_clip ``ResidualAttentionBlock``: its parts, by name.

    Nothing is copied; each call goes to the block's own modules. ``x`` is ``[S, M, W]``:
    S independent sequences (frames, or videos for attention across frames) of M tokens.
    """

    def __init__(self, block: nn.Module, index: int):
        self.block = block
        self.index = index

    def __call__(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The unchanged open_clip block."""
        return self.block(x, attn_mask=attn_mask)

    def ln_1(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.ln_1(x)

    def ln_2(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.ln_2(x)

    def attend(self, x_normed: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen multi-head self-attention on already normalised tokens, times ``ls_1``."""
        return self.block.ls_1(self.block.attention(q_x=x_normed, attn_mask=attn_mask))

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention residual branch ``ls_1(attn(ln_1(x)))`` (add ``x`` for the block's first half)."""
        return self.attend(self.block.ln_1(x), attn_mask)

    def mlp_raw(self, x_normed: torch.Tensor) -> torch.Tensor:
        """The frozen MLP on already normalised tokens, times ``ls_2``."""
        return self.block.ls_2(self.block.mlp(x_normed))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP residual branch ``ls_2(mlp(ln_2(x)))``."""
        return self.mlp_raw(self.block.ln_2(x))


class BlockOverride(nn.Module):
    """What a method puts in place of one frozen block's forward.

    ``forward(block, x, frames, **ctx)``: ``x`` is ``[F, N+1, W]`` (F = B*T frames, video-major),
    ``frames`` is T, ``ctx`` the keyword context the method passed to the run (e.g. support
    text tokens). Returns ``[F, N+1, W]``: extra tokens may be inserted inside the block but
    must be dropped before returning. Only this module's own parameters are trainable.
    """

    def forward(self, block: FrozenBlock, x: torch.Tensor, frames: int, **ctx) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------- the towers
class Backbone(nn.Module):
    """The frozen CLIP towers, run block by block with optional per-block overrides.

    Holds the open_clip model as submodule ``model`` (so the method that owns it under the
    attribute ``backbone`` moves it with ``.to()``; its weights are never trainable, and
    ``Method.trainable_state_dict`` leaves them out). The model stays in eval mode whatever
    ``train()`` asks.
    """

    def __init__(self, clip: FrozenCLIP, run: RunConfig | None = None):
        super().__init__()
        from open_clip.transformer import ResidualAttentionBlock

        self.clip = clip  # plain attribute: facts, preprocessing, tokenizer
        self.run_cfg = run or RunConfig()
        self.model = clip.model
        self.model.requires_grad_(False)
        self.model.eval()
        v = self.model.visual
        blocks = list(v.transformer.resblocks)
        text = getattr(self.model, "transformer", None)
        if not all(type(b) is ResidualAttentionBlock for b in blocks):
            raise ModelError(f"{clip.name}: prompts and adapters need open_clip's standard ResidualAttentionBlock "
                             "in the visual tower (custom blocks are not supported)")
        if not getattr(v.transformer, "batch_first", True) or (text is not None and not text.batch_first):
            raise ModelError(f"{clip.name}: only batch-first open_clip transformers are supported")
        if getattr(v, "attn_pool", None) is not None:
            raise ModelError(f"{clip.name}: attention-pooled visual towers are not supported")
        self._info = clip.info

    # ------------------------------------------------------------------ facts
    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        return self.model.visual.positional_embedding.device  # conv1 may be a stem (cachekit.toy.tower)

    @property
    def visual_blocks(self) -> Sequence[nn.Module]:
        return self.model.visual.transformer.resblocks

    @property
    def text_blocks(self) -> Sequence[nn.Module]:
        return self.model.transformer.resblocks

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    def logit_scale(self) -> torch.Tensor:
        """CLIP's frozen temperature ``exp(logit_scale)`` (100 for OpenAI weights), a 0-dim tensor."""
        return self.model.logit_scale.detach().exp().float()

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: never dropout / patch dropout
        return self

    def autocast(self):
        """The precision context for a tower run: autocast on CUDA, nothing (fp32) on CPU."""
        dev = self.device
        if dev.type != "cuda" or self.run_cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.run_cfg.precision)
        if dtype is None:  # auto
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def check_block(self, block: int, what: str = "from_block") -> int:
        layers = self._info.layers
        if not 0 <= block < layers:
            raise InputError(f"{what} {block} is not a block of {self.clip.name} (blocks 0..{layers - 1})")
        return block

    # ------------------------------------------------------------------ visual
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token, positions, ``ln_pre``: ``[F, 3, S, S] -> [F, N+1, W]``
        (the tokens entering block 0)."""
        return self.clip.embed(pixels)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None,
                   overrides: Mapping[int, BlockOverride] | None = None, frames: int = 1,
                   **ctx) -> torch.Tensor:
        """Blocks ``start..stop-1`` on the tokens entering ``start``: ``[F, N+1, W] -> [F, N+1, W]``
        (:meth:`FrozenCLIP.run_blocks`).

        ``overrides[l]`` replaces block l's forward; an override for a block outside the range
        is an error (it would silently not run). ``frames`` (T) and ``ctx`` go to overrides.
        """
        stop = len(self.visual_blocks) if stop is None else stop
        overrides = overrides or {}
        outside = sorted(k for k in overrides if not start <= int(k) < stop)
        if outside:
            raise ValueError(f"overrides for blocks {outside} lie outside the blocks run ({start}..{stop - 1})")
        calls = {int(i): (lambda blk, x, _ov=ov, _i=int(i): _ov(FrozenBlock(blk, _i), x, frames, **ctx))
                 for i, ov in overrides.items()}
        return self.clip.run_blocks(x, start, stop, calls, self._checkpointing())

    def _checkpointing(self) -> bool:
        return self.run_cfg.checkpointing and torch.is_grad_enabled()

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """``ln_post`` + pooling + projection: ``[F, N+1, W] -> [F, D']`` (open_clip's own ``_pool``)."""
        return self.clip.head(x)

    def encode_video(self, pixels: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                     start: int = 0, overrides: Mapping[int, BlockOverride] | None = None,
                     **ctx) -> torch.Tensor:
        """Per-frame embeddings ``[B, T, D']`` (float32, not normalised) of B videos.

        Give ``pixels [B, T, 3, S, S]`` (normalised; the frozen blocks ``0..start-1`` run first)
        or ``tokens [B, T, N+1, W]`` entering block ``start`` (from the cache). Overrides may
        only sit in blocks ``>= start``.
        """
        if (pixels is None) == (tokens is None):
            raise ValueError("encode_video needs exactly one of pixels or tokens")
        self.check_block(start, "start block")
        src = pixels if pixels is not None else tokens
        b, t = src.shape[:2]
        with self.autocast():
            if pixels is not None:
                x = self.embed(pixels.flatten(0, 1))  # [F, N+1, W]
                x = self.run_blocks(x, 0, start)
            else:
                x = tokens.flatten(0, 1)  # [F, N+1, W]
            x = self.run_blocks(x, start, None, overrides, frames=t, **ctx)
            emb = self.head(x)  # [F, D']
        return emb.float().reshape(b, t, -1)  # [B, T, D']

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``[P, n_ctx]`` token ids on the backbone's device."""
        return self.clip.tokenize(texts).to(self.device)

    def encode_text(self, tokens: torch.Tensor,
                    overrides: Mapping[int, BlockOverride] | None = None) -> torch.Tensor:
        """Text embeddings ``[P, D']`` (float32, not normalised) of token ids ``[P, n_ctx]``
        (:meth:`FrozenCLIP.text_tower`, under this backbone's precision).

        Runs the causal text tower only up to the longest prompt (positions after a prompt's end
        never influence its end-of-text token), with ``overrides[l]`` in place of text block l;
        an override gets ``frames=1`` and ``attn_mask=`` the causal mask ``[n, n]``.
        """
        if not self.clip.causal_text:
            raise ModelError(f"{self.clip.name}: text adapters need a causal CLIP text tower with argmax pooling")
        overrides = overrides or {}
        bad = sorted(k for k in overrides if not 0 <= int(k) < self.text_layers)
        if bad:
            raise ValueError(f"text overrides for blocks {bad}: the text tower has blocks 0..{self.text_layers - 1}")
        calls = {int(i): (lambda blk, x, mask, _ov=ov, _i=int(i): _ov(FrozenBlock(blk, _i), x, 1, attn_mask=mask))
                 for i, ov in overrides.items()}
        with self.autocast():
            x = self.clip.text_tower(tokens, calls, self._checkpointing())
        return x.float()


def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every tensor in ``model.state_dict()`` (for "nothing frozen moved" checks)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_tensors(before: Mapping[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Names of state-dict tensors of ``model`` that differ bitwise from ``before``."""
    now = model.state_dict()
    return [k for k, v in before.items() if not torch.equal(v, now[k])]


class BackboneRequired(InputError):
    """A method that runs the frozen encoder was built without one."""


def require_backbone(backbone: FrozenCLIP | None, method: str, run: RunConfig | None = None) -> Backbone:
    """The :class:`Backbone` a method runs, or a one-line error when the trainer gave no encoder."""
    if backbone is None:
        raise BackboneRequired(f"{method} runs the frozen encoder at every step: build it with the encoder "
                         "(backbone=load_clip(...)); the trainer does this when method.needs.backbone")
    return Backbone(backbone, run)

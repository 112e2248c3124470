"""EV-CLIP: mask prompts (pixel reweighting before the frozen image encoder) and context prompts.

Spec methods.md §2 (behaviour of AI-CV-Lab/EV-CLIP, adapted in §2.3). Both generators read
frozen auxiliary features ``z [B, z_dim, t, 7, 7]`` of the *unmasked* clip. By default z are the
cached CLIP tokens entering block ``z_block`` (= the output of block ``z_block - 1``; default
``L // 2``: the output of the middle block, 6 of ViT-B's 12, 12 of ViT-L's 24), class token dropped, patch grid average-pooled to 7x7 (ViT-B/32
at 224 px already has a 7x7 grid and width 768 = Omnivore-S's z_dim, so generator shapes and
sizes equal the public code's), ``t = T`` slots (or ``T/2`` frame pairs).

Prompt kinds (``prompts``):

* ``context`` — trains from the cache alone (per-frame embeddings + tokens at ``z_block`` +
  class text; no backbone): ``mean_(t,7,7)(z) -> Linear(z_dim->D', no bias) -> GELU ->
  LayerNorm(D') -> x scale (init 1e-3)`` gives one token that joins the T frame embeddings before
  mean pooling. 394,241 parameters at z_dim 768, D' 512.
* ``mask`` — a Swin-UNet-style decoder turns z into one ``S x S`` mask per clip (softmax over
  all pixels with a learnable scale, min-max rescaled to [0, 1]); it multiplies the
  CLIP-normalised pixels of every frame (0 = the mean colour) and the frozen image encoder runs
  forward and backward on the masked frames every step (needs decoded frames + the backbone).
  5,660,845 parameters at z_dim 768, t = 4 (+52 at t = 8).
* ``both`` — mask, then the context token joins the masked frames' embeddings.

Video feature: mean over the T (+1 context) embeddings, L2-normalised; logits
``exp(logit_scale) * cos(video, class text)`` against the frozen class text (cached: the mean
over its templates). Loss: cross-entropy + ``consistency_weight`` x consistency on the T frame
embeddings (context token excluded): per-sample cosine matrix, averaged over the batch first,
``mean(-log((S + 1) / 2))`` (default weight 0.1, the README example). In the ``context``
variant the frame embeddings are the cached, frozen ones, so that term is a constant (it only
shifts the loss value); it acts on the generator in ``mask`` / ``both``.

Auxiliary encoder hook: ``aux_encoder`` names an entry of :data:`AUX_ENCODERS`; an
:class:`AuxEncoder` says what it reads from the cache (``needs``), its ``z_dim`` and slot count
``t_slots(T)``, and maps a :class:`VideoBatch` to ``z [B, z_dim, t, 7, 7]`` without gradients.
``clip-mid`` (cached CLIP tokens) and ``clip-trend`` (the same tokens and their slope over time:
motion-aware after the context prompt's pooling) are built in; another frozen video model (e.g. Omnivore) plugs
in with :func:`register_aux_encoder` and reads whatever its ``needs`` ask for (e.g. its own
features cached under ``tokens_at`` or the decoded ``pixels``). Its identity belongs in the store
key of whatever caches its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Backbone, Precision, RunConfig, require_backbone
from ..encoder import FrozenCLIP, ModelInfo
from ..errors import InputError
from ..layers.swin import PatchExpand, SwinBlock
from .base import CacheNeeds, Method, VideoBatch

DESCRIPTION = ("EV-CLIP: context prompts from the cache (cached mid-block tokens as z) or mask prompts "
               "that reweight pixels before the frozen image encoder (backbone); all-way with text")

GRID = 7  # the generators' spatial map size


@dataclass(frozen=True)
class Config:
    prompts: Literal["context", "mask", "both"] = "context"
    z_block: int | None = None  # tokens entering this block (= output of block z_block - 1) are z; None: L // 2
    z_slots: Literal["frames", "pairs"] = "frames"  # t = T, or T/2 by averaging frame pairs
    aux_encoder: str = "clip-mid"
    consistency_weight: float = 0.1
    context_scale_init: float = 1e-3
    mask_scale_init: float = 1.0
    precision: Precision = "auto"
    checkpointing: bool = False

    def __post_init__(self):
        if self.prompts not in ("context", "mask", "both"):
            raise InputError(f"prompts must be context, mask or both, not {self.prompts!r}")
        if self.z_slots not in ("frames", "pairs"):
            raise InputError(f"z_slots must be frames or pairs, not {self.z_slots!r}")
        if self.consistency_weight < 0:
            raise InputError(f"consistency_weight must be >= 0, got {self.consistency_weight}")


VARIANTS: list[dict] = [{"prompts": "context"}, {"prompts": "mask"}, {"prompts": "both"}]


# --------------------------------------------------------------------------- auxiliary features
class AuxEncoder:
    """Frozen features for the generators: ``encode(batch) -> z [B, z_dim, t, 7, 7]`` (no grad)."""

    name: str = ""
    z_dim: int = 0
    needs: CacheNeeds = CacheNeeds(emb=False)

    def t_slots(self, frames: int) -> int:
        raise NotImplementedError

    def encode(self, batch: VideoBatch) -> torch.Tensor:
        raise NotImplementedError


class ClipMidTokens(AuxEncoder):
    """Cached CLIP tokens entering ``block``: class token dropped, grid pooled to 7x7."""

    name = "clip-mid"

    def __init__(self, info: ModelInfo, block: int | None, slots: str = "frames"):
        block = info.layers // 2 if block is None else block  # the spec's output of block L/2 (1-based)
        if not 0 <= block < info.layers:
            raise InputError(f"ev_clip z_block {block} is not a block of this model (blocks 0..{info.layers - 1}); "
                             f"pass z_block={info.layers // 2} (the middle block) or another cached block")
        self.block = block
        self.grid = info.grid
        self.z_dim = info.width
        self.slots = slots
        self.needs = CacheNeeds(emb=False, tokens_at=(block,))

    def t_slots(self, frames: int) -> int:
        if self.slots == "pairs":
            if frames % 2:
                raise InputError(f"z_slots=pairs needs an even number of frames, got {frames}")
            return frames // 2
        return frames

    @torch.no_grad()
    def encode(self, batch: VideoBatch) -> torch.Tensor:
        if self.block not in batch.tokens:
            raise InputError(f"ev_clip needs the cached tokens at block {self.block} (extract --tokens-at {self.block})")
        tok = batch.tokens[self.block].float()  # [B, T, N+1, W]
        b, t, _, w = tok.shape
        h, gw = self.grid
        grid = tok[:, :, 1:].reshape(b * t, h, gw, w).permute(0, 3, 1, 2)  # [B*T, W, h, w]
        if (h, gw) != (GRID, GRID):
            grid = F.adaptive_avg_pool2d(grid, GRID)  # B/16: exact 2x2 average; others: adaptive
        z = grid.reshape(b, t, w, GRID, GRID).permute(0, 2, 1, 3, 4)  # [B, W, T, 7, 7]
        if self.slots == "pairs":
            z = z.reshape(b, w, t // 2, 2, GRID, GRID).mean(dim=3)  # [B, W, T/2, 7, 7]
        return z


class ClipTrendTokens(ClipMidTokens):
    """``clip-mid`` plus its linear trend over time: ``z = [tok_t ; c_t · tok_t]`` with
    ``c_t = 12 (t − t̄) / (T² − 1)`` (least-squares slope weights), ``[B, 2W, t, 7, 7]``.

    EV-CLIP's z comes from a video model (Omnivore), so the context prompt's pooling over time
    and space keeps what moves and where to. Frame-wise CLIP tokens lose that under the same
    pooling (a clip and its time reversal pool to the same z); the trend half's pooled mean is
    the per-channel slope of the tokens, which flips sign when the clip is reversed and, through
    the patches' positional content, says which way the object went. Frozen and free: no new
    encoder, only the cached tokens."""

    name = "clip-trend"

    def __init__(self, info: ModelInfo, block: int | None, slots: str = "frames"):
        super().__init__(info, block, slots)
        self.z_dim = 2 * info.width

    @torch.no_grad()
    def encode(self, batch: VideoBatch) -> torch.Tensor:
        z = super().encode(batch)  # [B, W, t, 7, 7]
        t = z.shape[2]
        pos = torch.arange(t, dtype=z.dtype, device=z.device)
        slope = 12 * (pos - pos.mean()) / max(t * t - 1, 1)  # [t]: mean_t(slope_t * x_t) = the LSQ slope of x
        return torch.cat([z, z * slope[None, None, :, None, None]], dim=1)  # [B, 2W, t, 7, 7]


AUX_ENCODERS: dict[str, Callable[[Config, ModelInfo], AuxEncoder]] = {
    "clip-mid": lambda cfg, info: ClipMidTokens(info, cfg.z_block, cfg.z_slots),
    "clip-trend": lambda cfg, info: ClipTrendTokens(info, cfg.z_block, cfg.z_slots),
}


def register_aux_encoder(name: str, factory: Callable[[Config, ModelInfo], AuxEncoder]) -> None:
    """Add an auxiliary encoder under ``name`` (``Config.aux_encoder``); duplicates are errors."""
    if name in AUX_ENCODERS:
        raise ValueError(f"auxiliary encoder {name!r} is already registered")
    AUX_ENCODERS[name] = factory


# --------------------------------------------------------------------------- context prompt
class ContextPrompt(nn.Module):
    """``z [B, z_dim, t, 7, 7] -> [B, 1, D']``: pooled, projected, normalised, scaled token."""

    def __init__(self, z_dim: int, embed_dim: int, scale_init: float = 1e-3):
        super().__init__()
        self.proj = nn.Linear(z_dim, embed_dim, bias=False)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(embed_dim)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pooled = z.mean(dim=(2, 3, 4))  # [B, z_dim]
        return (self.norm(self.act(self.proj(pooled))) * self.scale).unsqueeze(1)  # [B, 1, D']


# --------------------------------------------------------------------------- mask prompt
def _heads(dim: int, want: int = 8) -> int:
    h = min(want, dim)
    while dim % h:
        h -= 1
    return h


class MaskPrompt(nn.Module):
    """``z [B, z_dim, t, 7, 7] -> mask [B, 224, 224]`` in [0, 1] (one spatial mask per clip).

    Temporal squeeze (bias-free Linear t->t, GELU, t->1, GELU) and a LayerNorm over the whole
    ``[7, 7, z_dim]`` map; expand x2 (z_dim/2 channels) + 2 Swin blocks; x4 (z_dim/8) + 2 Swin
    blocks; x4 (z_dim/32); bias-free channel projection z_dim/32 -> z_dim/96 -> 1 (at least 1);
    softmax over all pixels with a learnable scale, min-max rescaled. Exact public layout for
    z_dim 768 / 1024; smaller widths (tests) scale the same way.
    """

    def __init__(self, z_dim: int, slots: int, scale_init: float = 1.0):
        super().__init__()
        if z_dim % 32:
            raise InputError(f"the mask generator needs z_dim divisible by 32, got {z_dim}")
        d1, d2, d3, d4 = z_dim // 2, z_dim // 8, z_dim // 32, max(1, z_dim // 96)
        self.t_mix = nn.Linear(slots, slots, bias=False)
        self.t_pool = nn.Linear(slots, 1, bias=False)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm([GRID, GRID, z_dim])
        s1, s2 = GRID * 2, GRID * 8
        self.up1 = PatchExpand(z_dim, d1, 2, GRID)
        self.stage1 = nn.Sequential(SwinBlock(d1, _heads(d1), s1, 7, 0), SwinBlock(d1, _heads(d1), s1, 7, 3))
        self.up2 = PatchExpand(d1, d2, 4, s1)
        self.stage2 = nn.Sequential(SwinBlock(d2, _heads(d2), s2, 7, 0), SwinBlock(d2, _heads(d2), s2, 7, 3))
        self.up3 = PatchExpand(d2, d3, 4, s2)
        self.out = nn.Sequential(nn.Linear(d3, d4, bias=False), nn.GELU(), nn.Linear(d4, 1, bias=False))
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.size = s2 * 4  # 224

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c = z.shape[:2]
        x = z.permute(0, 3, 4, 1, 2)  # [B, 7, 7, z_dim, t]
        x = self.act(self.t_pool(self.act(self.t_mix(x)))).squeeze(-1)  # [B, 7, 7, z_dim]
        x = self.norm(x).reshape(b, GRID * GRID, c)  # [B, 49, z_dim]
        x = self.stage1(self.up1(x))  # [B, 14*14, z_dim/2]
        x = self.stage2(self.up2(x))  # [B, 56*56, z_dim/8]
        m = self.out(self.up3(x)).view(b, -1)  # [B, 224*224]
        m = torch.softmax(self.scale * m, dim=-1)
        lo, hi = m.min(dim=-1, keepdim=True).values, m.max(dim=-1, keepdim=True).values
        m = (m - lo) / (hi - lo + 1e-8)
        return m.view(b, self.size, self.size)  # [B, 224, 224]


# --------------------------------------------------------------------------- loss
def consistency_loss(frames: torch.Tensor) -> torch.Tensor:
    """EV-CLIP consistency on frame embeddings ``[B, T, D']``: batch-mean cosine matrix ``S``,
    ``mean(-log((S + 1) / 2))`` (pulls a video's frames together)."""
    f = F.normalize(frames, dim=-1)
    s = (f @ f.transpose(1, 2)).mean(dim=0)  # [T, T]
    return -torch.log(((s + 1) / 2).clamp_min(1e-6)).mean()


# --------------------------------------------------------------------------- method
class EVCLIP(Method):
    """EV-CLIP with context and/or mask prompts; all-way protocol against the frozen class text."""

    name = "ev_clip"
    protocols = ("allway", "zeroshot", "base2novel")
    predicts = "text"

    def __init__(self, cfg: Config, info: ModelInfo, frames: int, backbone: Backbone | None):
        if cfg.aux_encoder not in AUX_ENCODERS:
            raise InputError(f"unknown aux_encoder {cfg.aux_encoder!r}; choose one of {', '.join(AUX_ENCODERS)}")
        aux = AUX_ENCODERS[cfg.aux_encoder](cfg, info)
        masked = cfg.prompts in ("mask", "both")
        an = aux.needs
        needs = CacheNeeds(emb=not masked or an.emb, cls=an.cls, tokens_at=an.tokens_at, text=True,
                           pixels=masked or an.pixels, backbone=masked or an.backbone)
        names = {"context": "context", "mask": "mask", "both": "mask + context"}
        label = f"{names[cfg.prompts]} prompts"
        if cfg.aux_encoder != Config.aux_encoder:  # z (what both prompts are made from) from another encoder
            label += f", {cfg.aux_encoder} z"
        super().__init__(info, frames, needs, f"EV-CLIP ({label})")
        self.cfg = cfg
        self.aux = aux
        slots = aux.t_slots(frames)
        self.context = (ContextPrompt(aux.z_dim, info.embed_dim, cfg.context_scale_init)
                        if cfg.prompts in ("context", "both") else None)
        self.mask = MaskPrompt(aux.z_dim, slots, cfg.mask_scale_init) if masked else None
        self.backbone = backbone
        if masked and backbone is None:
            raise InputError("ev_clip mask prompts run the frozen image encoder: build with the encoder")
        # CLIP's frozen temperature exp(logit_scale): the encoder's when it runs, else OpenAI CLIP's 100
        self.register_buffer("logit_scale", torch.tensor(100.0), persistent=True)

    def frame_embeddings(self, batch: VideoBatch) -> torch.Tensor:
        """``[B, T, D']`` frame embeddings: the cache's, or the frozen encoder's on masked frames."""
        if self.mask is None:
            if batch.emb is None:
                raise InputError("ev_clip context prompts need the cached frame embeddings")
            return batch.emb.float()
        if batch.pixels is None:
            raise InputError("ev_clip mask prompts need the decoded frames (needs.pixels)")
        mask = self._pixel_mask(batch, batch.pixels.shape[-1])  # [B, S, S]
        masked = batch.pixels * mask[:, None, None]  # [B, T, 3, S, S]
        return self.backbone.encode_video(pixels=masked)

    def _pixel_mask(self, batch: VideoBatch, size: int) -> torch.Tensor:
        """One pixel mask per video ``[B, S, S]`` from the cached mid-block patch grid."""
        mask = self.mask(self.aux.encode(batch))  # [B, 224, 224]
        if mask.shape[-1] != size:
            mask = F.interpolate(mask.unsqueeze(1), size=(size, size), mode="bilinear",
                                 align_corners=False).squeeze(1)
        return mask

    def support_features(self, batch: VideoBatch, text: torch.Tensor | None = None) -> torch.Tensor:
        """Index prototypes from the frame embeddings the method classifies (masked frames)."""
        return self.frame_embeddings(batch)

    def query_features(self, batch: VideoBatch) -> torch.Tensor:
        """``logit_scale`` · the video vector (the context token included) for every frame
        ``[B, T, D']``: its mean over T dotted with :meth:`index_class_vectors` is the logit."""
        frames = self.frame_embeddings(batch)  # [B, T, D']
        v = self.logit_scale * self._video(batch, frames)  # [B, D']
        return v[:, None, :].expand(-1, frames.shape[1], -1)

    def index_class_vectors(self, text: torch.Tensor | None) -> torch.Tensor:
        """The class text vectors ``[C, D']`` videos are scored against (frozen, templates averaged)."""
        if text is None:
            raise InputError("ev_clip scores against the cached class text; none was given")
        return self._text(text)

    def explain_mask(self, batch: VideoBatch) -> torch.Tensor | None:
        """The mask prompt over the frames, for ``clipcache query --explain``."""
        if self.mask is None:
            return None
        size = batch.pixels.shape[-1] if batch.pixels is not None else self.info.image_size
        return self._pixel_mask(batch, size)

    def _video(self, batch: VideoBatch, frames: torch.Tensor) -> torch.Tensor:
        if self.context is not None:
            ctx = self.context(self.aux.encode(batch))  # [B, 1, D']
            frames = torch.cat([ctx, frames], dim=1)  # [B, T+1, D']
        return F.normalize(frames.mean(dim=1), dim=-1)  # [B, D']

    @staticmethod
    def _text(text: torch.Tensor) -> torch.Tensor:
        t = F.normalize(text.float(), dim=-1).mean(dim=1)  # [C, D']
        return F.normalize(t, dim=-1)

    def video_logits(self, batch: VideoBatch, text: torch.Tensor) -> torch.Tensor:
        frames = self.frame_embeddings(batch)
        return self.logit_scale * self._video(batch, frames) @ self._text(text).t()  # [B, C]

    def video_loss(self, batch: VideoBatch, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.frame_embeddings(batch)  # [B, T, D']
        logits = self.logit_scale * self._video(batch, frames) @ self._text(text).t()
        loss = F.cross_entropy(logits, batch.labels)
        if self.cfg.consistency_weight:
            loss = loss + self.cfg.consistency_weight * consistency_loss(frames)
        return loss, logits


def build(cfg: Config, info: ModelInfo, frames: int, backbone: FrozenCLIP | None = None) -> EVCLIP:
    """The context variant never touches ``backbone`` (a deferred encoder is then never loaded)."""
    masked = cfg.prompts in ("mask", "both")
    bb = (require_backbone(backbone, f"ev_clip prompts={cfg.prompts}", RunConfig(cfg.precision, cfg.checkpointing))
          if masked else None)
    m = EVCLIP(cfg, info, frames, bb)
    if bb is not None:
        m.logit_scale.fill_(float(bb.logit_scale()))
    return m

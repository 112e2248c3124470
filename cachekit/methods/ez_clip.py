"""EZ-CLIP: temporal visual prompts + adapters inside both frozen CLIP towers, motion loss.

Per visual block l (spec methods.md §3.1-3.2; seed EZ-CLIP Eqs. 2, 3, 8-10), on the tokens
``z [B, T, N+1, W]`` entering the block:

1. ``p~ = p_l + mean_tokens(z)``                      ``[B, T, W]``  (Eq. 2, CLS included)
2. ``p^ = attn(ln_1(p~))`` across the T frames of a video, no residual (Eq. 3, frozen attn/ln)
3. ``[z, p] <- [z, p^] + attn(ln_1([z, p^]))`` per frame over N+2 tokens (Eq. 8); drop p
4. ``z^ = Adapter(z)``; ``z <- z^ + mlp(ln_2(z^))`` (Eqs. 9-10)

Text blocks: ``y = c + attn(ln_1(c))``, ``y^ = Adapter(y)``, ``y <- y^ + mlp(ln_2(y^))`` with the
causal mask (Eqs. 11-13). Adapters: ``x + up(GELU(down(x)))``, ratio 0.25, up-projection and
bias zero-initialised [code Shahzadnit/EZ-CLIP]. Prompts: uniform(-v, v) with
``v = sqrt(6 / (3 * 16 * 16 + W))`` (the code's constant: 16 is its patch size, kept for every
backbone), dropout 0.1. Video embedding: mean over T of the projected frame embeddings.

Trainable parameters, ViT-B/16 or ViT-B/32 (W = 768, text width 512, 12 + 12 blocks), T = 8:

======================  ======================================  ==========
image adapters           12 x (768*192 + 192 + 192*768 + 768)    3,550,464
text adapters            12 x (512*128 + 128 + 128*512 + 512)    1,580,544
temporal prompts (TVP)   12 x 8 x 768                               73,728
total                                                            5,204,736  (paper: 5.2M)
======================  ======================================  ==========

(tested in ``tests/test_methods_backbone.py``). With ``from_block = L`` the image adapters and
prompts exist only in blocks L..11 (text adapters stay in every text block).

Losses (all-way protocol, classes = the rows of ``text``): Eq. 1 cross-entropy of
``exp(logit_scale) * cos(video, class text)`` over all classes (the paper's form; the code's
in-batch symmetric KL is not used), plus the motion loss in the code's form on the un-normalised
frame embeddings ``[B, T, D']``: ``C`` = mean absolute central difference / 2 with replicate
padding, ``V`` = unbiased variance over T averaged; ``L_m = 1 / (1 + C + V)``. Total
``contrastive_weight * L_c + motion_weight * L_m`` (equal weights, Eq. 7).

Class text: with text adapters the text tower runs on the class prompts at every step. The
method learns the class names through :meth:`EZCLIP.bind_classes` (the generic Method hook the
trainer and evaluator call); prompts are ``templates`` filled with the name (averaged over
templates), or one description per class from ``descriptions`` (a ``name<TAB>description`` or
two-column CSV file, EZ-CLIP's GPT descriptions). Without text adapters the cached text is used.

Identity at initialisation: adapters start as the identity, so without prompts
(``prompts=False``) the wrapped towers reproduce the frozen CLIP exactly (tested). The temporal
prompts are *not* the identity at init: the prompt token is attended by every frame token even
when the learnable part is zero, as in the paper.

Partial caching: ``from_block = L > 0`` reads the tokens entering block L from the cache
(``extract --tokens-at L``); prompts are inserted at L (cached tokens carry no prompt tokens).
``from_block = 0`` decodes frames again and runs the whole tower.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Adapter, Backbone, BlockOverride, FrozenBlock, Precision, RunConfig, require_backbone
from ..encoder import FrozenCLIP, ModelInfo
from ..errors import InputError, InputNotFound
from ..templates import fill, resolve_templates
from .base import CacheNeeds, Method, VideoBatch

DESCRIPTION = ("EZ-CLIP: temporal visual prompts and adapters inside the frozen image and text towers, "
               "contrastive + motion loss (backbone; --from-block L starts from cached tokens)")


@dataclass(frozen=True)
class Config:
    from_block: int = 0  # prompts and image adapters in blocks >= L; L > 0 reads cached tokens at L
    prompts: bool = True  # temporal visual prompts (TVP)
    prompt_layers: Literal["all", "first"] = "all"  # "first": only at from_block (Table 11 ablation)
    prompt_dropout: float = 0.1
    image_adapters: bool = True
    text_adapters: bool = True
    adapter_ratio: float = 0.25
    contrastive_weight: float = 1.0
    motion_weight: float = 1.0
    templates: str = "single"  # class prompts for the adapted text tower: single, ma_fsar16 or a file
    descriptions: str | None = None  # file of "name<TAB>description" (or CSV): one prompt per class
    precision: Precision = "auto"
    checkpointing: bool = False

    def __post_init__(self):
        if self.from_block < 0:
            raise InputError(f"from_block must be >= 0, got {self.from_block}")
        if self.prompt_layers not in ("all", "first"):
            raise InputError(f"prompt_layers must be all or first, not {self.prompt_layers!r}")
        if not 0 <= self.prompt_dropout < 1:
            raise InputError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}")
        if self.adapter_ratio <= 0:
            raise InputError(f"adapter_ratio must be > 0, got {self.adapter_ratio}")


VARIANTS: list[dict] = [
    {},  # TVP + adapters + motion loss (the paper's model)
    {"prompts": False, "motion_weight": 0.0},  # the paper's "base model": adapters only
]


def display_name(cfg: Config, start: int = 0) -> str:
    """"EZ-CLIP", with where it starts and every part an ablation took out or changed (the
    paper's model is prompts + adapters + both losses): "EZ-CLIP (from block 4, no motion loss)"."""
    parts = [f"from block {start}"] if start else []
    if not cfg.prompts:
        parts.append("no temporal prompts")
    elif cfg.prompt_layers != "all":
        parts.append("prompts in the first block only")
    parts += [f"no {what}" for what, on in (("image adapters", cfg.image_adapters), ("text adapters", cfg.text_adapters),
                                             ("contrastive loss", cfg.contrastive_weight),
                                             ("motion loss", cfg.motion_weight)) if not on]
    for what, value, paper in (("contrastive", cfg.contrastive_weight, 1.0), ("motion", cfg.motion_weight, 1.0)):
        if value and value != paper:
            parts.append(f"{what} loss x{value:g}")
    return "EZ-CLIP" + (f" ({', '.join(parts)})" if parts else "")


def prompt_init_bound(width: int) -> float:
    """EZ-CLIP's uniform prompt init bound ``sqrt(6 / (3 * 16 * 16 + W))`` (0.0625 at W = 768)."""
    return math.sqrt(6.0 / (3 * 16 * 16 + width))


# --------------------------------------------------------------------------- modules
class PromptedBlock(BlockOverride):
    """One visual block with an optional temporal prompt ``[T, W]`` and an optional adapter."""

    def __init__(self, width: int, frames: int, prompt: bool, adapter: bool, ratio: float, dropout: float):
        super().__init__()
        self.frames = frames
        if prompt:
            bound = prompt_init_bound(width)
            self.prompt = nn.Parameter(torch.empty(frames, width).uniform_(-bound, bound))  # [T, W]
        else:
            self.register_parameter("prompt", None)
        self.dropout = nn.Dropout(dropout)
        self.adapter = Adapter(width, ratio) if adapter else None

    def forward(self, block: FrozenBlock, x: torch.Tensor, frames: int, **ctx) -> torch.Tensor:
        # x [F, N+1, W], F = B*T
        if self.prompt is not None:
            if frames != self.frames:
                raise InputError(f"ez_clip was built for {self.frames} frames per video, got {frames}")
            f, n1, w = x.shape
            z = x.view(f // frames, frames, n1, w)  # [B, T, N+1, W]
            p = self.dropout(self.prompt) + z.mean(dim=2)  # [B, T, W]  Eq. 2
            p = block.attend(block.ln_1(p))  # [B, T, W]  Eq. 3: attention across frames, no residual
            seq = torch.cat([x, p.reshape(f, 1, w)], dim=1)  # [F, N+2, W]
            x = (seq + block.attention(seq))[:, :n1]  # [F, N+1, W]  Eq. 8, prompt dropped
        else:
            x = x + block.attention(x)
        if self.adapter is not None:
            x = self.adapter(x)  # Eq. 9
        return x + block.mlp(x)  # Eq. 10


class TextAdapterBlock(BlockOverride):
    """One text block with an adapter between the attention and MLP residuals (Eqs. 11-13)."""

    def __init__(self, width: int, ratio: float):
        super().__init__()
        self.adapter = Adapter(width, ratio)

    def forward(self, block: FrozenBlock, x: torch.Tensor, frames: int, attn_mask=None, **ctx) -> torch.Tensor:
        y = self.adapter(x + block.attention(x, attn_mask))  # [P, n, W_text]
        return y + block.mlp(y)


def motion_loss(frames: torch.Tensor) -> torch.Tensor:
    """EZ-CLIP's motion loss (code form) on un-normalised frame embeddings ``[B, T, D']``.

    ``C`` = mean ``|e(t+1) - e(t-1)| / 2`` with replicate padding, ``V`` = mean unbiased
    variance over T; returns ``1 / (1 + C + V)`` (lower when frames differ more).
    """
    padded = torch.cat([frames[:, :1], frames, frames[:, -1:]], dim=1)  # [B, T+2, D']
    c = ((padded[:, 2:] - padded[:, :-2]).abs() / 2).mean()
    v = frames.var(dim=1, unbiased=True).mean() if frames.shape[1] > 1 else frames.new_zeros(())
    return 1.0 / (1.0 + c + v)


def read_descriptions(path: str) -> dict[str, str]:
    """``name<TAB>description`` lines or a two-column CSV (header optional) -> {name: description}."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFound(f"descriptions file {path} not found")
    text = p.read_text(encoding="utf-8")
    rows = ([ln.split("\t", 1) for ln in text.splitlines() if ln.strip()] if "\t" in text
            else list(csv.reader(text.splitlines())))
    out = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2 and r[0].strip() and r[1].strip()}
    if not out:
        raise InputError(f"{path}: no 'name<TAB>description' (or CSV name,description) rows")
    return out


# --------------------------------------------------------------------------- method
class EZCLIP(Method):
    """EZ-CLIP on the frozen backbone; all-way protocol (zero-shot / base-to-novel / all-way K-shot)."""

    name = "ez_clip"
    protocols = ("allway", "zeroshot", "base2novel")
    predicts = "text"

    def __init__(self, cfg: Config, backbone: Backbone, frames: int):
        info = backbone.info
        start = backbone.check_block(cfg.from_block, "from_block")
        needs = CacheNeeds(emb=False, tokens_at=(start,) if start > 0 else (), text=True,
                           pixels=start == 0, backbone=True)
        super().__init__(info, frames, needs, display_name(cfg, start))
        self.cfg = cfg
        self.start = start
        self.backbone = backbone
        blocks = {}
        if cfg.prompts or cfg.image_adapters:
            for i in range(start, info.layers):
                prompt = cfg.prompts and (cfg.prompt_layers == "all" or i == start)
                if prompt or cfg.image_adapters:
                    blocks[str(i)] = PromptedBlock(info.width, frames, prompt, cfg.image_adapters,
                                                   cfg.adapter_ratio, cfg.prompt_dropout)
        self.visual_blocks = nn.ModuleDict(blocks)
        self.text_blocks = nn.ModuleDict(
            {str(i): TextAdapterBlock(info.text_width, cfg.adapter_ratio) for i in range(backbone.text_layers)}
            if cfg.text_adapters else {})
        self._descriptions = read_descriptions(cfg.descriptions) if cfg.descriptions else None
        self._templates = resolve_templates(cfg.templates)
        self.class_names: list[str] | None = None
        self._class_tokens: torch.Tensor | None = None  # [C*P, n_ctx] token ids
        self._prompts_per_class = 1
        self._text_cache: torch.Tensor | None = None  # class text while evaluating (eval mode)

    def train(self, mode: bool = True):
        self._text_cache = None
        return super().train(mode)

    # ------------------------------------------------------------------ classes
    def bind_classes(self, names: list[str]) -> None:
        """Tokenise the class prompts once; the adapted text tower encodes them every step. The
        all-way feed binds its class set before every step: the same names keep their tokens
        (tokenising 40 prompts took ~8 ms a step)."""
        names = list(names)
        if names == self.class_names:
            self._text_cache = None
            return
        if self._descriptions is not None:
            missing = [n for n in names if n not in self._descriptions]
            if missing:
                raise InputError(f"descriptions file {self.cfg.descriptions} has no description for "
                                 f"{len(missing)} class(es), e.g. {missing[0]!r}")
            prompts = [self._descriptions[n] for n in names]
            per = 1
        else:
            prompts = [p for n in names for p in fill(self._templates, n.replace("_", " "))]
            per = len(self._templates)
        self.class_names = names
        self._prompts_per_class = per
        self._class_tokens = self.backbone.clip.tokenize(prompts)  # [C*P, n_ctx]
        self._text_cache = None

    def class_text(self, text: torch.Tensor | None) -> torch.Tensor:
        """Normalised class embeddings ``[C, D']``: adapted text tower, or the cached ``text [C, P, D']``."""
        if not self.cfg.text_adapters:
            if text is None:
                raise InputError("ez_clip without text adapters needs the cached class text")
            t = F.normalize(text.float(), dim=-1).mean(dim=1)  # [C, D']
            return F.normalize(t, dim=-1)
        if self.class_names is None:
            raise InputError("ez_clip runs its text adapters on the class prompts: call "
                             "method.bind_classes(class_names) before training or evaluating")
        c = len(self.class_names)
        if text is not None and text.shape[0] != c:
            raise InputError(f"ez_clip was bound to {c} class names but given text for {text.shape[0]} classes; "
                             "call bind_classes with the names of the text rows")
        if self._text_cache is not None and not self.training:
            return self._text_cache
        tokens = self._class_tokens.to(self.backbone.device)
        emb = self.backbone.encode_text(tokens, self.text_blocks_by_index())  # [C*P, D']
        emb = F.normalize(emb, dim=-1).view(c, self._prompts_per_class, -1).mean(dim=1)  # [C, D']
        emb = F.normalize(emb, dim=-1)
        if not self.training and not torch.is_grad_enabled():
            self._text_cache = emb  # the text is fixed during an evaluation pass
        return emb

    def text_blocks_by_index(self) -> dict[int, BlockOverride]:
        return {int(k): m for k, m in self.text_blocks.items()}

    def visual_blocks_by_index(self) -> dict[int, BlockOverride]:
        return {int(k): m for k, m in self.visual_blocks.items()}

    # ------------------------------------------------------------------ video
    def frame_embeddings(self, batch: VideoBatch) -> torch.Tensor:
        """Adapted per-frame embeddings ``[B, T, D']`` (not normalised).

        Starts from the cached tokens at ``from_block`` when the batch has them, else from the
        pixels (blocks before ``from_block`` then run frozen: the same result).
        """
        ov = self.visual_blocks_by_index()
        if self.start in batch.tokens:
            return self.backbone.encode_video(tokens=batch.tokens[self.start], start=self.start, overrides=ov)
        if batch.pixels is not None:
            return self.backbone.encode_video(pixels=batch.pixels, start=self.start, overrides=ov)
        raise InputError(f"ez_clip (from_block {self.start}) needs "
                         + (f"the cached tokens at block {self.start}" if self.start else "the decoded frames"))

    def support_features(self, batch: VideoBatch, text: torch.Tensor | None = None) -> torch.Tensor:
        """Index prototypes from the adapted frame embeddings, not the frozen cache's."""
        return self.frame_embeddings(batch)

    def query_features(self, batch: VideoBatch) -> torch.Tensor:
        """``logit_scale`` · the adapted video vector for every frame ``[B, T, D']``: its mean over T
        dotted with :meth:`index_class_vectors` is the logit."""
        frames = self.frame_embeddings(batch)  # [B, T, D']
        v = self.backbone.logit_scale() * F.normalize(frames.float().mean(dim=1), dim=-1)  # [B, D']
        return v[:, None, :].expand(-1, frames.shape[1], -1)

    def index_class_vectors(self, text: torch.Tensor | None) -> torch.Tensor:
        """The class embeddings ``[C, D']`` of the bound classes (adapted text tower, or the cache's)."""
        return self.class_text(text)

    def _logits(self, frames: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        video = F.normalize(frames.mean(dim=1), dim=-1)  # [B, D']
        return self.backbone.logit_scale() * video @ self.class_text(text).t()  # [B, C]

    def video_logits(self, batch: VideoBatch, text: torch.Tensor) -> torch.Tensor:
        return self._logits(self.frame_embeddings(batch), text)

    def video_loss(self, batch: VideoBatch, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.frame_embeddings(batch)  # [B, T, D']
        logits = self._logits(frames, text)
        loss = self.cfg.contrastive_weight * F.cross_entropy(logits, batch.labels)
        if self.cfg.motion_weight:
            loss = loss + self.cfg.motion_weight * motion_loss(frames)
        return loss, logits


def build(cfg: Config, info: ModelInfo, frames: int, backbone: FrozenCLIP | None = None) -> EZCLIP:
    bb = require_backbone(backbone, "ez_clip", RunConfig(cfg.precision, cfg.checkpointing))
    if bb.info.width != info.width or bb.info.layers != info.layers:
        raise InputError(f"ez_clip: the encoder ({bb.info.width} wide, {bb.info.layers} blocks) is not the "
                         f"cache's model ({info.width} wide, {info.layers} blocks)")
    return EZCLIP(cfg, bb, frames)

"""Vision towers the toy CLIP can be pretrained with, as changes to open_clip's ViT after it is built.

``"vit"`` is open_clip's ViT as the toy config describes it (16-pixel patch embedding, class
token). ``"stem_max"`` finds a small object faster (``benchmarks/toy_limits.py``): a normalised
convolutional stem (:func:`conv_stem`) in place of the patch embedding, and a max over the tokens
after ``ln_post`` in place of the class token. Both keep open_clip's blocks and the 7x7 token grid,
so the tokens entering block L, and prompts and adapters inside the blocks, are unchanged.

The tower's name is saved in the weights' metadata (the pretraining config), and the loader
applies it before it loads the weights (:func:`apply_tower`).
"""

from __future__ import annotations

import types
from typing import Callable

from ..errors import InputError


def conv_stem(width: int, channels: tuple[int, ...] = (32, 64, 96), groups: int = 8):
    """Four stride-2 3x3 convolutions (``channels``, then ``width``; GroupNorm and GELU between) in
    place of the ViT's 16-pixel patch embedding: the same ``[F, W, S/16, S/16]`` grid, but every
    token sees a 31-pixel neighbourhood through normalised features. (Without the normalisation the
    same stem learnt shape no faster than the patch embedding.)"""
    from torch import nn

    layers, c_in = [], 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, 2, 1), nn.GroupNorm(groups, c), nn.GELU()]
        c_in = c
    return nn.Sequential(*layers, nn.Conv2d(c_in, width, 3, 2, 1))  # [F, 3, S, S] -> [F, W, S/16, S/16]


def _token_max(self, x):
    """open_clip's ``_global_pool`` with a max over all tokens: ``[F, N+1, W] -> ([F, W], [F, N, W])``."""
    return x.amax(1), x[:, 1:]


def stem_max(model) -> None:
    """:func:`conv_stem` in place of ``model.visual.conv1``; a max over the tokens after ``ln_post``
    (before the projection) in place of the class token (open_clip has no max pooling, so its
    ``_global_pool`` is replaced on this instance)."""
    v = model.visual
    v.conv1 = conv_stem(v.conv1.out_channels).to(v.positional_embedding.device)
    v._global_pool = types.MethodType(_token_max, v)


TOWERS: dict[str, Callable | None] = {"vit": None, "stem_max": stem_max}


def check_tower(name: str) -> str:
    if name not in TOWERS:
        raise InputError(f"unknown toy tower {name!r}; choose one of {', '.join(TOWERS)}")
    return name


def apply_tower(model, name: str) -> None:
    """Turn a freshly built toy model (open_clip ``CLIP``) into tower ``name``, in place."""
    change = TOWERS[check_tower(name)]
    if change is not None:
        change(model)

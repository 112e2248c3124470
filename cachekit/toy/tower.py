"""Vision towers the toy CLIP can be pretrained with, as changes to open_clip's ViT after it is built.

``"stem_max"`` (the shipped toy's) finds a small object faster than the patch embedding
(``benchmarks/toy_limits.py``): a normalised convolutional stem (:func:`conv_stem`) in place of the
patch embedding, and a max over the tokens after ``ln_post`` in place of the class token.
``"vit"`` is open_clip's ViT as the toy config describes it (16-pixel patch embedding, class
token). ``"stem_max_scales"`` (measured in ``benchmarks/toy_limits.py``, not shipped) shares the
stem across input scales (:func:`scale_max_stem`). All keep open_clip's blocks and the 7x7 token
grid, so the tokens entering block L, and prompts and adapters inside the blocks, are unchanged.

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


def scale_max_stem(stem, scales: tuple[float, ...] = (2 / 3, 1.0, 1.5)):
    """``stem`` run on the image resized by each of ``scales``, each output brought back to the
    stem's grid at scale 1 (max pooling from above, nearest from below), and the elementwise max
    over scales: one set of weights sees every object at several sizes, so an object 1.5x smaller
    than any trained one reaches the blocks, at scale 1.5, as a trained size does at scale 1."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class _ScaleMax(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = stem
            self.scales = tuple(sorted(scales, key=lambda v: v != 1.0))  # scale 1 first: it fixes the grid

        def forward(self, x):  # [F, 3, S, S] -> [F, W, S/16, S/16]
            grid = None
            out = None
            for s in self.scales:
                xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                                                      antialias=s < 1)
                y = self.stem(xs)  # [F, W, g_s, g_s]
                if grid is None:
                    grid = y.shape[-2:]
                elif y.shape[-1] > grid[-1]:
                    y = F.adaptive_max_pool2d(y, grid)
                elif y.shape[-1] < grid[-1]:
                    y = F.interpolate(y, size=grid, mode="nearest")
                out = y if out is None else torch.maximum(out, y)
            return out

    return _ScaleMax()


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


def stem_max_scales(model) -> None:
    """:func:`stem_max` with its stem shared across input scales (:func:`scale_max_stem`)."""
    stem_max(model)
    model.visual.conv1 = scale_max_stem(model.visual.conv1)


TOWERS: dict[str, Callable | None] = {"vit": None, "stem_max": stem_max, "stem_max_scales": stem_max_scales}


def check_tower(name: str) -> str:
    if name not in TOWERS:
        raise InputError(f"unknown toy tower {name!r}; choose one of {', '.join(TOWERS)}")
    return name


def apply_tower(model, name: str) -> None:
    """Turn a freshly built toy model (open_clip ``CLIP``) into tower ``name``, in place."""
    change = TOWERS[check_tower(name)]
    if change is not None:
        change(model)

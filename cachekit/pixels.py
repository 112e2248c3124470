"""The encoder's image preprocessing, written once: open_clip's resize, centre crop and
normalisation of uint8 RGB frames, bit for bit, without torchvision.

:class:`~cachekit.encoder.FrozenCLIP` (extraction, the pixel cache) and the query path
(:mod:`cachekit.index.pixels`) both call these with the cache key's preprocessing config
(size, mean, std, interpolation, resize mode); torch is imported inside the functions so that
importing this module costs nothing.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch


def _resize_uint8(x: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    """torchvision's ``resize`` of a uint8 batch ``[F, 3, H, W]`` with antialiasing, bit for bit."""
    import torch
    import torch.nn.functional as F

    native = mode == "bicubic" or (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
                                   or platform.machine() in ("aarch64", "arm64"))
    if native and x.device.type == "cpu":
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    y = F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True)
    if mode == "bicubic":
        y = y.clamp_(0, 255)
    return y.round_().to(torch.uint8)


def resize_crop(frames: np.ndarray, pre: dict) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> uint8 ``[F, 3, S, S]``: the resize and centre crop of the encoder's
    preprocessing (:meth:`FrozenCLIP.preprocess` calls this), without torchvision."""
    import torch
    import torch.nn.functional as F

    s = int(pre["size"])
    mode = pre["interpolation"]
    if mode not in ("bicubic", "bilinear"):
        raise InputError(f"interpolation {mode!r} is not supported")
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2)  # [F, 3, H, W] uint8
    h, w = x.shape[-2:]
    if pre.get("resize_mode", "shortest") == "squash":
        return _resize_uint8(x, [s, s], mode) if (h, w) != (s, s) else x
    if min(h, w) != s:
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(s * long / short)
        size = [new_long, s] if w <= h else [s, new_long]
        x = _resize_uint8(x, size, mode)
        h, w = x.shape[-2:]
    if h < s or w < s:
        pad_w, pad_h = max(s - w, 0), max(s - h, 0)
        x = F.pad(x, [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2])
        h, w = x.shape[-2:]
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
    return x[..., top:top + s, left:left + s]


def normalise_pixels(x, pre: dict) -> torch.Tensor:
    """uint8 ``[..., 3, S, S]`` -> float32, scaled to [0, 1] and normalised with the model's mean/std."""
    import torch

    x = torch.as_tensor(x).to(torch.float32, copy=True).div_(255.0)  # a copy: a float32 input is the caller's
    mean = torch.tensor(pre["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre["std"], dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def preprocess_frames(frames: np.ndarray, pre: dict) -> torch.Tensor:
    """uint8 RGB ``[F, H, W, 3]`` -> ``[F, 3, S, S]`` float32, equal to the encoder's preprocessing."""
    return normalise_pixels(resize_crop(frames, pre), pre)


__all__ = ["normalise_pixels", "preprocess_frames", "resize_crop"]

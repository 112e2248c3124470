"""Pixels for a query: decode a video as at extraction and preprocess it exactly as the encoder did.

The index's sampler (view 0) picks the frames; resize, centre crop and normalisation follow the
cache key's preprocessing config through :mod:`cachekit.pixels`, the one implementation the
encoder uses too (:meth:`FrozenCLIP.preprocess`).
"""

from __future__ import annotations

import os

import numpy as np

from ..pixels import normalise_pixels, preprocess_frames, resize_crop
from ..video import Backend, SamplerConfig, decode_video


def sampler_of(meta: dict) -> SamplerConfig:
    """The extraction sampler of the index's cache key, one view (view 0: segment centres)."""
    s = dict(meta["cache_key"].get("sampler") or {"frames": meta["frames"]})
    s["views"] = 1
    return SamplerConfig(**s)


def decode_frames(path: str | os.PathLike, meta: dict, backend: Backend = "auto") -> np.ndarray:
    """The sampled frames of view 0, ``[T, H, W, 3]`` uint8 RGB; :class:`DecodeError` naming the file."""
    # view 0 never reads the content key (only extra views are seeded by it): no need to hash the file
    return decode_video(path, sampler_of(meta), "0" * 64, backend).frames[0]


__all__ = ["decode_frames", "normalise_pixels", "preprocess_frames", "resize_crop", "sampler_of"]

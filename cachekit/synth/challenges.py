"""The degradations EV-CLIP targets, applied to rendered frames: ``blur``, camera ``shake``,
``dark`` (low light with sensor noise) and an ``occluder`` item."""

from __future__ import annotations

import numpy as np

from .motions import Item, make_track


def _box_blur(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over a window of 2 * radius + 1 along axis, edges replicated."""
    if radius < 1:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = x.shape[axis]
    hi, lo = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    hi[axis], lo[axis] = slice(2 * radius + 1, 2 * radius + 1 + n), slice(0, n)
    return (c[tuple(hi)] - c[tuple(lo)]) * np.float32(1 / (2 * radius + 1))


def blur(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian (three box passes per axis) or axis-aligned motion blur of [3, T, H, W]."""
    size = frames.shape[2]
    if rng.uniform() < 0.5:
        sigma = rng.uniform(0.008, 0.016) * size
        radius = max(1, int(round((np.sqrt(4 * sigma**2 + 1) - 1) / 2)))  # 3 boxes ~ Gaussian
        passes = [(radius, 1)] * 3 + [(radius, 2)] * 3  # axes of one frame [3, H, W]
    else:
        length = rng.uniform(0.02, 0.05) * size
        passes = [(max(1, int(round(length / 2))), int(rng.integers(1, 3)))]
    out = np.empty_like(frames)
    for k in range(frames.shape[1]):  # one frame at a time stays in cache
        frame = frames[:, k]
        for radius, axis in passes:
            frame = _box_blur(frame, radius, axis)
        out[:, k] = frame
    return out


def shake(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Egocentric camera motion on planar frames [3, T, H, W]: mean-reverting random-walk
    translation and rotation per frame, slight zoom-in to keep the borders mostly inside,
    bilinear resampling."""
    _, t_len, h, w = frames.shape
    step = rng.uniform(0.012, 0.025) * h  # px per frame
    rot_step = np.deg2rad(rng.uniform(0.4, 1.0))
    keep = 0.8  # pull back towards the rest pose
    noise = rng.standard_normal((t_len, 3))
    pose = np.zeros((t_len, 3))  # dx, dy, angle
    for k in range(1, t_len):
        pose[k] = keep * pose[k - 1] + noise[k] * (step, step, rot_step)
    zoom = 1.12
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    px, py = (xx - cx) / zoom, (yy - cy) / zoom  # [H, W] about the centre
    out = np.empty_like(frames)
    for k in range(t_len):  # one frame at a time stays in cache
        c, s = np.float32(np.cos(pose[k, 2])), np.float32(np.sin(pose[k, 2]))
        src_x = np.clip(cx + c * px - s * py - np.float32(pose[k, 0]), 0, w - 1)  # [H, W]
        src_y = np.clip(cy + s * px + c * py - np.float32(pose[k, 1]), 0, h - 1)
        x0 = np.minimum(src_x.astype(np.intp), w - 2)  # floor: coordinates are >= 0
        y0 = np.minimum(src_y.astype(np.intp), h - 2)
        fx, fy = src_x - x0, src_y - y0
        i00 = y0 * w + x0
        i01, i10, i11 = i00 + 1, i00 + w, i00 + w + 1
        for ch in range(3):
            plane = frames[ch, k].reshape(-1)
            top = np.take(plane, i00)
            top += (np.take(plane, i01) - top) * fx
            bottom = np.take(plane, i10)
            bottom += (np.take(plane, i11) - bottom) * fx
            out[ch, k] = top + (bottom - top) * fy
    return out


def dark(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low light: brightness scaled to 15-25 %, then shot (Poisson-like) and read noise."""
    gain = rng.uniform(0.15, 0.25)
    photons = rng.uniform(60, 200)  # photo-electrons at full white
    read = rng.uniform(0.004, 0.012)
    signal = frames * np.float32(gain)
    std = np.sqrt(signal / np.float32(photons) + np.float32(read**2))
    return signal + std * rng.standard_normal(frames.shape, dtype=np.float32)


def occluder(rng: np.random.Generator, t: np.ndarray, s: float) -> Item:
    half_w, half_h = rng.uniform(0.08, 0.16) * s, rng.uniform(0.2, 0.45) * s
    x0, y0 = rng.uniform(0.2, 0.8) * s, rng.uniform(0.3, 0.7) * s
    moving = rng.uniform() < 0.5
    travel = rng.uniform(0.3, 0.6) * s * rng.choice([-1.0, 1.0]) if moving else 0.0
    colour = rng.uniform(0.05, 0.35, 3)
    track = make_track(t, x0 - travel / 2 + travel * t, y0, angle=rng.uniform(-0.3, 0.3))
    return Item("box", colour, half_w, track, aspect=half_h / half_w, outline=True)

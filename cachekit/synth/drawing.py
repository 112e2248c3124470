"""Drawing items on frames with vectorised numpy: a textured background, signed-distance shapes,
alpha compositing inside a per-item crop window."""

from __future__ import annotations

import numpy as np

from .motions import Item, per_frame, smoothstep


def _interp_matrix(n: int, g: int) -> np.ndarray:
    """[n, g] smooth (smoothstep-weighted linear) interpolation from g grid points to n pixels."""
    pos = np.linspace(0, g - 1, n)
    i0 = np.minimum(np.floor(pos).astype(int), g - 2)
    w = smoothstep(pos - i0)
    a = np.zeros((n, g))
    a[np.arange(n), i0] = 1 - w
    a[np.arange(n), i0 + 1] = w
    return a


BACKGROUND_KINDS = ("noisy", "striped", "gradient")  # what ``kind`` picks, by index


def background(
    rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray, kind: int | None = None
) -> np.ndarray:
    """[H, W, 3] float32 textured background: smooth noise, stripes or a gradient
    (:data:`BACKGROUND_KINDS`; drawn from rng unless ``kind`` is given), plus grain."""
    kind = rng.integers(3) if kind is None else kind
    c1, c2 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    if kind == 0:  # smooth noise
        g = int(rng.integers(3, 8))
        a = _interp_matrix(size, g)
        m = a @ rng.uniform(0, 1, (g, g)) @ a.T  # [H, W]
    elif kind == 1:  # soft stripes
        phi, period = rng.uniform(0, np.pi), rng.uniform(0.1, 0.3) * size
        phase, hard = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 4.0)
        wave = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / period + phase)
        m = 0.5 + 0.5 * np.tanh(hard * wave) / np.tanh(hard)
    else:  # linear gradient
        phi = rng.uniform(0, 2 * np.pi)
        proj = xx * np.cos(phi) + yy * np.sin(phi)
        m = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    grain = rng.uniform(0.01, 0.03) * rng.standard_normal((size, size))
    bg = c1 + (c2 - c1) * m[..., None] + grain[..., None]  # [H, W, 3]
    return np.clip(bg, 0, 1).astype(np.float32)


def _sdf(
    item: Item, xx: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Signed distance in px to the item's edge (negative inside), [T, H, W]; also the rotated
    local coordinate u / r (for shading) and the marker's distance (or None)."""
    tr = item.track
    x, y, r = per_frame(tr.x), per_frame(tr.y), per_frame(item.radius * tr.scale)
    dx, dy = xx - x, yy - y  # [T, H, W]
    if item.shape == "segment":
        ex, ey = per_frame(item.end[:, 0]), per_frame(item.end[:, 1])
        vx, vy = ex - x, ey - y
        h = np.clip((dx * vx + dy * vy) / np.maximum(vx * vx + vy * vy, 1e-9), 0, 1)
        return np.hypot(dx - h * vx, dy - h * vy) - r, np.zeros_like(dx), None
    c, s = per_frame(np.cos(tr.angle)), per_frame(np.sin(tr.angle))
    u, v = c * dx + s * dy, -s * dx + c * dy  # object frame, u along the object's angle
    marker_at = 0.45
    if item.shape == "disc":
        d = np.hypot(dx, dy) - r
    elif item.shape == "ring":
        d = np.abs(np.hypot(dx, dy) - 0.775 * r) - 0.225 * r
        marker_at = 0.775
    elif item.shape == "square":
        d = np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    elif item.shape == "triangle":  # vertex along +u, circumradius r
        d = np.maximum(np.maximum(-u, 0.5 * u + 0.8660254 * v), 0.5 * u - 0.8660254 * v) - 0.5 * r
    elif item.shape == "box":
        d = np.maximum(np.abs(u) - r, np.abs(v) - item.aspect * r)
    else:
        raise ValueError(f"unknown shape {item.shape!r}")
    marker = None
    if item.marker:
        marker = np.hypot(u - marker_at * r, v) - 0.17 * r
    return d, u / r, marker


def _composite(out: np.ndarray, cover: np.ndarray, rgb: np.ndarray) -> None:
    """out [3, T, H, W] <- out over rgb ([3] or [3, T, H, W]) with coverage cover [T, H, W],
    in place. Planar layout: broadcasting over a trailing RGB axis of 3 is several times slower."""
    if rgb.ndim == 1:
        rgb = rgb[:, None, None, None]
    out *= 1 - cover
    out += cover * rgb


def _crop_window(item: Item, h: int, w: int, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame pixel rows [T, By] and columns [T, Bx] of a fixed-size window, inside the
    frame, that holds everything the item draws."""
    tr = item.track
    if item.shape == "segment":
        reach = item.radius + pad
        ex, ey = item.end[:, 0], item.end[:, 1]
        x_lo, x_hi = np.minimum(tr.x, ex) - reach, np.maximum(tr.x, ex) + reach
        y_lo, y_hi = np.minimum(tr.y, ey) - reach, np.maximum(tr.y, ey) + reach
    elif item.shape == "box":  # half extents of the rotated box
        c, s = np.abs(np.cos(tr.angle)), np.abs(np.sin(tr.angle))
        half = item.radius * tr.scale
        reach_x = half * (c + item.aspect * s) + pad  # [T]
        reach_y = half * (s + item.aspect * c) + pad
        x_lo, x_hi, y_lo, y_hi = tr.x - reach_x, tr.x + reach_x, tr.y - reach_y, tr.y + reach_y
    else:  # every other shape fits in a circle of 1.14 radii (square: 0.8 * sqrt(2))
        reach = item.radius * tr.scale * 1.14 + pad  # [T]
        x_lo, x_hi, y_lo, y_hi = tr.x - reach, tr.x + reach, tr.y - reach, tr.y + reach
    rows, cols = [], []
    for lo, hi, n, out in ((y_lo, y_hi, h, rows), (x_lo, x_hi, w, cols)):
        start = np.floor(lo).astype(np.int64)
        span = int(min(n, np.max(np.ceil(hi).astype(np.int64) - start) + 1))
        start = np.clip(start, 0, n - span)
        out.append(start[:, None] + np.arange(span))
    return rows[0], cols[0]


def draw(out: np.ndarray, item: Item, mask: np.ndarray | None = None) -> None:
    """Draw item into planar frames out [3, T, H, W] (in place), working on a window around
    it; write its coverage into mask [T, H, W] when given."""
    _, t_len, h, w = out.shape
    width = max(1.0, w / 160)  # outline, px
    rows, cols = _crop_window(item, h, w, pad=2 + width)  # [T, By], [T, Bx]
    index = (np.arange(t_len)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = out[(slice(None), *index)]  # [3, T, By, Bx]
    yy = rows[:, :, None].astype(np.float32)  # [T, By, 1]
    xx = cols[:, None, :].astype(np.float32)  # [T, 1, Bx]
    d, u, marker = _sdf(item, xx, yy)  # [T, By, Bx]
    alpha = item.track.alpha[:, None, None].astype(np.float32)
    cover = np.clip(0.5 - d, 0, 1) * alpha
    if item.outline:
        inner = np.clip(0.5 - (d + width), 0, 1) * alpha
        _composite(patch, cover, (0.25 * item.colour).astype(np.float32))
        shade = 1 + 0.18 * np.clip(u, -1, 1)  # [T, By, Bx]
        rgb = item.colour.astype(np.float32)[:, None, None, None]
        _composite(patch, inner, np.clip(shade * rgb, 0, 1))  # [3, T, By, Bx]
    else:
        _composite(patch, cover, item.colour.astype(np.float32))
    if marker is not None:
        mark = np.clip(0.5 - marker, 0, 1) * alpha
        lum = float(item.colour @ np.array([0.3, 0.59, 0.11]))
        _composite(patch, mark, np.full(3, 0.05 if lum > 0.5 else 0.97, dtype=np.float32))
    out[(slice(None), *index)] = patch
    if mask is not None:
        mask[index] = cover

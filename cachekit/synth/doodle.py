"""The second style of synthetic clips (``SynthConfig(style="doodle")``, ``clipcache synth --style
doodle``): drawn independently of the benchmark's renderer, to check whether what a few-shot head
learnt on the benchmark transfers to clips it never saw the like of.

Everything a clip is made of differs from the default style: the classes' motions
(:data:`cachekit.synth.classes.DOODLE_CLASSES`: diagonals, spirals, speeding up, arcs, zigzags,
figure eights, blinking, pulsing, ...), the shapes (star, cross, hexagon, crescent, pill, random per
clip; none of the benchmark's disc, square, triangle, ring), the colours (each class's actor in one
of five hues that none of the benchmark's colour words has, each hue shared by two to four classes:
appearance tells some classes apart and motion the rest, as in the benchmark, whose classes each
have their object), how they are drawn (flat colour, a thick dark outline and a drop shadow; no
shading or marker dot), the backgrounds (muted checkerboards, concentric rings, Voronoi cells,
plaids; none of the benchmark's noise, stripes or gradients) and the speeds (most motions run over
a random window of the clip with a random easing, so speed varies within and between clips). Challenges are the benchmark's (:mod:`.challenges`). Each reversal pair's
second class is its first class's clip played backwards, as in the benchmark; the easing
distribution is symmetric under reversal, so speed says nothing about the direction of time.

Seeded per clip from ``SeedSequence([seed, 0xD00D1E, class position, index, stream])``.
"""

from __future__ import annotations

import numpy as np

from .motions import hsv, smoothstep

DOODLE_SHAPES: tuple[str, ...] = ("star", "cross", "hexagon", "crescent", "pill")
DOODLE_BACKGROUNDS: tuple[str, ...] = ("checker", "rings", "cells", "plaid")
# Each class's actor is drawn in one hue of these (jittered; forward classes in turn, a reversal pair
# sharing its forward class's), as each benchmark class has its object: appearance tells some
# classes apart, motion the rest. None is a hue of the benchmark's colour words.
DOODLE_HUES: tuple[float, ...] = (0.05, 0.22, 0.5, 0.7, 0.9)
_STREAM = 0xD00D1E


def _sdf(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (px, negative inside; exact near the edge, which is what anti-aliasing
    reads) of ``shape`` of radius ``r`` at local coordinates ``u, v`` (the object's frame)."""
    if shape == "star":  # five points at radius r, inner corners at 0.45 r
        sector = 2 * np.pi / 5
        phi = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)  # [0, sector / 2]
        rho = np.hypot(u, v)
        qx, qy = rho * np.cos(phi), rho * np.sin(phi)
        p1x, p1y = 0.45 * np.cos(sector / 2), 0.45 * np.sin(sector / 2)  # inner corner, in units of r
        ex, ey = p1x - 1.0, p1y  # edge from the point (1, 0) to the inner corner
        n = np.hypot(ex, ey)
        return ((qx - r) * ey - qy * ex) / n  # the outward normal of the edge is (ey, -ex) / n
    if shape == "cross":
        arm = lambda hx, hy: np.maximum(np.abs(u) - hx, np.abs(v) - hy)  # noqa: E731
        return np.minimum(arm(0.9 * r, 0.3 * r), arm(0.3 * r, 0.9 * r))
    if shape == "hexagon":  # circumradius r
        c = 0.8660254
        return np.maximum(np.abs(u), np.maximum(np.abs(0.5 * u + c * v), np.abs(0.5 * u - c * v))) - c * r
    if shape == "crescent":
        return np.maximum(np.hypot(u, v) - r, 0.8 * r - np.hypot(u - 0.5 * r, v))
    if shape == "pill":
        return np.hypot(u - np.clip(u, -0.6 * r, 0.6 * r), v) - 0.38 * r
    raise ValueError(f"unknown doodle shape {shape!r}")


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """[H, W, 3] float32 background of one of :data:`DOODLE_BACKGROUNDS` (drawn), and its kind."""
    kind = DOODLE_BACKGROUNDS[int(rng.integers(len(DOODLE_BACKGROUNDS)))]
    return pattern(rng, size, kind), kind


def pattern(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """[H, W, 3] float32 background of ``kind`` (:data:`DOODLE_BACKGROUNDS`), plus grain."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # [H, W] in [0, 1)
    c1 = rng.uniform(0.2, 0.8, 3)
    c2 = np.clip(c1 + rng.uniform(-0.25, 0.25, 3), 0, 1)  # a muted pattern: the actor stays what stands out
    if kind == "checker":
        phi, cell = rng.uniform(0, np.pi / 2), rng.uniform(0.07, 0.18)
        a = (xx * np.cos(phi) + yy * np.sin(phi)) / cell
        b = (-xx * np.sin(phi) + yy * np.cos(phi)) / cell
        m = 0.5 + 0.5 * np.tanh(6 * np.sin(np.pi * a) * np.sin(np.pi * b))
    elif kind == "rings":
        cx, cy, period = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2), rng.uniform(0.05, 0.14)
        m = 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(xx - cx, yy - cy) / period)
    elif kind == "cells":
        n = int(rng.integers(6, 15))
        seeds, colours = rng.uniform(0, 1, (n, 2)), np.clip(c1 + rng.uniform(-0.25, 0.25, (n, 3)), 0, 1)
        dist = np.hypot(xx[..., None] - seeds[:, 0], yy[..., None] - seeds[:, 1])  # [H, W, n]
        order = np.sort(dist, axis=-1)
        edge = np.clip((order[..., 1] - order[..., 0]) * size / 2.0, 0, 1)  # dark seams between cells
        bg = colours[np.argmin(dist, axis=-1)] * (0.75 + 0.25 * edge[..., None])
        return _grain(rng, bg, size)
    elif kind == "plaid":
        phi, p1, p2 = rng.uniform(0, np.pi), rng.uniform(0.08, 0.2), rng.uniform(0.03, 0.08)
        a = xx * np.cos(phi) + yy * np.sin(phi)
        b = -xx * np.sin(phi) + yy * np.cos(phi)
        m = 0.25 * (2 + np.sin(2 * np.pi * a / p1) + np.sin(2 * np.pi * b / p1)) * (0.8 + 0.2 * np.sin(2 * np.pi * a / p2))
    else:
        raise ValueError(f"unknown doodle background {kind!r}")
    return _grain(rng, c1 + (c2 - c1) * m[..., None], size)


def _grain(rng: np.random.Generator, bg: np.ndarray, size: int) -> np.ndarray:
    grain = rng.uniform(0.005, 0.02) * rng.standard_normal((size, size, 1))
    return np.clip(bg + grain, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Motions: (t [T] in [0, 1], rng, side s) -> per-frame x, y, scale, angle, alpha ([T] each).


def _warp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clip's own clock: the motion runs over a random window of the clip with a random
    easing. The distribution is the same forwards and backwards (window margins drawn alike,
    ease-in and ease-out equally likely), so a reversed clip's speed profile is one its forward
    class also draws."""
    a, b = rng.uniform(0.0, 0.25, 2)
    tau = np.clip((t - a) / (1 - a - b), 0, 1)
    kind = int(rng.integers(4))
    if kind == 1:
        return smoothstep(tau)
    if kind == 2:
        return tau**1.8
    if kind == 3:
        return 1 - (1 - tau) ** 1.8
    return tau


def _pose(t, x, y, scale=1.0, angle=0.0, alpha=1.0) -> dict:
    return {k: np.broadcast_to(np.asarray(v, np.float64), t.shape).copy()
            for k, v in dict(x=x, y=y, scale=scale, angle=angle, alpha=alpha).items()}


def _m_diagonal(t, rng, s):
    tau = _warp(t, rng)
    x0, y0 = rng.uniform(0.12, 0.3, 2) * s
    heading = np.pi / 4 + rng.uniform(-0.25, 0.25)
    dist = rng.uniform(0.45, 0.65) * s
    return _pose(t, x0 + dist * np.cos(heading) * tau, y0 + dist * np.sin(heading) * tau)


def _m_spiral(t, rng, s):
    tau = _warp(t, rng)
    cx, cy = rng.uniform(0.4, 0.6, 2) * s
    r0, r1 = rng.uniform(0.3, 0.38) * s, rng.uniform(0.0, 0.05) * s
    turns, start, direction = rng.uniform(1.2, 2.0), rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
    rad = r0 + (r1 - r0) * tau
    theta = start + direction * 2 * np.pi * turns * tau
    return _pose(t, cx + rad * np.cos(theta), cy + rad * np.sin(theta), scale=1.0 - 0.3 * tau)


def _m_speed_up(t, rng, s):
    heading = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.5, 0.65) * s
    cx, cy = rng.uniform(0.4, 0.6, 2) * s
    x0, y0 = cx - dist / 2 * np.cos(heading), cy - dist / 2 * np.sin(heading)
    power = rng.uniform(2.0, 3.0)
    d = dist * t**power
    return _pose(t, x0 + d * np.cos(heading), y0 + d * np.sin(heading))


def _m_arc(t, rng, s):
    tau = _warp(t, rng)
    x0, x1 = rng.uniform(0.1, 0.25) * s, rng.uniform(0.75, 0.9) * s
    base, height = rng.uniform(0.7, 0.85) * s, rng.uniform(0.35, 0.55) * s
    return _pose(t, x0 + (x1 - x0) * tau, base - 4 * height * tau * (1 - tau), angle=1.5 * tau)


def _m_zigzag(t, rng, s):
    tau = _warp(t, rng)
    direction = rng.choice([-1.0, 1.0])
    x0, y0 = rng.uniform(0.15, 0.25) * s, rng.uniform(0.35, 0.65) * s
    x = x0 + rng.uniform(0.55, 0.65) * s * tau
    zig = 2 * np.abs(np.mod(rng.uniform(2.0, 3.0) * tau + 0.25, 1.0) - 0.5) - 0.5  # triangle wave in [-0.5, 0.5]
    x = x if direction > 0 else s - x
    return _pose(t, x, y0 + rng.uniform(0.25, 0.4) * s * zig)


def _m_figure_eight(t, rng, s):
    tau = _warp(t, rng)
    cx, cy = rng.uniform(0.4, 0.6, 2) * s
    a, b = rng.uniform(0.25, 0.35) * s, rng.uniform(0.12, 0.2) * s
    theta = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * 2 * np.pi * tau
    tilt = rng.uniform(-0.4, 0.4)
    dx, dy = a * np.sin(theta), b * np.sin(2 * theta)
    return _pose(t, cx + dx * np.cos(tilt) - dy * np.sin(tilt), cy + dx * np.sin(tilt) + dy * np.cos(tilt))


def _m_blink(t, rng, s):
    x0, y0 = rng.uniform(0.25, 0.75, 2) * s
    cycles, phase = rng.uniform(2.5, 4.0), rng.uniform(0, 2 * np.pi)
    on = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * np.pi * cycles * t + phase))
    return _pose(t, x0, y0, alpha=on)


def _m_pulse(t, rng, s):
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    cycles, phase, depth = rng.uniform(2.0, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.45)
    return _pose(t, x0, y0, scale=1.0 + depth * np.sin(2 * np.pi * cycles * t + phase))


def _m_wobble(t, rng, s):
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    cycles, phase, amp = rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.8)
    return _pose(t, x0, y0, angle=amp * np.sin(2 * np.pi * cycles * t + phase))


def _m_square_path(t, rng, s):
    tau = _warp(t, rng)
    cx, cy, half = rng.uniform(0.4, 0.6) * s, rng.uniform(0.4, 0.6) * s, rng.uniform(0.2, 0.28) * s
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], np.float64)
    if rng.uniform() < 0.5:
        corners = corners[::-1]
    start = int(rng.integers(4))
    corners = np.concatenate([corners[start:-1], corners[:start + 1]])
    pos = 4 * tau
    k = np.minimum(pos.astype(int), 3)
    f = (pos - k)[:, None]
    xy = corners[k] * (1 - f) + corners[k + 1] * f  # [T, 2]
    return _pose(t, cx + half * xy[:, 0], cy + half * xy[:, 1])


def _m_wander(t, rng, s):
    cx, cy = rng.uniform(0.35, 0.65, 2) * s
    x, y = np.full_like(t, cx), np.full_like(t, cy)
    for _ in range(3):  # a smooth random path: a few random sinusoids per axis
        for axis in (x, y):
            axis += rng.uniform(0.04, 0.1) * s * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
    return _pose(t, x, y)


DOODLE_MOTIONS = {
    "diagonal": _m_diagonal,
    "spiral_in": _m_spiral,
    "speed_up": _m_speed_up,
    "arc": _m_arc,
    "zigzag": _m_zigzag,
    "figure_eight": _m_figure_eight,
    "blink": _m_blink,
    "pulse": _m_pulse,
    "wobble": _m_wobble,
    "square_path": _m_square_path,
    "wander": _m_wander,
}


# --------------------------------------------------------------------------------------------
# Drawing


def _paint(frames: np.ndarray, shape: str, colour: np.ndarray, radius: float, pose: dict,
           mask: np.ndarray | None = None, shadow: bool = True) -> None:
    """Draw one doodle item into planar frames [3, T, H, W] (in place): drop shadow, dark outline,
    flat fill; its coverage into mask [T, H, W] when given."""
    _, t_len, h, w = frames.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    col = lambda k: np.asarray(pose[k], np.float32)[:, None, None]  # noqa: E731  [T, 1, 1]
    r = np.float32(radius) * col("scale")
    c, sn, alpha = np.cos(col("angle")), np.sin(col("angle")), col("alpha")
    outline = max(1.5, w / 60)

    def distance(ox: float, oy: float) -> np.ndarray:
        dx, dy = xx - col("x") - ox, yy - col("y") - oy  # [T, H, W]
        return _sdf(shape, c * dx + sn * dy, -sn * dx + c * dy, r)

    if shadow:
        d = distance(-0.03 * w, -0.03 * h)  # the shadow falls down and to the right
        frames *= 1 - 0.35 * np.clip(0.5 - d / 2.0, 0, 1) * alpha
    d = distance(0.0, 0.0)
    cover = np.clip(0.5 - d, 0, 1) * alpha  # [T, H, W]
    fill = np.clip(0.5 - (d + outline), 0, 1) * alpha
    dark = (0.2 * colour).astype(np.float32)[:, None, None, None]
    frames *= 1 - cover
    frames += cover * dark
    frames += fill * (colour.astype(np.float32)[:, None, None, None] - dark)
    if mask is not None:
        np.maximum(mask, cover, out=mask)


def draw_doodle(frames: np.ndarray, rng: np.random.Generator, motion: str, hue: float, mask: np.ndarray,
                distractors: bool = True) -> None:
    """Draw distractors and the acting object of one doodle clip onto its background, planar
    frames [3, T, H, W] in place; the actor (a random shape in a colour of ``hue``, jittered) does
    ``motion`` and its coverage goes into mask [T, H, W]. ``distractors=False`` draws the same clip
    without them (the same random draws)."""
    _, t_len, size, _ = frames.shape
    s, t = float(size), np.linspace(0.0, 1.0, t_len)
    for _ in range(int(rng.integers(0, 3))):  # still distractors, pale
        shape = DOODLE_SHAPES[int(rng.integers(len(DOODLE_SHAPES)))]
        colour = hsv(rng.uniform(), rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.95))
        pose = _pose(t, *(rng.uniform(0.1, 0.9, 2) * s), angle=rng.uniform(0, 2 * np.pi))
        radius = rng.uniform(0.04, 0.08) * s
        if distractors:
            _paint(frames, shape, colour, radius, pose, shadow=False)
    shape = DOODLE_SHAPES[int(rng.integers(len(DOODLE_SHAPES)))]
    colour = hsv((hue + rng.uniform(-0.02, 0.02)) % 1.0, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0))
    radius = rng.uniform(0.09, 0.14) * s
    angle0 = rng.uniform(0, 2 * np.pi)
    pose = DOODLE_MOTIONS[motion](t, rng, s)
    pose["angle"] = pose["angle"] + angle0
    _paint(frames, shape, colour, radius, pose, mask)


def doodle_rng(seed: int, class_position: int, index: int, stream: int) -> np.random.Generator:
    """The generator of clip ``index`` of the doodle class at ``class_position``: stream 0 the
    scene, 1 the challenge."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAM, class_position, index, stream]))

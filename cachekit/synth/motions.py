"""Scene description: per-frame poses (:class:`Track`) of drawable items (:class:`Item`), and one
motion per class (:data:`MOTIONS`) that draws the acting object's trajectory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Track:
    """Per-frame pose of a drawn item; every field is [T]."""

    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


@dataclass
class Item:
    """A drawable: ``shape`` of base radius ``radius`` px (box: half width; segment: half
    thickness), posed by ``track``; a segment runs from the track to ``end`` ([T, 2])."""

    shape: str
    colour: np.ndarray  # [3] RGB in [0, 1]
    radius: float
    track: Track
    aspect: float = 1.0  # box half height / half width
    marker: bool = False  # a contrasting dot that makes rotation visible
    outline: bool = False
    end: np.ndarray | None = None


def make_track(t: np.ndarray, x, y, scale=1.0, angle=0.0, alpha=1.0) -> Track:
    """A track with every field broadcast to [T] (scalars mean constant)."""
    fields = (x, y, scale, angle, alpha)
    return Track(*(np.broadcast_to(np.asarray(v, np.float64), t.shape).copy() for v in fields))


def per_frame(values: np.ndarray) -> np.ndarray:
    """[T] -> [T, 1, 1] float32, to broadcast against [T, H, W]."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# A motion draws its parameters from rng and returns the acting object's base radius, its track
# and extra props as (item, drawn in front of the acting object).
MotionFn = Callable[[np.ndarray, np.random.Generator, float], tuple[float, Track, list]]


def _m_left_to_right(t, rng, s):
    r = rng.uniform(0.07, 0.11) * s
    x0 = rng.uniform(0.12, 0.28) * s
    x1 = x0 + rng.uniform(0.45, 0.6) * s
    y0 = rng.uniform(0.3, 0.7) * s
    dy = rng.uniform(-0.08, 0.08) * s
    return r, make_track(t, x0 + (x1 - x0) * t, y0 + dy * t), []


def _m_up(t, rng, s):
    r = rng.uniform(0.07, 0.11) * s
    y0 = rng.uniform(0.72, 0.88) * s
    y1 = y0 - rng.uniform(0.45, 0.6) * s
    x0 = rng.uniform(0.3, 0.7) * s
    dx = rng.uniform(-0.08, 0.08) * s
    return r, make_track(t, x0 + dx * t, y0 + (y1 - y0) * t), []


def _m_rotate_clockwise(t, rng, s):
    r = rng.uniform(0.13, 0.2) * s
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    turn = rng.uniform(1.0, 2.0) * np.pi
    return r, make_track(t, x0, y0, angle=turn * t), []


def _m_approach(t, rng, s):
    r = rng.uniform(0.16, 0.22) * s  # at depth 1
    z0, z1 = rng.uniform(2.5, 3.5), rng.uniform(0.9, 1.1)
    vx, vy = rng.uniform(0.4, 0.6, 2) * s  # vanishing point
    ox, oy = rng.uniform(-0.22, 0.22, 2) * s  # offset from it at depth 1
    z = z0 + (z1 - z0) * t
    return r, make_track(t, vx + ox / z, vy + oy / z, scale=1 / z), []


def _m_appear(t, rng, s):
    r = rng.uniform(0.08, 0.13) * s
    x0, y0 = rng.uniform(0.25, 0.75, 2) * s
    t0, dur = rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.35)
    return r, make_track(t, x0, y0, alpha=smoothstep((t - t0) / dur)), []


def _m_grow(t, rng, s):
    r = rng.uniform(0.1, 0.14) * s
    x0, y0 = rng.uniform(0.35, 0.65, 2) * s
    s0, s1 = rng.uniform(0.35, 0.5), rng.uniform(1.3, 1.6)
    return r, make_track(t, x0, y0, scale=s0 + (s1 - s0) * t), []


def _m_fall(t, rng, s):
    r = rng.uniform(0.07, 0.1) * s
    x0 = rng.uniform(0.2, 0.8) * s
    dx = rng.uniform(-0.05, 0.05) * s
    top, floor = rng.uniform(0.12, 0.28) * s, rng.uniform(0.75, 0.88) * s
    t_land = rng.uniform(0.55, 0.8)
    y = top + (floor - top) * np.minimum(t / t_land, 1.0) ** 2
    return r, make_track(t, x0 + dx * np.minimum(t / t_land, 1.0), y), []


def _m_rise(t, rng, s):
    r = rng.uniform(0.07, 0.1) * s
    x0, y0 = rng.uniform(0.25, 0.75) * s, rng.uniform(0.75, 0.88) * s
    rise = rng.uniform(0.5, 0.65) * s
    sway = rng.uniform(0.02, 0.04) * s
    freq, phase = rng.uniform(1.0, 2.0), rng.uniform(0, 2 * np.pi)
    x = x0 + sway * np.sin(2 * np.pi * freq * t + phase)
    return r, make_track(t, x, y0 - rise * t**2), []


def _m_bounce(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    floor = rng.uniform(0.78, 0.88) * s
    height = rng.uniform(0.3, 0.5) * s
    bounces, decay = rng.uniform(2.0, 3.5), rng.uniform(0.5, 1.5)
    direction = rng.choice([-1.0, 1.0])
    x0, drift = rng.uniform(0.25, 0.45) * s, rng.uniform(0.1, 0.3) * s
    x = x0 + drift * t if direction > 0 else s - x0 - drift * t
    y = floor - height * np.exp(-decay * t) * np.abs(np.cos(np.pi * bounces * t))
    return r, make_track(t, x, y), []


def _m_shake(t, rng, s):
    r = rng.uniform(0.08, 0.12) * s
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    amp = rng.uniform(0.03, 0.06) * s
    cycles = min(rng.uniform(3.0, 5.0), (len(t) - 1) / 4)  # >= 4 frames per cycle
    axis, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * cycles * t + phase)
    x, y = x0 + amp * np.cos(axis) * wave, y0 + amp * np.sin(axis) * wave
    return r, make_track(t, x, y, angle=0.15 * wave), []


def _m_circle(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    cx, cy = rng.uniform(0.4, 0.6, 2) * s
    radius = rng.uniform(0.18, 0.28) * s
    turns, start = rng.uniform(0.75, 1.25), rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    theta = start + direction * 2 * np.pi * turns * t
    return r, make_track(t, cx + radius * np.cos(theta), cy + radius * np.sin(theta)), []


def _m_slide(t, rng, s):
    r = rng.uniform(0.07, 0.1) * s
    direction = rng.choice([-1.0, 1.0])
    x0, y0 = rng.uniform(0.2, 0.3) * s, rng.uniform(0.35, 0.75) * s  # x0 from the pushing side
    t_contact = rng.uniform(0.2, 0.35)
    t_release = t_contact + rng.uniform(0.12, 0.2)
    t_slide = min(1 - t_release, rng.uniform(0.3, 0.5))
    dist = rng.uniform(0.3, 0.42) * s
    speed = dist / ((t_release - t_contact) + t_slide / 2)
    tau = np.clip(t - t_release, 0, t_slide)
    x = np.where(
        t < t_contact,
        x0,
        np.where(
            t < t_release,
            x0 + speed * (t - t_contact),
            x0 + speed * (t_release - t_contact) + speed * (tau - tau**2 / (2 * t_slide)),
        ),
    )
    half_w = 0.035 * s
    contact = x - r - half_w  # the hand's centre when touching the object
    start = -2 * half_w
    c_contact = x0 - r - half_w
    c_release = x0 + speed * (t_release - t_contact) - r - half_w
    retreat = rng.uniform(0.1, 0.2) * s
    hand_x = np.where(
        t < t_contact,
        start + (c_contact - start) * t / t_contact,
        np.where(t < t_release, contact, c_release - retreat * (t - t_release)),
    )
    if direction < 0:  # mirror
        x, hand_x = s - x, s - hand_x
    skin = np.array([rng.uniform(0.55, 0.9), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.55)])
    hand = Item("box", skin, half_w, make_track(t, hand_x, y0), aspect=1.2 * r / half_w, outline=True)
    return r, make_track(t, x, y0), [(hand, True)]


def _m_swing(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    px, py = rng.uniform(0.35, 0.65) * s, rng.uniform(0.04, 0.12) * s
    length = rng.uniform(0.45, 0.6) * s
    amp, cycles, phase = rng.uniform(0.35, 0.7), rng.uniform(0.8, 1.5), rng.uniform(0, 2 * np.pi)
    phi = amp * np.cos(2 * np.pi * cycles * t + phase)
    x, y = px + length * np.sin(phi), py + length * np.cos(phi)
    pivot = np.broadcast_to(np.array([px, py]), (len(t), 2))
    string = Item(
        "segment", np.full(3, 0.12), max(0.6, 0.006 * s), make_track(t, x, y), end=pivot.copy()
    )
    return r, make_track(t, x, y), [(string, False)]


def _m_still(t, rng, s):
    r = rng.uniform(0.08, 0.12) * s
    x0, y0 = rng.uniform(0.25, 0.75, 2) * s
    return r, make_track(t, x0, y0), []


MOTIONS: dict[str, MotionFn] = {
    "left_to_right": _m_left_to_right,
    "up": _m_up,
    "rotate_clockwise": _m_rotate_clockwise,
    "approach": _m_approach,
    "appear": _m_appear,
    "grow": _m_grow,
    "fall": _m_fall,
    "rise": _m_rise,
    "bounce": _m_bounce,
    "shake": _m_shake,
    "circle": _m_circle,
    "slide": _m_slide,
    "swing": _m_swing,
    "still": _m_still,
}

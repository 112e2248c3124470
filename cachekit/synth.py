"""A procedural, labelled action-video benchmark whose classes only motion can tell apart.

No public action data set can be downloaded on the project's machines, so this module draws its
own: every clip shows a textured background, one to three distractor objects and one *acting*
object whose motion defines the class ("moving something from left to right", "something
falling", ...). Appearance (background, shapes, colours, sizes, positions, speeds) is random per
clip and carries no class information; only the trajectory does.

Six pairs of classes are exact time reversals of each other (:data:`REVERSAL_PAIRS`): clip ``i``
of the second class is clip ``i`` of the first played backwards, frame for frame, so a model
that pools frames without temporal order cannot tell the two apart.

Challenges mimic what EV-CLIP targets: ``dark`` (low light with sensor noise), ``shake``
(egocentric camera motion), ``blur``, ``occlusion``, and ``mixed`` (one of those per clip).
The scene of clip ``i`` is the same under every challenge; only the degradation differs.

Everything is drawn with vectorised numpy and seeded per clip from
``SeedSequence([seed, class_id, index])``, so the same config gives the same frame bytes, and
libx264 runs single-threaded so the same frames give the same mp4 bytes.

Layout written by :func:`synth_dataset` (paths relative to ``out_dir``)::

    videos/<slug>/<slug>_<i:03d>.mp4            H.264, yuv420p
    videos.csv                                  path,label (label = class name)
    splits/clip_fsar/{train,val,test}_few_shot.txt   <split><classIdx>//videos/<slug>/<file>.mp4
    splits/clip_fsar/{train,val,test}_classes.txt    line i = name of classIdx i
    splits/vifi/{train,val,test}.txt            videos/<slug>/<file>.mp4 <label>
    splits/vifi/labels.csv                      id,name (label = index in the data set's classes)
    synth.json                                  resolved config, classes, splits, pairs
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np

from stores.base import atomic_write_bytes

from cachekit.errors import InputError

FORMAT_VERSION = 1

Challenge = Literal["none", "dark", "shake", "blur", "occlusion", "mixed"]
CHALLENGES: tuple[str, ...] = get_args(Challenge)
CLIP_CHALLENGES: tuple[str, ...] = ("dark", "shake", "blur", "occlusion")  # what "mixed" draws
Motion = Literal[
    "left_to_right",
    "up",
    "rotate_clockwise",
    "approach",
    "appear",
    "grow",
    "fall",
    "rise",
    "bounce",
    "shake",
    "circle",
    "slide",
    "swing",
    "still",
]
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ClassSpec:
    """How the acting object of a class moves.

    motion: the trajectory family the renderer draws (:data:`Motion`).
    description: one sentence saying what happens, usable as a class description prompt.
    reverse_of: when set, clip ``i`` of this class is clip ``i`` of that class reversed in time,
        and ``motion`` is that class's motion.
    """

    motion: Motion
    description: str
    reverse_of: str | None = None


# Image coordinates: x to the right, y down; an increasing angle turns clockwise on screen.
# A class's position here seeds its clips: add new classes at the end, never in between.
CLASSES: dict[str, ClassSpec] = {
    "moving something from left to right": ClassSpec(
        "left_to_right", "An object moves at a steady speed from the left side to the right side."
    ),
    "moving something from right to left": ClassSpec(
        "left_to_right",
        "An object moves at a steady speed from the right side to the left side.",
        reverse_of="moving something from left to right",
    ),
    "moving something up": ClassSpec(
        "up", "An object moves at a steady speed from the bottom towards the top."
    ),
    "moving something down": ClassSpec(
        "up",
        "An object moves at a steady speed from the top towards the bottom.",
        reverse_of="moving something up",
    ),
    "rotating something clockwise": ClassSpec(
        "rotate_clockwise", "An object stays in place and turns clockwise."
    ),
    "rotating something counterclockwise": ClassSpec(
        "rotate_clockwise",
        "An object stays in place and turns counterclockwise.",
        reverse_of="rotating something clockwise",
    ),
    "something approaching the camera": ClassSpec(
        "approach", "An object comes towards the camera and looks bigger and bigger."
    ),
    "something moving away from the camera": ClassSpec(
        "approach",
        "An object moves away from the camera and looks smaller and smaller.",
        reverse_of="something approaching the camera",
    ),
    "something appearing": ClassSpec(
        "appear", "An object that was not there fades into view and stays."
    ),
    "something disappearing": ClassSpec(
        "appear",
        "An object fades out of view and is gone.",
        reverse_of="something appearing",
    ),
    "something growing": ClassSpec("grow", "An object stays in place and becomes larger."),
    "something shrinking": ClassSpec(
        "grow", "An object stays in place and becomes smaller.", reverse_of="something growing"
    ),
    "something falling": ClassSpec(
        "fall", "An object drops faster and faster and lands at the bottom."
    ),
    "something rising": ClassSpec(
        "rise", "An object floats upwards faster and faster, swaying a little, like a balloon."
    ),
    "something bouncing": ClassSpec(
        "bounce", "An object bounces on the ground, each bounce lower than the last."
    ),
    "something shaking": ClassSpec("shake", "An object shakes quickly back and forth in place."),
    "something moving in a circle": ClassSpec(
        "circle", "An object travels around a circle."
    ),
    "pushing something so it slides": ClassSpec(
        "slide", "A hand pushes an object, lets go, and the object slides on and slows to a stop."
    ),
    "something swinging like a pendulum": ClassSpec(
        "swing", "An object hangs on a string and swings from side to side."
    ),
    "something staying still": ClassSpec("still", "An object stays where it is and does not move."),
}

# (forward class, reversed class): clip i of the second is clip i of the first, frames reversed.
REVERSAL_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (spec.reverse_of, name) for name, spec in CLASSES.items() if spec.reverse_of is not None
)


def slugify(name: str) -> str:
    """File-system name of a class: lower case, runs of other characters become one ``_``."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise InputError(f"cannot make a file name from class name {name!r}")
    return slug


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`synth_dataset` draws.

    classes: class names (keys of :data:`CLASSES`) in label order; None = all, in
        :data:`CLASSES` order.
    videos_per_class: clips per class.
    frames, size, fps: clip length T, frame side H = W (even, for yuv420p), frame rate.
    challenge: degradation applied to every clip; "mixed" draws one of
        :data:`CLIP_CHALLENGES` per clip.
    seed: picks every clip and the class split.
    splits: train / val / test fractions of the *classes* (class-disjoint splits).
    keep_pairs_together: put both classes of a reversal pair in the same split (when the split
        sizes allow), so evaluation splits contain pairs that only temporal order separates.
    clutter: "full" draws a textured background and distractor objects; "low" a plain grey
        background and the acting object alone (for small random-weight encoders, whose
        features the clutter would swamp). Everything else about a clip stays the same.
    """

    classes: tuple[str, ...] | None = None
    videos_per_class: int = 20
    frames: int = 32
    size: int = 224
    fps: int = 16
    challenge: Challenge = "none"
    seed: int = 0
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)
    keep_pairs_together: bool = True
    clutter: Literal["full", "low"] = "full"

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and equal to the original.
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            unknown = [c for c in self.classes if c not in CLASSES]
            if unknown:
                raise InputError(
                    f"unknown synthetic class(es) {unknown}; known: {sorted(CLASSES)}"
                )
            if len(set(self.classes)) != len(self.classes):
                raise InputError(f"classes listed twice in {list(self.classes)}")
            if not self.classes:
                raise InputError("classes must name at least one class (or be None for all)")
        object.__setattr__(self, "splits", tuple(float(f) for f in self.splits))
        if len(self.splits) != 3 or min(self.splits) < 0 or abs(sum(self.splits) - 1) > 1e-6:
            raise InputError(
                f"splits must be 3 non-negative fractions summing to 1, got {self.splits}"
            )
        if self.clutter not in ("full", "low"):
            raise InputError(f"clutter must be 'full' or 'low', not {self.clutter!r}")
        if self.challenge not in CHALLENGES:
            raise InputError(f"challenge {self.challenge!r} is not one of {list(CHALLENGES)}")
        minimum = {"videos_per_class": 1, "frames": 2, "size": 16, "fps": 1, "seed": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.size % 2:
            raise InputError(f"size must be even (yuv420p), got {self.size}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The data set's classes in label order."""
        return tuple(CLASSES) if self.classes is None else self.classes


@dataclass
class SynthResult:
    """What :func:`synth_dataset` wrote. ``splits`` maps split name -> class names."""

    out_dir: Path
    csv: Path
    videos: list[Path]
    classes: list[str]
    splits: dict[str, list[str]]


@dataclass(frozen=True)
class RenderedClip:
    """One rendered clip.

    frames: [T, H, W, 3] uint8 RGB.
    object_mask: [T, H, W] float32 in [0, 1], the acting object's coverage in scene
        coordinates: before occlusion and camera effects (shake, blur, noise).
    challenge: the degradation applied ("none" or one of :data:`CLIP_CHALLENGES`).
    """

    frames: np.ndarray
    object_mask: np.ndarray
    challenge: str

    def centroids(self) -> np.ndarray:
        """[T, 2] (x, y) centroid of the acting object in pixels; NaN where it is invisible."""
        m = self.object_mask.astype(np.float64)  # [T, H, W]
        area = m.sum(axis=(1, 2))  # [T]
        ys, xs = np.arange(m.shape[1]), np.arange(m.shape[2])
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (m.sum(axis=1) * xs).sum(axis=1) / area
            cy = (m.sum(axis=2) * ys).sum(axis=1) / area
        out = np.stack([cx, cy], axis=1)
        out[area < 1e-3] = np.nan
        return out


# --------------------------------------------------------------------------------------------
# Scene description


@dataclass
class _Track:
    """Per-frame pose of a drawn item; every field is [T]."""

    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


@dataclass
class _Item:
    """A drawable: ``shape`` of base radius ``radius`` px (box: half width; segment: half
    thickness), posed by ``track``; a segment runs from the track to ``end`` ([T, 2])."""

    shape: str
    colour: np.ndarray  # [3] RGB in [0, 1]
    radius: float
    track: _Track
    aspect: float = 1.0  # box half height / half width
    marker: bool = False  # a contrasting dot that makes rotation visible
    outline: bool = False
    end: np.ndarray | None = None


def _track(t: np.ndarray, x, y, scale=1.0, angle=0.0, alpha=1.0) -> _Track:
    """A track with every field broadcast to [T] (scalars mean constant)."""
    fields = (x, y, scale, angle, alpha)
    return _Track(*(np.broadcast_to(np.asarray(v, np.float64), t.shape).copy() for v in fields))


def _per_frame(values: np.ndarray) -> np.ndarray:
    """[T] -> [T, 1, 1] float32, to broadcast against [T, H, W]."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# A motion draws its parameters from rng and returns the acting object's base radius, its track
# and extra props as (item, drawn in front of the acting object).
_MotionFn = Callable[[np.ndarray, np.random.Generator, float], tuple[float, _Track, list]]


def _m_left_to_right(t, rng, s):
    r = rng.uniform(0.07, 0.11) * s
    x0 = rng.uniform(0.12, 0.28) * s
    x1 = x0 + rng.uniform(0.45, 0.6) * s
    y0 = rng.uniform(0.3, 0.7) * s
    dy = rng.uniform(-0.08, 0.08) * s
    return r, _track(t, x0 + (x1 - x0) * t, y0 + dy * t), []


def _m_up(t, rng, s):
    r = rng.uniform(0.07, 0.11) * s
    y0 = rng.uniform(0.72, 0.88) * s
    y1 = y0 - rng.uniform(0.45, 0.6) * s
    x0 = rng.uniform(0.3, 0.7) * s
    dx = rng.uniform(-0.08, 0.08) * s
    return r, _track(t, x0 + dx * t, y0 + (y1 - y0) * t), []


def _m_rotate_clockwise(t, rng, s):
    r = rng.uniform(0.13, 0.2) * s
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    turn = rng.uniform(1.0, 2.0) * np.pi
    return r, _track(t, x0, y0, angle=turn * t), []


def _m_approach(t, rng, s):
    r = rng.uniform(0.16, 0.22) * s  # at depth 1
    z0, z1 = rng.uniform(2.5, 3.5), rng.uniform(0.9, 1.1)
    vx, vy = rng.uniform(0.4, 0.6, 2) * s  # vanishing point
    ox, oy = rng.uniform(-0.22, 0.22, 2) * s  # offset from it at depth 1
    z = z0 + (z1 - z0) * t
    return r, _track(t, vx + ox / z, vy + oy / z, scale=1 / z), []


def _m_appear(t, rng, s):
    r = rng.uniform(0.08, 0.13) * s
    x0, y0 = rng.uniform(0.25, 0.75, 2) * s
    t0, dur = rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.35)
    return r, _track(t, x0, y0, alpha=_smoothstep((t - t0) / dur)), []


def _m_grow(t, rng, s):
    r = rng.uniform(0.1, 0.14) * s
    x0, y0 = rng.uniform(0.35, 0.65, 2) * s
    s0, s1 = rng.uniform(0.35, 0.5), rng.uniform(1.3, 1.6)
    return r, _track(t, x0, y0, scale=s0 + (s1 - s0) * t), []


def _m_fall(t, rng, s):
    r = rng.uniform(0.07, 0.1) * s
    x0 = rng.uniform(0.2, 0.8) * s
    dx = rng.uniform(-0.05, 0.05) * s
    top, floor = rng.uniform(0.12, 0.28) * s, rng.uniform(0.75, 0.88) * s
    t_land = rng.uniform(0.55, 0.8)
    y = top + (floor - top) * np.minimum(t / t_land, 1.0) ** 2
    return r, _track(t, x0 + dx * np.minimum(t / t_land, 1.0), y), []


def _m_rise(t, rng, s):
    r = rng.uniform(0.07, 0.1) * s
    x0, y0 = rng.uniform(0.25, 0.75) * s, rng.uniform(0.75, 0.88) * s
    rise = rng.uniform(0.5, 0.65) * s
    sway = rng.uniform(0.02, 0.04) * s
    freq, phase = rng.uniform(1.0, 2.0), rng.uniform(0, 2 * np.pi)
    x = x0 + sway * np.sin(2 * np.pi * freq * t + phase)
    return r, _track(t, x, y0 - rise * t**2), []


def _m_bounce(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    floor = rng.uniform(0.78, 0.88) * s
    height = rng.uniform(0.3, 0.5) * s
    bounces, decay = rng.uniform(2.0, 3.5), rng.uniform(0.5, 1.5)
    direction = rng.choice([-1.0, 1.0])
    x0, drift = rng.uniform(0.25, 0.45) * s, rng.uniform(0.1, 0.3) * s
    x = x0 + drift * t if direction > 0 else s - x0 - drift * t
    y = floor - height * np.exp(-decay * t) * np.abs(np.cos(np.pi * bounces * t))
    return r, _track(t, x, y), []


def _m_shake(t, rng, s):
    r = rng.uniform(0.08, 0.12) * s
    x0, y0 = rng.uniform(0.3, 0.7, 2) * s
    amp = rng.uniform(0.03, 0.06) * s
    cycles = min(rng.uniform(3.0, 5.0), (len(t) - 1) / 4)  # >= 4 frames per cycle
    axis, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * cycles * t + phase)
    x, y = x0 + amp * np.cos(axis) * wave, y0 + amp * np.sin(axis) * wave
    return r, _track(t, x, y, angle=0.15 * wave), []


def _m_circle(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    cx, cy = rng.uniform(0.4, 0.6, 2) * s
    radius = rng.uniform(0.18, 0.28) * s
    turns, start = rng.uniform(0.75, 1.25), rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    theta = start + direction * 2 * np.pi * turns * t
    return r, _track(t, cx + radius * np.cos(theta), cy + radius * np.sin(theta)), []


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
    hand = _Item("box", skin, half_w, _track(t, hand_x, y0), aspect=1.2 * r / half_w, outline=True)
    return r, _track(t, x, y0), [(hand, True)]


def _m_swing(t, rng, s):
    r = rng.uniform(0.06, 0.09) * s
    px, py = rng.uniform(0.35, 0.65) * s, rng.uniform(0.04, 0.12) * s
    length = rng.uniform(0.45, 0.6) * s
    amp, cycles, phase = rng.uniform(0.35, 0.7), rng.uniform(0.8, 1.5), rng.uniform(0, 2 * np.pi)
    phi = amp * np.cos(2 * np.pi * cycles * t + phase)
    x, y = px + length * np.sin(phi), py + length * np.cos(phi)
    pivot = np.broadcast_to(np.array([px, py]), (len(t), 2))
    string = _Item(
        "segment", np.full(3, 0.12), max(0.6, 0.006 * s), _track(t, x, y), end=pivot.copy()
    )
    return r, _track(t, x, y), [(string, False)]


def _m_still(t, rng, s):
    r = rng.uniform(0.08, 0.12) * s
    x0, y0 = rng.uniform(0.25, 0.75, 2) * s
    return r, _track(t, x0, y0), []


_MOTIONS: dict[str, _MotionFn] = {
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


# --------------------------------------------------------------------------------------------
# Drawing


def _interp_matrix(n: int, g: int) -> np.ndarray:
    """[n, g] smooth (smoothstep-weighted linear) interpolation from g grid points to n pixels."""
    pos = np.linspace(0, g - 1, n)
    i0 = np.minimum(np.floor(pos).astype(int), g - 2)
    w = _smoothstep(pos - i0)
    a = np.zeros((n, g))
    a[np.arange(n), i0] = 1 - w
    a[np.arange(n), i0 + 1] = w
    return a


def _background(
    rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """[H, W, 3] float32 textured background: smooth noise, stripes or a gradient, plus grain."""
    kind = rng.integers(3)
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
    item: _Item, xx: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Signed distance in px to the item's edge (negative inside), [T, H, W]; also the rotated
    local coordinate u / r (for shading) and the marker's distance (or None)."""
    tr = item.track
    x, y, r = _per_frame(tr.x), _per_frame(tr.y), _per_frame(item.radius * tr.scale)
    dx, dy = xx - x, yy - y  # [T, H, W]
    if item.shape == "segment":
        ex, ey = _per_frame(item.end[:, 0]), _per_frame(item.end[:, 1])
        vx, vy = ex - x, ey - y
        h = np.clip((dx * vx + dy * vy) / np.maximum(vx * vx + vy * vy, 1e-9), 0, 1)
        return np.hypot(dx - h * vx, dy - h * vy) - r, np.zeros_like(dx), None
    c, s = _per_frame(np.cos(tr.angle)), _per_frame(np.sin(tr.angle))
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


def _crop_window(item: _Item, h: int, w: int, pad: float) -> tuple[np.ndarray, np.ndarray]:
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


def _draw(out: np.ndarray, item: _Item, mask: np.ndarray | None = None) -> None:
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


# --------------------------------------------------------------------------------------------
# Challenges


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


def _blur(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _shake(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def _dark(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low light: brightness scaled to 15-25 %, then shot (Poisson-like) and read noise."""
    gain = rng.uniform(0.15, 0.25)
    photons = rng.uniform(60, 200)  # photo-electrons at full white
    read = rng.uniform(0.004, 0.012)
    signal = frames * np.float32(gain)
    std = np.sqrt(signal / np.float32(photons) + np.float32(read**2))
    return signal + std * rng.standard_normal(frames.shape, dtype=np.float32)


def _occluder(rng: np.random.Generator, t: np.ndarray, s: float) -> _Item:
    half_w, half_h = rng.uniform(0.08, 0.16) * s, rng.uniform(0.2, 0.45) * s
    x0, y0 = rng.uniform(0.2, 0.8) * s, rng.uniform(0.3, 0.7) * s
    moving = rng.uniform() < 0.5
    travel = rng.uniform(0.3, 0.6) * s * rng.choice([-1.0, 1.0]) if moving else 0.0
    colour = rng.uniform(0.05, 0.35, 3)
    track = _track(t, x0 - travel / 2 + travel * t, y0, angle=rng.uniform(-0.3, 0.3))
    return _Item("box", colour, half_w, track, aspect=half_h / half_w, outline=True)


# --------------------------------------------------------------------------------------------
# Rendering


def _class_spec(class_name: str) -> ClassSpec:
    try:
        return CLASSES[class_name]
    except KeyError:
        raise InputError(
            f"unknown synthetic class {class_name!r}; known: {sorted(CLASSES)}"
        ) from None


def _class_id(class_name: str) -> int:
    """Position in :data:`CLASSES`: the per-clip seed, independent of the chosen subset."""
    return list(CLASSES).index(class_name)


def _challenge_rng(base_class: str, index: int, cfg: SynthConfig) -> np.random.Generator:
    # A stream apart from the scene's, so the scene is the same under every challenge.
    entropy = [cfg.seed, _class_id(base_class), index, 1]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def clip_challenge(class_name: str, index: int, cfg: SynthConfig) -> str:
    """The challenge clip ``index`` of ``class_name`` gets under ``cfg`` (resolves "mixed")."""
    if cfg.challenge != "mixed":
        return cfg.challenge
    spec = _class_spec(class_name)
    rng = _challenge_rng(spec.reverse_of or class_name, index, cfg)
    return CLIP_CHALLENGES[int(rng.integers(len(CLIP_CHALLENGES)))]


def render(class_name: str, index: int, cfg: SynthConfig) -> RenderedClip:
    """Render clip ``index`` of ``class_name``; deterministic for (class, index, cfg.seed,
    cfg.challenge, cfg.frames, cfg.size). For the second class of a reversal pair this is the
    first class's clip with frames (and mask) reversed."""
    spec = _class_spec(class_name)
    if index < 0:
        raise InputError(f"clip index must be >= 0, got {index}")
    if spec.reverse_of is not None:
        fwd = _render_forward(spec.reverse_of, index, cfg)
        return RenderedClip(fwd.frames[::-1].copy(), fwd.object_mask[::-1].copy(), fwd.challenge)
    return _render_forward(class_name, index, cfg)


def render_clip(class_name: str, index: int, cfg: SynthConfig) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames of clip ``index`` of ``class_name`` (see :func:`render`)."""
    return render(class_name, index, cfg).frames


def _render_forward(class_name: str, index: int, cfg: SynthConfig) -> RenderedClip:
    spec = CLASSES[class_name]
    size, s = cfg.size, float(cfg.size)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _class_id(class_name), index]))
    t = np.linspace(0.0, 1.0, cfg.frames)  # [T]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # [H, W] pixel coordinates

    bg = _background(rng, size, xx, yy)
    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = _hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.9))
        radius = rng.uniform(0.04, 0.09) * s
        x0, y0 = rng.uniform(0.1, 0.9, 2) * s
        drift = rng.uniform(0.03, 0.1) * s if rng.uniform() < 0.5 else 0.0
        heading = rng.uniform(0, 2 * np.pi)
        track = _track(
            t, x0 + drift * np.cos(heading) * t, y0 + drift * np.sin(heading) * t,
            angle=rng.uniform(0, 2 * np.pi),
        )
        distractors.append(_Item(shape, colour, radius, track))
    if cfg.clutter == "low":  # same draws as above (the actor is unchanged), then drop the clutter
        bg = np.full_like(bg, 0.5)
        distractors = []
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = _hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    angle0 = rng.uniform(0, 2 * np.pi)
    radius, track, props = _MOTIONS[spec.motion](t, rng, s)
    track.angle = track.angle + angle0
    actor = _Item(shape, colour, radius, track, marker=True, outline=True)

    planar = np.moveaxis(bg, -1, 0)[:, None]  # [3, 1, H, W]
    frames = np.broadcast_to(planar, (3, cfg.frames, size, size)).copy()  # [3, T, H, W]
    for item in distractors:
        _draw(frames, item)
    for item, front in props:
        if not front:
            _draw(frames, item)
    mask = np.zeros(frames.shape[1:], dtype=np.float32)  # [T, H, W]
    _draw(frames, actor, mask)
    for item, front in props:
        if front:
            _draw(frames, item)

    # The "mixed" choice is always drawn first, so a mixed clip equals the same clip rendered
    # with its challenge named explicitly.
    crng = _challenge_rng(class_name, index, cfg)
    drawn = CLIP_CHALLENGES[int(crng.integers(len(CLIP_CHALLENGES)))]
    challenge = drawn if cfg.challenge == "mixed" else cfg.challenge
    if challenge == "occlusion":
        _draw(frames, _occluder(crng, t, s))
    elif challenge == "shake":
        frames = _shake(frames, crng)
    elif challenge == "blur":
        frames = _blur(frames, crng)
    elif challenge == "dark":
        frames = _dark(frames, crng)
    out = np.moveaxis((np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8), 0, -1)
    out = np.ascontiguousarray(out)  # [T, H, W, 3]
    return RenderedClip(out, mask, challenge)


# --------------------------------------------------------------------------------------------
# Files


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Write [T, H, W, 3] uint8 RGB as H.264 (libx264, yuv420p, crf 18, one thread: the same
    frames give the same bytes). Written atomically and durably (:func:`stores.base.atomic_write_bytes`)."""
    import av  # lazy: heavy

    path = Path(path)
    t_len, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise InputError(f"yuv420p needs even frame sizes, got {w}x{h}")
    buf = io.BytesIO()  # a clip is small: muxed in memory, then written durably in one step
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"crf": "18", "preset": "veryfast"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    atomic_write_bytes(path, buf.getvalue())
    return path


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def split_classes(
    classes: tuple[str, ...] | list[str],
    fractions: tuple[float, float, float],
    seed: int,
    keep_pairs_together: bool = True,
) -> dict[str, list[str]]:
    """Class-disjoint train / val / test split, seeded; each keeps the order of ``classes``.

    Sizes: round(fraction * C), at least 1 class per split, and at least 2 for val and test when
    C >= 6; train gets the rest. With ``keep_pairs_together`` both classes of a reversal pair go
    to one split, and test and val each get one whole pair first, when the sizes allow;
    otherwise classes are split one by one.
    """
    classes = list(classes)
    n = len(classes)
    if n < 3:
        raise InputError(f"a train/val/test class split needs at least 3 classes, got {n}")
    least = 2 if n >= 6 else 1
    n_val = max(least, int(round(fractions[1] * n)))
    n_test = max(least, int(round(fractions[2] * n)))
    # Train keeps at least one class. n - 1 >= 2 * least, so the larger of val / test is above
    # its minimum whenever the two overflow.
    while n_val + n_test > n - 1:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    targets = {"test": n_test, "val": n_val}

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E_11_75]))
    chosen = set(classes)
    units: list[list[str]] = []
    paired: set[str] = set()
    if keep_pairs_together:
        for a, b in REVERSAL_PAIRS:
            if a in chosen and b in chosen:
                units.append([a, b])
                paired.update((a, b))
    units += [[c] for c in classes if c not in paired]
    order = [units[i] for i in rng.permutation(len(units))]

    def allocate(units_left: list[list[str]]) -> dict[str, list[str]] | None:
        got: dict[str, list[str]] = {}
        rest = list(units_left)
        for split in ("test", "val"):
            want, take = targets[split], []
            # An evaluation split starts with a reversal pair (when one fits), so it holds
            # classes that only temporal order separates.
            pair = next((u for u in rest if len(u) == 2 and len(u) <= want), None)
            if pair is not None:
                take.append(pair)
                rest.remove(pair)
            for unit in list(rest):
                if sum(map(len, take)) + len(unit) <= want:
                    take.append(unit)
                    rest.remove(unit)
            if sum(map(len, take)) < least:
                return None
            got[split] = [c for u in take for c in u]
        got["train"] = [c for u in rest for c in u]
        if not got["train"]:
            return None
        return got

    got = allocate(order)
    if got is None:  # pairs did not fit the sizes: split class by class
        got = allocate([[c] for u in order for c in u])
    rank = {c: i for i, c in enumerate(classes)}
    return {split: sorted(got[split], key=rank.__getitem__) for split in SPLITS}


def _config_dict(cfg: SynthConfig) -> dict:
    d = asdict(cfg)
    d["classes"] = None if cfg.classes is None else list(cfg.classes)
    d["splits"] = list(cfg.splits)
    return d


def synth_dataset(
    out_dir: str | os.PathLike, cfg: SynthConfig, progress: bool = False
) -> SynthResult:
    """Render and write the benchmark under ``out_dir`` (layout in the module docstring).

    Resumable: ``synth.json`` is written first with ``"complete": false`` and last with
    ``true``; a rerun with the same config keeps the mp4s already there (each is renamed into
    place only once complete), and a rerun with a different config is refused.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / "synth.json"
    config = _config_dict(cfg)
    resume = False
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{meta_path} is not a synth.json; choose another out_dir") from err
        differ = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if differ:
            raise InputError(
                f"{out_dir} holds a synthetic data set made with other settings "
                f"({', '.join(differ)}); choose another out_dir or delete it"
            )
        resume = True

    classes = list(cfg.class_names)
    splits = split_classes(classes, cfg.splits, cfg.seed, cfg.keep_pairs_together)
    label = {c: i for i, c in enumerate(classes)}
    slugs = {c: slugify(c) for c in classes}
    if len(set(slugs.values())) != len(slugs):
        raise InputError(f"class names collide as file names: {slugs}")

    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "cachekit.synth",
        "complete": False,
        "config": config,
        "classes": classes,
        "descriptions": {c: CLASSES[c].description for c in classes},
        "reversal_pairs": [[a, b] for a, b in REVERSAL_PAIRS if a in label and b in label],
        "splits": splits,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    jobs = [(c, i) for c in classes for i in range(cfg.videos_per_class)]
    rel = {job: f"videos/{slugs[job[0]]}/{slugs[job[0]]}_{job[1]:03d}.mp4" for job in jobs}
    bar = None
    if progress:
        from tqdm import tqdm  # lazy

        bar = tqdm(total=len(jobs), desc="synth", unit="video")
    videos = []
    for c, i in jobs:
        path = out_dir / rel[(c, i)]
        if not (resume and path.exists()):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, render_clip(c, i, cfg), cfg.fps)
        videos.append(path)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows([rel[job], job[0]] for job in jobs)
    csv_path = out_dir / "videos.csv"
    _write_text(csv_path, buf.getvalue())

    fsar, vifi = out_dir / "splits" / "clip_fsar", out_dir / "splits" / "vifi"
    fsar.mkdir(parents=True, exist_ok=True)
    vifi.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = splits[split]
        few_shot = [
            f"{split}{k}//{rel[(c, i)]}"
            for k, c in enumerate(names)
            for i in range(cfg.videos_per_class)
        ]
        _write_text(fsar / f"{split}_few_shot.txt", "".join(line + "\n" for line in few_shot))
        _write_text(fsar / f"{split}_classes.txt", "".join(c + "\n" for c in names))
        vifi_lines = [
            f"{rel[(c, i)]} {label[c]}" for c in names for i in range(cfg.videos_per_class)
        ]
        _write_text(vifi / f"{split}.txt", "".join(line + "\n" for line in vifi_lines))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows([i, c] for i, c in enumerate(classes))
    _write_text(vifi / "labels.csv", buf.getvalue())

    meta["complete"] = True
    meta["videos"] = len(jobs)
    if cfg.challenge == "mixed":
        meta["clip_challenges"] = {rel[(c, i)]: clip_challenge(c, i, cfg) for c, i in jobs}
    _write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return SynthResult(out_dir, csv_path, videos, classes, splits)


__all__ = [
    "CHALLENGES",
    "CLASSES",
    "CLIP_CHALLENGES",
    "REVERSAL_PAIRS",
    "ClassSpec",
    "RenderedClip",
    "SynthConfig",
    "SynthResult",
    "clip_challenge",
    "render",
    "render_clip",
    "slugify",
    "split_classes",
    "synth_dataset",
    "write_mp4",
]

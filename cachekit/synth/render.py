"""Rendering one clip: scene, acting object, distractors and challenge, seeded per clip
(:func:`render`, :func:`render_clip`, :func:`clip_challenge`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .challenges import blur, dark, occluder, shake
from .classes import CLASSES, CLIP_CHALLENGES, SHAPES, ClassSpec, SynthConfig
from .drawing import background, draw
from .motions import MOTIONS, Item, hsv, make_track


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

    bg = background(rng, size, xx, yy)
    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.9))
        radius = rng.uniform(0.04, 0.09) * s
        x0, y0 = rng.uniform(0.1, 0.9, 2) * s
        drift = rng.uniform(0.03, 0.1) * s if rng.uniform() < 0.5 else 0.0
        heading = rng.uniform(0, 2 * np.pi)
        track = make_track(
            t, x0 + drift * np.cos(heading) * t, y0 + drift * np.sin(heading) * t,
            angle=rng.uniform(0, 2 * np.pi),
        )
        distractors.append(Item(shape, colour, radius, track))
    if cfg.clutter == "low":  # same draws as above (the actor is unchanged), then drop the clutter
        bg = np.full_like(bg, 0.5)
        distractors = []
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    angle0 = rng.uniform(0, 2 * np.pi)
    radius, track, props = MOTIONS[spec.motion](t, rng, s)
    track.angle = track.angle + angle0
    actor = Item(shape, colour, radius, track, marker=True, outline=True)

    planar = np.moveaxis(bg, -1, 0)[:, None]  # [3, 1, H, W]
    frames = np.broadcast_to(planar, (3, cfg.frames, size, size)).copy()  # [3, T, H, W]
    for item in distractors:
        draw(frames, item)
    for item, front in props:
        if not front:
            draw(frames, item)
    mask = np.zeros(frames.shape[1:], dtype=np.float32)  # [T, H, W]
    draw(frames, actor, mask)
    for item, front in props:
        if front:
            draw(frames, item)

    # The "mixed" choice is always drawn first, so a mixed clip equals the same clip rendered
    # with its challenge named explicitly.
    crng = _challenge_rng(class_name, index, cfg)
    drawn = CLIP_CHALLENGES[int(crng.integers(len(CLIP_CHALLENGES)))]
    challenge = drawn if cfg.challenge == "mixed" else cfg.challenge
    if challenge == "occlusion":
        draw(frames, occluder(crng, t, s))
    elif challenge == "shake":
        frames = shake(frames, crng)
    elif challenge == "blur":
        frames = blur(frames, crng)
    elif challenge == "dark":
        frames = dark(frames, crng)
    out = np.moveaxis((np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8), 0, -1)
    out = np.ascontiguousarray(out)  # [T, H, W, 3]
    return RenderedClip(out, mask, challenge)

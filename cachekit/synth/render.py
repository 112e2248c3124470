"""Rendering one clip: scene, acting object, distractors and challenge, seeded per clip
(:func:`scene`, :func:`render`, :func:`render_clip`, :func:`clip_challenge`).

Motion-only classes draw the acting object's shape and colour at random; a compositional class
(``SynthConfig.objects``) draws its own object, in a fresh jitter of its colour word per clip
(:func:`.vocab.colour_rgb`), among distractors of the colourless words only (grey, white, black),
so no distractor looks like any class's object. Everything else is random per clip either way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .challenges import blur, dark, occluder, shake
from .classes import ACHROMATIC, CLASSES, CLIP_CHALLENGES, DOODLE_CLASSES, SHAPES, SynthConfig, object_key, split_object
from .doodle import DOODLE_HUES, doodle_rng, draw_doodle
from .doodle import background as doodle_background
from .drawing import background, draw
from .motions import MOTIONS, Item, hsv, make_track
from .vocab import SHAPES as SHAPE_WORDS
from .vocab import colour_rgb


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


@dataclass
class Scene:
    """What a forward clip is drawn from, before any challenge (the clip is these items drawn in
    order: background, distractors, props behind, actor, props in front).

    background: [H, W, 3] float32. distractors: items drawn behind everything else.
    actor: the acting object (its coverage is the clip's ``object_mask``).
    props: (item, drawn in front of the actor) that the motion adds (a hand, a string, ...).
    t: [T] times in [0, 1].
    """

    background: np.ndarray
    distractors: list[Item]
    actor: Item
    props: list[tuple[Item, bool]]
    t: np.ndarray


# --------------------------------------------------------------------------------------------
# Rendering


def _class_id(class_name: str) -> int:
    """Position of a motion class in :data:`CLASSES`: the per-clip seed, independent of the
    chosen subset."""
    return list(CLASSES).index(class_name)


def _rng(obj: str | None, motion: str, index: int, cfg: SynthConfig, stream: int) -> np.random.Generator:
    """The generator of clip ``index`` of a forward class: stream 0 the scene, 1 the challenge."""
    if cfg.style == "doodle":
        return doodle_rng(cfg.seed, list(DOODLE_CLASSES).index(motion), index, stream)
    return np.random.default_rng(np.random.SeedSequence(_entropy(obj, motion, index, cfg, stream)))


def _entropy(obj: str | None, motion: str, index: int, cfg: SynthConfig, stream: int) -> list[int]:
    """Seed words of clip ``index`` of a forward class: stream 0 the scene, 1 the challenge.
    Motion-only classes keep their original words; a composition adds its object's key."""
    if obj is None:
        return [cfg.seed, _class_id(motion), index] + ([1] if stream else [])
    return [cfg.seed, _class_id(motion), index, 2 + stream, object_key(obj)]


def _challenge_rng(obj: str | None, motion: str, index: int, cfg: SynthConfig) -> np.random.Generator:
    # A stream apart from the scene's, so the scene is the same under every challenge.
    return _rng(obj, motion, index, cfg, 1)


def _forward(class_name: str, index: int, cfg: SynthConfig) -> tuple[str | None, str, bool]:
    """(object, forward motion class, reversed) of clip ``index`` of ``class_name``."""
    if index < 0:
        raise InputError(f"clip index must be >= 0, got {index}")
    obj, motion = cfg.resolve(class_name)
    reverse_of = cfg.class_table[motion].reverse_of
    return (obj, reverse_of, True) if reverse_of is not None else (obj, motion, False)


def clip_challenge(class_name: str, index: int, cfg: SynthConfig) -> str:
    """The challenge clip ``index`` of ``class_name`` gets under ``cfg`` (resolves "mixed")."""
    obj, motion, _ = _forward(class_name, index, cfg)
    if cfg.challenge != "mixed":
        return cfg.challenge
    rng = _challenge_rng(obj, motion, index, cfg)
    return CLIP_CHALLENGES[int(rng.integers(len(CLIP_CHALLENGES)))]


def render(class_name: str, index: int, cfg: SynthConfig) -> RenderedClip:
    """Render clip ``index`` of ``class_name`` (one of ``cfg``'s classes); deterministic for
    (class, index, cfg.seed, cfg.challenge, cfg.frames, cfg.size, cfg.clutter). For the second
    class of a reversal pair this is the first class's clip (same object) with frames and mask
    reversed. ``cfg.style`` "doodle" draws the second style (:mod:`.doodle`) the same way."""
    obj, motion, reverse = _forward(class_name, index, cfg)
    fwd = (_render_doodle if cfg.style == "doodle" else _render_forward)(obj, motion, index, cfg)
    if reverse:
        return RenderedClip(fwd.frames[::-1].copy(), fwd.object_mask[::-1].copy(), fwd.challenge)
    return fwd


def render_clip(class_name: str, index: int, cfg: SynthConfig) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames of clip ``index`` of ``class_name`` (see :func:`render`)."""
    return render(class_name, index, cfg).frames


def scene(class_name: str, index: int, cfg: SynthConfig) -> Scene:
    """The items clip ``index`` of ``class_name`` is drawn from (for the second class of a
    reversal pair: its forward partner's scene, which the clip plays backwards). Default style
    only: a doodle clip is not made of :class:`.motions.Item` s."""
    if cfg.style != "default":
        raise InputError(f"scene() describes clips of the default style, not {cfg.style!r}")
    obj, motion, _ = _forward(class_name, index, cfg)
    return _scene(obj, motion, index, cfg)


def _scene(obj: str | None, motion: str, index: int, cfg: SynthConfig) -> Scene:
    spec = CLASSES[motion]
    size, s = cfg.size, float(cfg.size)
    rng = _rng(obj, motion, index, cfg, 0)
    t = np.linspace(0.0, 1.0, cfg.frames)  # [T]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # [H, W] pixel coordinates

    bg = background(rng, size, xx, yy)
    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if obj is None:
            colour = hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.9))
        else:  # colourless, so that no distractor looks like a class's object
            colour = colour_rgb(ACHROMATIC[int(rng.integers(len(ACHROMATIC)))], rng)
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
    if obj is None:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = hsv(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    else:
        colour_word, shape_word = split_object(obj)
        shape, colour = SHAPE_WORDS[shape_word], colour_rgb(colour_word, rng)
    angle0 = rng.uniform(0, 2 * np.pi)
    radius, track, props = MOTIONS[spec.motion](t, rng, s)
    track.angle = track.angle + angle0
    actor = Item(shape, colour, radius, track, marker=True, outline=True)
    return Scene(bg, distractors, actor, props, t)


def _render_forward(obj: str | None, motion: str, index: int, cfg: SynthConfig) -> RenderedClip:
    size = cfg.size
    sc = _scene(obj, motion, index, cfg)
    planar = np.moveaxis(sc.background, -1, 0)[:, None]  # [3, 1, H, W]
    frames = np.broadcast_to(planar, (3, cfg.frames, size, size)).copy()  # [3, T, H, W]
    for item in sc.distractors:
        draw(frames, item)
    for item, front in sc.props:
        if not front:
            draw(frames, item)
    mask = np.zeros(frames.shape[1:], dtype=np.float32)  # [T, H, W]
    draw(frames, sc.actor, mask)
    for item, front in sc.props:
        if front:
            draw(frames, item)
    return _degrade(frames, mask, obj, motion, index, cfg)


def _render_doodle(obj: None, motion: str, index: int, cfg: SynthConfig) -> RenderedClip:
    """A forward clip of the second style (:mod:`.doodle`)."""
    rng = _rng(obj, motion, index, cfg, 0)
    bg, _ = doodle_background(rng, cfg.size)  # drawn even when clutter is low: the same scene either way
    if cfg.clutter == "low":
        bg = np.full_like(bg, 0.5)
    frames = np.broadcast_to(np.moveaxis(bg, -1, 0)[:, None], (3, cfg.frames, cfg.size, cfg.size)).copy()
    mask = np.zeros(frames.shape[1:], dtype=np.float32)  # [T, H, W]
    forward = [c for c, spec in DOODLE_CLASSES.items() if spec.reverse_of is None]
    hue = DOODLE_HUES[forward.index(motion) % len(DOODLE_HUES)]  # a reversal pair shares its forward class's
    draw_doodle(frames, rng, DOODLE_CLASSES[motion].motion, hue, mask, distractors=cfg.clutter != "low")
    return _degrade(frames, mask, obj, motion, index, cfg)


def _degrade(frames: np.ndarray, mask: np.ndarray, obj: str | None, motion: str, index: int,
             cfg: SynthConfig) -> RenderedClip:
    """Apply the clip's challenge to planar frames [3, T, H, W] and make the clip."""
    s, t = float(cfg.size), np.linspace(0.0, 1.0, cfg.frames)
    # The "mixed" choice is always drawn first, so a mixed clip equals the same clip rendered
    # with its challenge named explicitly.
    crng = _challenge_rng(obj, motion, index, cfg)
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

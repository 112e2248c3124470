"""The words the drawn world is made of, shared by the still images the toy CLIP is pretrained on
(:mod:`cachekit.toy`) and the compositional action classes (:mod:`.classes`): colours, shapes,
sizes, positions and backgrounds. Motion words are deliberately absent: the toy encoder learns
appearance and words, never motion, as CLIP does."""

from __future__ import annotations

import numpy as np

# name -> (hue, saturation range, value range), HSV in [0, 1]. A colour word is a category: each
# drawing jitters the hue a little and draws saturation and value from the ranges.
COLOURS: dict[str, tuple[float | None, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (0.08, (0.8, 1.0), (0.8, 1.0)),
    "yellow": (0.155, (0.75, 1.0), (0.85, 1.0)),
    "green": (0.33, (0.7, 1.0), (0.55, 0.9)),
    "blue": (0.62, (0.7, 1.0), (0.65, 1.0)),
    "purple": (0.78, (0.6, 0.9), (0.55, 0.9)),
    "white": (None, (0.0, 0.06), (0.92, 1.0)),
    "black": (None, (0.0, 0.1), (0.04, 0.14)),
    "grey": (None, (0.0, 0.08), (0.4, 0.62)),
}
# Shape word -> the drawing's shape (:func:`cachekit.synth.drawing.draw`).
SHAPES: dict[str, str] = {"disc": "disc", "square": "square", "triangle": "triangle", "ring": "ring"}
SIZES: dict[str, tuple[float, float]] = {"small": (0.06, 0.09), "large": (0.11, 0.16)}  # radius / side
# Position word -> centre (x, y) as fractions of the side; "the centre" is the middle third.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (1 / 6, 1 / 6), "top": (0.5, 1 / 6), "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 0.5), "centre": (0.5, 0.5), "right": (5 / 6, 0.5),
    "bottom left": (1 / 6, 5 / 6), "bottom": (0.5, 5 / 6), "bottom right": (5 / 6, 5 / 6),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "noisy", "striped", "gradient")
COUNTS: dict[int, str] = {1: "one", 2: "two", 3: "three"}


def colour_rgb(name: str, rng: np.random.Generator) -> np.ndarray:
    """[3] RGB in [0, 1] of one drawing of colour ``name``."""
    from .motions import hsv

    hue, sat, val = COLOURS[name]
    h = rng.uniform() if hue is None else (hue + rng.uniform(-0.02, 0.02)) % 1.0
    return hsv(h, rng.uniform(*sat), rng.uniform(*val))


def article(word: str) -> str:
    """``"a"`` or ``"an"`` before ``word``."""
    return "an" if word[:1] in "aeiou" else "a"


def object_phrase(colour: str, shape: str, size: str | None = None) -> str:
    """``"a red square"``, ``"an orange disc"``, ``"a small red square"``: how captions and class
    names name one object."""
    words = f"{size} {colour} {shape}" if size else f"{colour} {shape}"
    return f"{article(words)} {words}"


# The objects of the compositional action classes: each colour and each shape used more than
# once, so that base-to-novel splits can hold out a composition whose parts were both seen.
ACTION_OBJECTS: tuple[tuple[str, str], ...] = (
    ("red", "square"),
    ("blue", "disc"),
    ("green", "triangle"),
    ("yellow", "ring"),
    ("purple", "square"),
    ("orange", "disc"),
)

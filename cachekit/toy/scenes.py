"""Captioned still images for pretraining the toy CLIP: one to three objects (colour, shape, size,
position, count) on a plain or textured background, drawn with :mod:`cachekit.synth.drawing` in
the words of :mod:`cachekit.synth.vocab`. Still images only: no image shows motion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..synth.drawing import BACKGROUND_KINDS, background, draw
from ..synth.motions import Item, make_track
from ..synth.vocab import BACKGROUNDS, COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, colour_rgb, object_phrase

PLURAL = {"disc": "discs", "square": "squares", "triangle": "triangles", "ring": "rings"}
# Ink area of each shape at radius r, over r^2 (cachekit.synth.drawing's shapes: the square's half
# side is 0.8 r, the triangle's circumradius r, the ring's inner radius 0.55 r).
INK_AREA = {"disc": np.pi, "ring": np.pi * (1 - 0.55 ** 2), "square": 1.6 ** 2, "triangle": 3 * np.sqrt(3) / 4}
# How a size word's radius becomes each shape's radius: "radius" the same radius for every shape (so
# at one radius a triangle has 0.41 of a disc's ink and ink alone tells the shapes apart: the shipped
# toy calls tiny objects triangles and large ones discs); "mixed" scales it per object by
# k ** u, u ~ U(0, 1), where k = sqrt(pi / INK_AREA) gives the disc's ink (so neither ink nor extent
# names the shape).
SIZINGS = ("radius", "mixed")


def size_factor(shape: str, sizing: str, rng: np.random.Generator) -> float:
    """The factor ``sizing`` (:data:`SIZINGS`) applies to a ``shape``'s radius; "radius" draws nothing."""
    if sizing == "radius":
        return 1.0
    return float(np.sqrt(np.pi / INK_AREA[shape]) ** rng.uniform())


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """What one image shows: its objects (the first is the subject) and background word."""

    objects: tuple[SceneObject, ...]
    background: str

    def caption(self, rng: np.random.Generator, size_words: float = 0.0) -> str:
        """One of several captions of this scene, from the bare subject (``"a red square"``) to
        every object with size, place and background, so short class-name-like phrases and long
        descriptions both land near the image; a lone subject's size word ("a small red square")
        with probability ``size_words`` (the draw is made either way, so the stream does not
        change with it). Places are named often and backgrounds seldom:
        an encoder that knows *where* things are (and looks past the background) is one whose
        frame features can follow a trajectory, which is what temporal alignment needs."""
        first = self.objects[0]
        same = [o for o in self.objects if (o.colour, o.shape) == (first.colour, first.shape)]
        if len(same) > 1:
            subject = f"{COUNTS[len(same)]} {first.colour} {PLURAL[first.shape]}"
            others = [o for o in self.objects if (o.colour, o.shape) != (first.colour, first.shape)]
        else:
            others = list(self.objects[1:])
            sized = rng.uniform() < size_words
            subject = object_phrase(first.colour, first.shape, first.size if sized else None)
            if rng.uniform() < 0.8:
                subject += place_phrase(first.position)
        parts = [subject]
        if others and rng.uniform() < 0.6:
            parts += [object_phrase(o.colour, o.shape) + (place_phrase(o.position) if rng.uniform() < 0.5 else "")
                      for o in others]
        text = " and ".join(parts)
        if rng.uniform() < 0.2:
            text += f" on a {self.background} background"
        if rng.uniform() < 0.3:
            text = f"a picture of {text}"
        return text


def place_phrase(position: str) -> str:
    """`` in the centre``, `` on the left``, `` at the top left``: where an object is."""
    if position == "centre":
        return " in the centre"
    return f" on the {position}" if position in ("left", "right") else f" at the {position}"


def draw_scene(rng: np.random.Generator, size: int, sizing: str = "radius") -> tuple[np.ndarray, Scene]:
    """[H, W, 3] uint8 RGB of one random scene, and the scene; radii per ``sizing`` (:data:`SIZINGS`)."""
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg_word = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg = scene_background(rng, size, bg_word, xx, yy)
    colours, shapes, positions = list(COLOURS), list(SHAPES), list(POSITIONS)
    n = int(rng.choice([1, 1, 1, 2, 2, 3]))
    repeat = n > 1 and rng.uniform() < 0.3  # "two red squares"
    cells = rng.permutation(len(positions))[:n]
    objects = []
    for k in range(n):
        if k == 0 or not repeat:
            colour, shape = colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))]
        size_word = list(SIZES)[int(rng.integers(len(SIZES)))]
        objects.append(SceneObject(colour, shape, size_word, positions[int(cells[k])]))
    img = render(rng, bg, objects, lambda o: rng.uniform(*SIZES[o.size]) * s * size_factor(o.shape, sizing, rng))
    return img, Scene(tuple(objects), bg_word)


def scene_background(rng: np.random.Generator, size: int, word: str, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """[H, W, 3] float32 background of a pretraining background ``word`` (:data:`BACKGROUNDS`):
    one slightly tinted grey level for "plain", else :func:`~cachekit.synth.drawing.background`'s kind."""
    if word == "plain":
        grey = rng.uniform(0.25, 0.75)
        return np.full((size, size, 3), grey, np.float32) + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    return background(rng, size, xx, yy, kind=BACKGROUND_KINDS.index(word))


def render(rng: np.random.Generator, bg: np.ndarray, objects: Sequence[SceneObject],
           radius: Callable[[SceneObject], float], cover: np.ndarray | None = None, marks: bool = True) -> np.ndarray:
    """[H, W, 3] uint8 RGB of ``objects`` drawn in order (:func:`draw_object`, ``radius(obj)`` px)
    onto ``bg`` [H, W, 3] float32; ``cover`` [1, H, W] gets their coverage; ``marks`` as there."""
    frames = np.moveaxis(np.clip(bg, 0, 1), -1, 0)[:, None].copy()  # [3, 1, H, W]
    for obj in objects:
        draw_object(rng, frames, obj, lambda o=obj: radius(o), cover, marks)
    img = (np.clip(frames[:, 0], 0, 1) * 255 + 0.5).astype(np.uint8)  # [3, H, W]
    return np.ascontiguousarray(np.moveaxis(img, 0, -1))


def draw_object(rng: np.random.Generator, frames: np.ndarray, obj: SceneObject, radius: Callable[[], float],
                cover: np.ndarray | None = None, marks: bool = True) -> None:
    """Draw ``obj`` into planar frames [3, 1, H, W] in place, as the pretraining draws it: jittered
    about its place, turned at random, with or without outline and marker dot (never, with
    ``marks`` off: the same draws are made). ``radius()`` draws its radius in px (after the jitter,
    the stream's order); ``cover`` [1, H, W] gets its coverage."""
    s = float(frames.shape[-1])
    cx, cy = POSITIONS[obj.position]
    jitter = rng.uniform(-0.06, 0.06, 2)
    r = radius()
    track = make_track(np.zeros(1), (cx + jitter[0]) * s, (cy + jitter[1]) * s, angle=rng.uniform(0, 2 * np.pi))
    item = Item(SHAPES[obj.shape], colour_rgb(obj.colour, rng), r, track,
                marker=bool(rng.uniform() < 0.5) and marks, outline=bool(rng.uniform() < 0.7) and marks)
    draw(frames, item, cover)


def scene_batch(seed: int, step: int, batch: int, size: int, sizing: str = "radius", size_words: float = 0.0
                ) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Batch ``step`` of the seeded stream: [B, H, W, 3] uint8 images, one caption each (size words
    per :meth:`Scene.caption`), scenes."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, step, 0x70C]))
    images, captions, scenes = [], [], []
    for _ in range(batch):
        img, scene = draw_scene(rng, size, sizing)
        images.append(img)
        captions.append(scene.caption(rng, size_words))
        scenes.append(scene)
    return np.stack(images), captions, scenes

"""The benchmark's classes (:data:`CLASSES`: a motion each, :data:`REVERSAL_PAIRS`), its challenges
and :class:`SynthConfig`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import InputError


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

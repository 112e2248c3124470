"""The benchmark's classes (:data:`CLASSES`: a motion each, :data:`REVERSAL_PAIRS`), their
compositional form (an object of :mod:`.vocab` x a motion: :func:`compose`, :func:`parse_composition`),
its challenges and :class:`SynthConfig`."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Literal, get_args

from ..errors import InputError
from . import vocab


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
# The second style's motions (:mod:`.doodle`); none of them is one of :data:`Motion`.
DoodleMotion = Literal["diagonal", "spiral_in", "speed_up", "arc", "zigzag", "figure_eight", "blink", "pulse",
                       "wobble", "square_path", "wander"]
Style = Literal["default", "doodle"]
STYLES: tuple[str, ...] = get_args(Style)
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

    motion: Motion | DoodleMotion
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

# The second style (``SynthConfig(style="doodle")``, :mod:`.doodle`): other motions, shapes,
# backgrounds and speeds, drawn by another renderer. Add new classes at the end, as above.
DOODLE_CLASSES: dict[str, ClassSpec] = {
    "something moving diagonally down to the right": ClassSpec(
        "diagonal", "An object moves in a straight line from the top left towards the bottom right."),
    "something moving diagonally up to the left": ClassSpec(
        "diagonal", "An object moves in a straight line from the bottom right towards the top left.",
        reverse_of="something moving diagonally down to the right"),
    "something spiralling inwards": ClassSpec(
        "spiral_in", "An object circles around a point, coming closer to it with every turn."),
    "something spiralling outwards": ClassSpec(
        "spiral_in", "An object circles around a point, getting further from it with every turn.",
        reverse_of="something spiralling inwards"),
    "something speeding up": ClassSpec("speed_up", "An object starts slowly and moves faster and faster."),
    "something slowing down": ClassSpec(
        "speed_up", "An object moves fast, then slower and slower, and stops.", reverse_of="something speeding up"),
    "something jumping in an arc from left to right": ClassSpec(
        "arc", "An object leaps from the left, flies up in an arc and lands on the right."),
    "something jumping in an arc from right to left": ClassSpec(
        "arc", "An object leaps from the right, flies up in an arc and lands on the left.",
        reverse_of="something jumping in an arc from left to right"),
    "something zigzagging": ClassSpec("zigzag", "An object moves across in a zigzag, up and down in sharp turns."),
    "something tracing a figure eight": ClassSpec("figure_eight", "An object travels along a figure eight."),
    "something blinking": ClassSpec("blink", "An object stays in place and keeps vanishing and reappearing."),
    "something pulsing": ClassSpec("pulse", "An object stays in place and swells and shrinks again and again."),
    "something wobbling": ClassSpec("wobble", "An object stays in place and rocks back and forth."),
    "something going around a square": ClassSpec(
        "square_path", "An object travels along the four sides of a square, turning at the corners."),
    "something wandering": ClassSpec("wander", "An object drifts along a winding path."),
}
DOODLE_REVERSAL_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (spec.reverse_of, name) for name, spec in DOODLE_CLASSES.items() if spec.reverse_of is not None
)

# (forward class, reversed class): clip i of the second is clip i of the first, frames reversed.
REVERSAL_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (spec.reverse_of, name) for name, spec in CLASSES.items() if spec.reverse_of is not None
)


# --------------------------------------------------------------------------------------------
# Compositional classes: an object x a motion, named like Something-Something templates.

# The objects of :data:`vocab.ACTION_OBJECTS` as "colour shape" strings: what
# ``SynthConfig(objects=("default",))`` (``--objects default``) selects.
DEFAULT_OBJECTS: tuple[str, ...] = tuple(f"{colour} {shape}" for colour, shape in vocab.ACTION_OBJECTS)
# Colour words without a hue: distractors are drawn in these, so no class object may use one.
ACHROMATIC: tuple[str, ...] = tuple(c for c, (hue, _, _) in vocab.COLOURS.items() if hue is None)


def split_object(obj: str) -> tuple[str, str]:
    """``"red square"`` -> ``("red", "square")``; an InputError unless it is a chromatic colour and
    a shape of :mod:`.vocab`."""
    parts = obj.split() if isinstance(obj, str) else []
    chromatic = [c for c in vocab.COLOURS if c not in ACHROMATIC]
    if len(parts) != 2 or parts[0] not in chromatic or parts[1] not in vocab.SHAPES:
        raise InputError(
            f"object {obj!r} is not 'colour shape' with a colour of {chromatic} and a shape of "
            f"{list(vocab.SHAPES)}"
        )
    return parts[0], parts[1]


def compose(obj: str, motion_class: str) -> str:
    """Name of the class where ``obj`` ("red square") does ``motion_class`` (a key of
    :data:`CLASSES`): "something" becomes the object phrase, e.g. "moving a red square from left
    to right", "an orange disc falling"."""
    if motion_class not in CLASSES:
        raise InputError(f"unknown synthetic class {motion_class!r}; known: {sorted(CLASSES)}")
    return motion_class.replace("something", vocab.object_phrase(*split_object(obj)), 1)


def composition_classes(objects: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Every class of ``objects`` x :data:`CLASSES`, object-major: all motions of the first object,
    then all of the second, ..."""
    return tuple(compose(obj, motion) for obj in objects for motion in CLASSES)


_OBJECT_RE = re.compile(
    r"\b(?:a|an) (" + "|".join(vocab.COLOURS) + r") (" + "|".join(vocab.SHAPES) + r")\b"
)


def parse_composition(name: str) -> tuple[str, str]:
    """``"moving a red square from left to right"`` -> ``("red square", "moving something from left
    to right")``: the object and the motion class of a compositional class name (InputError if
    ``name`` is not one)."""
    for m in _OBJECT_RE.finditer(name):
        obj = f"{m.group(1)} {m.group(2)}"
        motion = name[: m.start()] + "something" + name[m.end() :]
        if motion in CLASSES and m.group(1) not in ACHROMATIC and compose(obj, motion) == name:
            return obj, motion
    raise InputError(f"{name!r} is not a compositional synthetic class ('<motion> of a <colour> <shape>')")


def object_key(obj: str) -> int:
    """A stable number of ``obj`` for per-clip seeds: independent of which objects a data set
    uses and of their order."""
    return zlib.crc32(obj.encode("utf-8"))


def describe(obj: str, motion_class: str) -> str:
    """The class description of :data:`CLASSES` with "an object" replaced by the object phrase."""
    phrase = vocab.object_phrase(*split_object(obj))
    text = CLASSES[motion_class].description
    if text.startswith("An object"):
        return phrase[0].upper() + phrase[1:] + text[len("An object") :]
    return text.replace("an object", phrase, 1)


def slugify(name: str) -> str:
    """File-system name of a class: lower case, runs of other characters become one ``_``."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise InputError(f"cannot make a file name from class name {name!r}")
    return slug


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`synth_dataset` draws.

    objects: None (the default) draws the motion-only benchmark: classes are :data:`CLASSES`
        and each clip's acting object has a random shape and colour. A tuple of "colour shape"
        strings of :mod:`.vocab` (a chromatic colour: "red square", "orange disc") makes it
        compositional: the classes are every object x every class of :data:`CLASSES`
        (:func:`composition_classes`, object-major), the acting object is the class's object,
        and distractors are grey, white or black. ``("default",)`` selects
        :data:`DEFAULT_OBJECTS` (vocab.ACTION_OBJECTS) and is stored expanded.
    classes: class names in label order; None = all (:data:`CLASSES`, or with ``objects`` every
        composition, in product order). With ``objects``, names of compositions of those objects.
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
    style: "default" draws the benchmark described above; "doodle" the second style
        (:mod:`.doodle`: the motion classes :data:`DOODLE_CLASSES`, other shapes, backgrounds and
        speeds, another renderer), motion only (no ``objects``), to check what transfers.
        ``clutter="low"`` keeps its background plain grey and drops its distractors.
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
    objects: tuple[str, ...] | None = None
    style: Style = "default"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise InputError(f"style must be one of {list(STYLES)}, not {self.style!r}")
        if self.style != "default" and self.objects is not None:
            raise InputError(f"the {self.style} style has motion classes only: leave objects out")
        # JSON gives lists; keep the dataclass hashable and equal to the original.
        if self.objects is not None:
            if isinstance(self.objects, str):
                raise InputError(f"objects must be a list of 'colour shape' strings, not {self.objects!r}")
            objects = tuple(self.objects)
            if objects == ("default",):
                objects = DEFAULT_OBJECTS
            if not objects:
                raise InputError("objects must name at least one object (or be None: motion only)")
            for obj in objects:
                split_object(obj)
            if len(set(objects)) != len(objects):
                raise InputError(f"objects listed twice in {list(objects)}")
            object.__setattr__(self, "objects", objects)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            known = self.all_classes
            unknown = [c for c in self.classes if c not in known]
            if unknown:
                hint = (f"known: {sorted(self.class_table)}" if self.objects is None else
                        f"classes are compositions of the objects {list(self.objects)}, e.g. {known[0]!r}")
                raise InputError(f"unknown synthetic class(es) {unknown}; {hint}")
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
    def compositional(self) -> bool:
        """Classes are object x motion (``objects`` is set)."""
        return self.objects is not None

    @property
    def class_table(self) -> dict[str, ClassSpec]:
        """The motion classes of this config's style: :data:`CLASSES` or :data:`DOODLE_CLASSES`."""
        return DOODLE_CLASSES if self.style == "doodle" else CLASSES

    @property
    def all_classes(self) -> tuple[str, ...]:
        """Every class this config can draw: its style's motion classes, or every composition of
        ``objects``."""
        return tuple(self.class_table) if self.objects is None else composition_classes(self.objects)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The data set's classes in label order."""
        return self.all_classes if self.classes is None else self.classes

    def resolve(self, class_name: str) -> tuple[str | None, str]:
        """(object or None, motion class) of one of this config's classes; InputError otherwise."""
        if self.objects is None:
            if class_name not in self.class_table:
                raise InputError(f"unknown synthetic class {class_name!r}; known: {sorted(self.class_table)}")
            return None, class_name
        try:
            obj, motion = parse_composition(class_name)
        except InputError:
            obj = None
        if obj not in self.objects:
            raise InputError(
                f"unknown synthetic class {class_name!r}: classes are compositions of the objects "
                f"{list(self.objects)}, e.g. {compose(self.objects[0], next(iter(CLASSES)))!r}"
            )
        return obj, motion

    def reversal_pairs(self) -> list[tuple[str, str]]:
        """(forward, reversed) pairs among :attr:`class_names`: :data:`REVERSAL_PAIRS`, per object
        when compositional."""
        chosen = set(self.class_names)
        objects = (None,) if self.objects is None else self.objects
        table = DOODLE_REVERSAL_PAIRS if self.style == "doodle" else REVERSAL_PAIRS
        pairs = [(a, b) if obj is None else (compose(obj, a), compose(obj, b))
                 for obj in objects for a, b in table]
        return [(a, b) for a, b in pairs if a in chosen and b in chosen]

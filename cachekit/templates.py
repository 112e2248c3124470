"""Prompt templates for class text embeddings; ``{}`` stands for the class name."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError, InputNotFound

SINGLE = ("a video of a person {}.",)

# MA-FSAR Table 10, verbatim ("[CLS]" written as "{}"): one at random per video in training,
# all 16 averaged at test.
MA_FSAR16 = (
    "{}",
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)

TEMPLATE_SETS = {"single": SINGLE, "ma_fsar16": MA_FSAR16}


def templates_label(templates: tuple[str, ...]) -> str:
    """A template set as a result records it: its name when it is one of :data:`TEMPLATE_SETS`,
    else the templates themselves (a file's)."""
    for name, known in TEMPLATE_SETS.items():
        if tuple(templates) == known:
            return f"{name} ({len(known)}: {known[0]!r}{', ...' if len(known) > 1 else ''})"
    return f"{len(templates)} from a file: " + " | ".join(templates)


def resolve_templates(spec: str) -> tuple[str, ...]:
    """``single``, ``ma_fsar16``, or a text file with one template per line (``{}`` = class)."""
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise InputNotFound(
            f"--templates {spec!r} is neither {' nor '.join(TEMPLATE_SETS)} nor an existing file"
        )
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    bad = [ln for ln in lines if "{}" not in ln]
    if not lines or bad:
        raise InputError(f"{spec}: every template line must contain '{{}}' for the class name"
                         + (f" (not: {bad[0]!r})" if bad else " (file is empty)"))
    return tuple(lines)


def fill(templates: tuple[str, ...], name: str) -> list[str]:
    return [t.format(name) for t in templates]

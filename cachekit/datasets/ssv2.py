"""Something-Something v2's JSON lists: ``something-something-v2-{train,validation,test}.json``
(or ``labels/{train,validation,test}.json`` of the later package).

A record is ``{"id", "label", "template", "placeholders"}``; the class is the template with every
``[`` and ``]`` deleted (``[Something] falling like a feather or paper`` -> ``Something falling
like a feather or paper``), never ``label`` (the filled-in sentence). Videos are
``<--video-root>/<id>.webm`` (``.mp4`` too, as mmaction2 re-encodes them). The test list has ids
only: its videos are extracted unlabelled. When ``something-something-v2-labels.json`` (or
``labels.json``) is beside the list, each class must be one of its keys, and the store keeps its
id ("0".."173") beside the name; the class order for ``--class-names`` rows is that id order.

Refused: a class that is not a labels.json key, labels.json ids other than 0..C-1, a test record
with a template, labels.json itself given as the list. Parsed as JSON, never by line.
"""

from __future__ import annotations

import json
import os
import re

from ..errors import InputError
from .base import NO, SPECIFIC, ClassSet, Context, InputSet, Source, split_of

NAME = "ssv2"
DESCRIPTION = "Something-Something v2 something-something-v2-{train,validation,test}.json (+ labels.json beside)"

LABEL_FILES = ("something-something-v2-labels.json", "labels.json")


def _json(src: Source):
    if src.is_dir or src.text is None or not src.text.lstrip()[:1] in ("[", "{"):
        return None
    try:
        return json.loads(src.text)
    except ValueError:
        return None


def sniff(src: Source) -> int:
    if src.is_dir or not src.name.lower().endswith(".json"):
        return NO
    doc = _json(src)
    if isinstance(doc, list) and doc and all(isinstance(r, dict) and "id" in r for r in doc[:100]):
        return SPECIFIC
    if isinstance(doc, dict) and doc and all(isinstance(v, str) and v.isdigit() for v in list(doc.values())[:200]):
        return SPECIFIC  # labels.json: read() says what to pass
    return NO


def class_of(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def labels_beside(src: Source) -> tuple[dict[str, str], str] | None:
    """labels.json beside the list: ``{class: id}`` (ids 0..C-1, checked) and its file name."""
    for name in LABEL_FILES:
        p = src.path.parent / name
        if p.is_file() and p != src.path:
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise InputError(f"{p}: not readable as JSON ({err})") from err
            if not isinstance(doc, dict) or sorted(int(v) for v in doc.values() if str(v).isdigit()) != list(range(len(doc))):
                raise InputError(f"{p}: an SSv2 labels file maps each class to an id \"0\"..\"{len(doc) - 1}\" once")
            return {k: str(v) for k, v in doc.items()}, name
    return None


def read(src: Source, ctx: Context, out: InputSet) -> None:
    doc = _json(src)
    if isinstance(doc, dict):
        raise InputError(f"{src.path} is the SSv2 class list; pass the train / validation / test JSON lists (it is "
                         "read from beside them)")
    if not isinstance(doc, list):
        raise InputError(f"{src.path}: not an SSv2 JSON list (an array of {{\"id\", \"template\", ...}} records)")
    split = split_of(src.name)
    if split is None:
        raise InputError(f"{src.path}: an SSv2 list's name says its split (train, validation, test); this one does not")
    labels = labels_beside(src)
    root = ctx.root(src.path.parent)
    ids_seen: set[str] = set()
    for n, rec in enumerate(doc):
        vid = str(rec.get("id", "")) if isinstance(rec, dict) else ""
        if not re.fullmatch(r"\d+", vid):
            raise InputError(f"{src.path}: record {n}: id {vid!r} is not a decimal video id")
        path = str(root / f"{vid}.webm")
        if not os.path.exists(path) and os.path.exists(root / f"{vid}.mp4"):
            path = str(root / f"{vid}.mp4")
        template = rec.get("template")
        if split == "test" or template is None:
            if template is not None:
                raise InputError(f"{src.path}: record {n} of the test list carries a template; the official test "
                                 "list is unlabelled (ids only)")
            if rec.get("label") is not None and split != "test":
                raise InputError(f"{src.path}: record {n} has a label but no template; the class is the template")
            out.add(NAME, path, split)
            continue
        cls = class_of(str(template))
        if labels is not None and cls not in labels[0]:
            raise InputError(f"{src.path}: record {n}: class {cls!r} (its template without brackets) is not a key "
                             f"of {labels[1]}")
        own = labels[0][cls] if labels is not None else cls
        ids_seen.add(own)
        out.add(NAME, path, split, class_id=own)
    if labels is not None:
        order = [c for c, _ in sorted(labels[0].items(), key=lambda kv: int(kv[1]))]
        out.classes[NAME] = ClassSet(order=[labels[0][c] for c in order], names={labels[0][c]: c for c in order})
    else:
        out.classes.setdefault(NAME, ClassSet())

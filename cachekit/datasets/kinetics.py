"""Kinetics-400/600/700 CSVs: ``label,youtube_id,time_start,time_end,split[,is_cc]`` (the unlabelled
test CSV: ``youtube_id,time_start,time_end,split``), as ActivityNet, DeepMind and CVDF ship them.

Columns are read by their header names, never by position. A row's clip is
``<youtube_id>_<time_start:06d>_<time_end:06d>`` with any video extension (``.mp4``), found anywhere
under ``--video-root`` (CVDF's flat ``train/``, ``val/``; mmaction2's or torchvision's class folders:
the folder spelling does not matter, the class is the CSV's label). Rows whose clip is not there
are counted as missing (public copies lack 5-10 %: the coverage lines say how many). The split is
the ``split`` column (``validate`` -> val), else the file name's. Class order (``--class-names``
rows numbered 0..): the sorted labels, as mmaction2 and ViFi-CLIP number them.

Refused: a CSV without the header, ids that are not 11 characters of ``[A-Za-z0-9_-]``, rows of
another width, unbalanced quotes, non-integer times.
"""

from __future__ import annotations

import re

from ..errors import InputError
from .base import NO, SPECIFIC, ClassSet, Context, InputSet, Source, numbered_csv_rows, split_of

NAME = "kinetics"
DESCRIPTION = "Kinetics-400/600/700 CSV: label,youtube_id,time_start,time_end,split[,is_cc] (clips anywhere under --video-root)"

YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
NEEDED = ("youtube_id", "time_start", "time_end")
SPLITS = {"train": "train", "training": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def _header(src: Source) -> list[str]:
    first = src.lines[0] if src.lines else ""
    return [c.strip().strip('"').lower() for c in first.split(",")]


def sniff(src: Source) -> int:
    if src.is_dir or not src.name.lower().endswith(".csv") or not src.lines:
        return NO
    head = _header(src)
    if all(c in head for c in NEEDED):
        return SPECIFIC
    # the same rows without their header: claimed, so that read() refuses them (never read as paths)
    cells = head
    if len(cells) >= 4 and any(YTID.match(c) for c in cells[:2]) and any(re.fullmatch(r"\d+", c) for c in cells[1:4]):
        return SPECIFIC
    return NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    rows = numbered_csv_rows(src)
    head = [c.strip().lower() for c in rows[0][1]] if rows else []
    if not all(c in head for c in NEEDED):
        raise InputError(f"{src.path}: a Kinetics CSV starts with its header (label,youtube_id,time_start,time_end,"
                         "split); this one has none, and its columns are not read by position")
    col = {c: head.index(c) for c in head}
    index = ctx.files_by_stem(ctx.root(src.path.parent))
    default_split = split_of(src.name)
    labels: set[str] = set()
    for n, row in rows[1:]:
        if len(row) != len(head):
            raise InputError(f"{src.path}: line {n} has {len(row)} fields, the header {len(head)}")
        yid = row[col["youtube_id"]].strip()
        if not YTID.match(yid):
            raise InputError(f"{src.path}: line {n}: youtube_id {yid!r} is not 11 characters of [A-Za-z0-9_-]")
        try:
            start, end = int(row[col["time_start"]]), int(row[col["time_end"]])
        except ValueError as err:
            raise InputError(f"{src.path}: line {n}: times must be integers ({err})") from err
        split = SPLITS.get(row[col["split"]].strip().lower()) if "split" in col else None
        split = split or default_split or "train"
        label = row[col["label"]].strip() if "label" in col else None
        clip = f"{yid}_{start:06d}_{end:06d}"
        if label:
            labels.add(label)
        found = index.get(clip)
        if found is None:
            out.missing.setdefault(split, []).append(str(ctx.root(src.path.parent) / f"{clip}.mp4"))
            continue
        out.add(NAME, found, split, class_id=label or None)
    cset = out.classes.setdefault(NAME, ClassSet(order=[]))
    cset.order = sorted(set(cset.order or ()) | labels)  # every listed class, present or not
    cset.names.update({lab: lab for lab in labels})  # Kinetics labels are words already ("air drumming")

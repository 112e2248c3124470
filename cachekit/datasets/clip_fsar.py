"""CLIP-FSAR's few-shot split files (``configs/projects/CLIPFSAR/<ds>/{train,val,test}_few_shot.txt``)
and OTAM's SSv2-Full lists (``train8/78687``): ``<split><k>//<path>`` or ``<split><k>/<video id>``.

``k`` numbers the classes of each split separately: their names come from ``--class-names DIR``
with ``{train,val,test}_classes.txt`` (the YAML's ``CLASS_NAME`` lists); without it the class is
the folder in the path (``train0//videos/ApplyEyeMakeup/v_...avi`` -> "apply eye makeup"), or, for
ids without a path, ``"train class k"``. A ``<split><k>/<id>`` line opens ``<--video-root>/<id>.mp4``
(or ``.webm``, SSv2's own container).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError
from .base import NO, SPECIFIC, Context, InputSet, Source

NAME = "clip_fsar"
OWN_CLASS_NAMES = True  # --class-names is this format's per-split class lists, not an override of names
DESCRIPTION = "CLIP-FSAR / OTAM few-shot lists: train3//path/to/video.avi, train3/123456"

LINE = re.compile(r"^(train|val|test)(\d+)(//?)(.+)$")


def sniff(src: Source) -> int:
    lines = [ln for ln in src.lines if not ln.startswith("#")]
    return SPECIFIC if lines and all(LINE.match(ln) for ln in lines) else NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    names = ctx.class_names
    per_split = names.per_split if names is not None else None
    if names is not None and per_split is None:
        raise InputError(f"{src.path}: CLIP-FSAR class indices are per split; give --class-names as a folder "
                         "with train/val/test class lists (e.g. train_classes.txt)")
    for n, ln in src.numbered_lines:
        if ln.startswith("#"):
            continue
        m = LINE.match(ln)
        if m is None:
            raise InputError(f"{src.path}: line {n}: expected '<split><k>//<path>' or '<split><k>/<id>', got {ln!r}")
        split, idx, sep, rest = m.groups()
        if sep == "//":
            path = ctx.resolve(rest, src.path.parent)
        else:  # an SSv2 video id: CLIP-FSAR opens <root>/<id>.mp4; the download is <id>.webm
            path = ctx.resolve(f"{rest}.mp4", src.path.parent)
            if not os.path.exists(path) and os.path.exists(path[:-4] + ".webm"):
                path = path[:-4] + ".webm"
        if per_split is not None and split in per_split:
            if int(idx) >= len(per_split[split]):
                raise InputError(f"{src.path}: class index {idx} but only {len(per_split[split])} {split} class names")
            out.add(NAME, path, split, label=per_split[split][int(idx)])
            continue
        folder = Path(rest).parent.name if sep == "//" else ""
        if folder:
            out.add(NAME, path, split, class_id=folder)
        else:
            out.add(NAME, path, split, label=f"{split} class {idx}")

"""Few-shot split lists of CMN, TRX and ARN (``kinetics-100/train.list``, ``splits/ucf_ARN/
trainlist03.txt``, ``splits/ssv2_CMN/testlist03.txt``, ...): ``<class>/<video stem>``, no extension.

The class is the part before the last ``/`` ("air drumming", "ApplyEyeMakeup" -> "apply eye
makeup", "brush_hair" -> "brush hair", an SSv2 sentence); the split is the file name's. A line's
video is looked up under ``--video-root``: ``<class>/<stem>.<ext>`` or the frame folder
``<class>/<stem>/`` (TRX's frames), else any video file or frame folder named ``<stem>``
anywhere below (Kinetics clips, SSv2 ``<id>.webm``). Class order for ``--class-names`` rows: the
sorted class names (TRX ranks the sorted folder names).
"""

from __future__ import annotations

import os
import re

from ..errors import InputError
from ..video import VIDEO_EXTENSIONS, is_video_name
from .base import NO, SPECIFIC, Context, InputSet, Source, split_of
from .clip_fsar import LINE as FSAR_LINE

NAME = "trx"
DESCRIPTION = "CMN / TRX / ARN few-shot lists: <class>/<video stem> (no extension)"

LINE = re.compile(r"^(?P<cls>[^/]+)/(?P<stem>[^/]+)$")


def sniff(src: Source) -> int:
    lines = src.lines
    if not lines or not all(LINE.match(ln) for ln in lines):
        return NO
    if any(is_video_name(ln) or ln.startswith("#") for ln in lines) or all(FSAR_LINE.match(ln) for ln in lines):
        return NO
    if any(re.search(r"\s\d+$", ln) for ln in lines):  # "<path> <label>" lists are not these
        return NO
    return SPECIFIC


def read(src: Source, ctx: Context, out: InputSet) -> None:
    split = split_of(src.name)
    if split is None:
        raise InputError(f"{src.path}: a few-shot list's name says its split (trainlist03.txt, val.list, test.list); "
                         "this one does not")
    root = ctx.root(src.path.parent)
    for n, ln in src.numbered_lines:
        m = LINE.match(ln)
        if m is None:
            raise InputError(f"{src.path}: line {n}: expected '<class>/<video stem>', got {ln!r}")
        cls, stem = m["cls"], m["stem"]
        found = None
        for folder in dict.fromkeys((cls, cls.replace(" ", "_"))):
            base = root / folder / stem
            if os.path.isdir(base):
                found = str(base)
                break
            found = next((str(base) + e for e in VIDEO_EXTENSIONS if os.path.isfile(str(base) + e)), None)
            if found:
                break
        found = found or ctx.files_by_stem(root).get(stem)
        if found is None:
            out.missing.setdefault(split, []).append(str(root / cls / stem))
            out.saw_class(NAME, cls)
            continue
        out.add(NAME, found, split, class_id=cls)

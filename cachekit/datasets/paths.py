"""A text file of video paths (or frame folders), one per line; relative ones under
``--video-root``, else beside the list. Unlabelled."""

from __future__ import annotations

import os

from ..frames import is_frame_folder
from ..video import is_video_name
from .base import GENERIC, NO, Context, InputSet, Source


def _is_video_path(line: str, src: Source) -> bool:
    if is_video_name(line):
        return True
    p = line if os.path.isabs(line) else os.path.join(src.path.parent, line)
    return is_frame_folder(p)


NAME = "list"
DESCRIPTION = "text file of video paths, one per line"


def sniff(src: Source) -> int:
    if src.is_dir or src.name.lower().endswith((".csv", ".json")):
        return NO
    lines = [ln for ln in src.lines if not ln.startswith("#")]
    return GENERIC if lines and all(_is_video_path(ln, src) for ln in lines) else NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    for ln in src.lines:
        if not ln.startswith("#"):
            out.add(NAME, ctx.resolve(ln, src.path.parent), None, listed=False)

"""A folder with one sub-folder of videos per class (the class: the folder's name, as words:
``ApplyEyeMakeup`` -> "apply eye makeup"; the store keeps the folder name beside it), or a folder
of videos (unlabelled). Videos are found at any depth inside a class folder."""

from __future__ import annotations

from ..errors import InputError
from ..video import is_video_name
from .base import GENERIC, NO, Context, InputSet, Source

NAME = "folder"
DESCRIPTION = "folder of class folders of videos (or of videos)"


def sniff(src: Source) -> int:
    if not src.is_dir:
        return NO
    if any(is_video_name(p.name) and p.is_file() for p in src.children):
        return GENERIC
    return GENERIC if any(p.is_dir() for p in src.children) else NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    subdirs = [d for d in src.children if d.is_dir() and not is_video_name(d.name)]
    found = 0
    for d in subdirs:
        for f in sorted(d.rglob("*")):
            if is_video_name(f.name):
                out.add(NAME, str(f), None, class_id=d.name, listed=False)
                found += 1
    if not subdirs:
        for f in src.children:
            if is_video_name(f.name):
                out.add(NAME, str(f), None, listed=False)
                found += 1
    if not found:
        raise InputError(f"folder {src.path} holds no videos (expected one sub-folder of videos per class)")

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
    empty = []
    for d in subdirs:
        if not d.name.startswith((".", "__MACOSX")):  # an empty class folder still holds its row of --class-names
            out.saw_class(NAME, d.name)
        n = found
        for f in sorted(d.rglob("*")):
            if is_video_name(f.name):
                out.add(NAME, str(f), None, class_id=d.name, listed=False)
                found += 1
        if found == n and not d.name.startswith((".", "__MACOSX")):
            empty.append(d.name)
    if subdirs:
        loose = [f.name for f in src.children if is_video_name(f.name) and f.is_file()]
        if loose:
            out.notes.append(f"{len(loose)} video{'s' * (len(loose) != 1)} beside the class folders of {src.path} "
                             f"{'have' if len(loose) != 1 else 'has'} no class: left out (e.g. {loose[0]})")
        if empty and found:
            out.notes.append(f"{len(empty)} class folder{'s' * (len(empty) != 1)} of {src.path} "
                             f"{'hold' if len(empty) != 1 else 'holds'} no video (e.g. {empty[0]})")
    else:
        for f in src.children:
            if is_video_name(f.name):
                out.add(NAME, str(f), None, listed=False)
                found += 1
    if not found:
        raise InputError(f"folder {src.path} holds no videos (expected one sub-folder of videos per class)")

"""Frame folders (:mod:`cachekit.frames`): a folder of images is one video; a folder of frame
folders is an unlabelled set; a folder of class folders of frame folders is a labelled set (TSN /
mmaction2 ``rawframes/<Class>/<video>/img_00001.jpg``, TRX ``<class>/<video>/00000001.jpg``)."""

from __future__ import annotations

from ..errors import InputError
from ..frames import is_frame_folder
from ..video import is_video_name
from .base import NO, SPECIFIC, Context, InputSet, Source

NAME = "frames"
DESCRIPTION = "frame folders: a folder of images, or (class) folders of them"


def _kind(src: Source) -> str | None:
    if not src.is_dir:
        return None
    if is_frame_folder(src.path):
        return "video"
    dirs = [d for d in src.children if d.is_dir()]
    if any(is_video_name(p.name) and p.is_file() for p in src.children) or not dirs:
        return None
    if all(is_frame_folder(d) for d in dirs):
        return "set"
    if any(is_frame_folder(v) for d in dirs for v in d.iterdir() if v.is_dir()):
        return "classes"
    return None


def sniff(src: Source) -> int:
    return SPECIFIC if _kind(src) else NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    kind = _kind(src)
    if kind == "video":
        out.add(NAME, str(src.path), None, listed=False)
    elif kind == "set":
        for d in src.children:
            if d.is_dir():
                out.add(NAME, str(d), None, listed=False)
    elif kind == "classes":
        for c in src.children:
            if not c.is_dir():
                continue
            out.saw_class(NAME, c.name)  # an empty class folder still holds its row of --class-names
            for v in sorted(c.iterdir()):
                if v.is_dir() and is_frame_folder(v):
                    out.add(NAME, str(v), None, class_id=c.name, listed=False)
    else:
        raise InputError(f"{src.path}: no frame folders in it (a folder of images, or class folders of them)")

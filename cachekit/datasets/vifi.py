"""ViFi-CLIP / EZ-CLIP video lists (``datasets_splits/ucf_splits/train1_few_shot_2.txt``,
``val1.txt``, ``ssv2_splits/validation.txt``, ...): ``<path> <label>``, one space.

Labels are 0-based rows of the ``labels.csv`` (``id,name``) given with ``--class-names`` (the
format's own label file: its names are the class ids, kept in the store, and go to text as words,
``ApplyEyeMakeup`` -> "apply eye makeup"); without it the class is the path's folder, else
``"class <label>"`` (also when the folders do not pair one to one with the labels, as in ViFi-CLIP's
Kinetics lists, ``val/<clip>.mp4``, where the folder is the split). The split is the file name's
(``val1.txt``, ``validation.txt`` -> val; ``train1_few_shot_16.txt``, ``fs_base_s1_train.txt``,
``base_train.txt`` -> train; ``base_val.txt``, ``novel_val.txt`` as they are). A bare file name
(UCF101's and HMDB51's lists name ``v_x.avi`` without its class folder) is found anywhere under
``--video-root`` when it is not directly there. A three-field line (a TSN frame list,
``<dir> <frames> <label>``) is not this format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError
from .base import GENERIC, NO, Context, InputSet, Source

NAME = "vifi"
OWN_CLASS_NAMES = True  # --class-names is this format's labels.csv, not an override of names
DESCRIPTION = "ViFi-CLIP / EZ-CLIP video lists: <path> <label> (labels index --class-names labels.csv)"

LINE = re.compile(r"^(\S+)\s+(-?\d+)$")


def sniff(src: Source) -> int:
    lines = [ln for ln in src.lines if not ln.startswith("#")]
    return GENERIC if lines and all(LINE.match(ln) for ln in lines) else NO


def split_name(path: Path) -> str:
    stem = path.stem.lower()
    if stem in ("base_val", "novel_val"):
        return stem
    if "train" in stem:
        return "train"
    for s in ("val", "test"):
        if stem.startswith(s):
            return s
    return stem


def read(src: Source, ctx: Context, out: InputSet) -> None:
    split = split_name(src.path)
    names = ctx.class_names.by_index if ctx.class_names is not None else None
    if ctx.class_names is not None and names is None:
        raise InputError(f"{src.path}: ViFi-CLIP labels are 0-based rows of a labels.csv ('id,name'); "
                         f"--class-names {ctx.class_names.path} is not one")
    rows = []
    for ln in src.lines:
        if ln.startswith("#"):
            continue
        m = LINE.match(ln)
        if m is None:
            raise InputError(f"{src.path}: expected '<path> <label>', got {ln!r}")
        rows.append((m[1], int(m[2])))
    by_folder = names is None and _folders_are_classes(rows)
    if names is None and not by_folder and any(Path(rel).parent.name for rel, _ in rows):
        out.notes.append(f"{src.name}: its folders do not follow its labels (one folder holds several labels, "
                         "e.g. ViFi-CLIP's Kinetics lists under train/ and val/): classes are named 'class <label>'; "
                         "pass --class-names labels.csv for their names")
    for rel, i in rows:
        path = ctx.resolve(rel, src.path.parent)
        if not os.path.exists(path) and "/" not in rel:  # a bare name: anywhere under the video root
            found = ctx.files_by_stem(ctx.root(src.path.parent)).get(Path(rel).stem)
            path = found if found is not None and Path(found).name == rel else path
        if names is not None:
            if not 0 <= i < len(names):
                raise InputError(f"{src.path}: label {i} outside the {len(names)} class names")
            out.add(NAME, path, split, class_id=names[i])
        elif by_folder:
            out.add(NAME, path, split, class_id=Path(rel).parent.name)
        else:
            out.add(NAME, path, split, label=f"class {i}")


def _folders_are_classes(rows: list[tuple[str, int]]) -> bool:
    """Whether the paths' folders name the classes: every line has one, and folders and labels
    pair one to one (not ViFi-CLIP's Kinetics lists, whose folder is the split: ``val/<clip>.mp4``)."""
    pairs = {(Path(rel).parent.name, i) for rel, i in rows}
    folders = {f for f, _ in pairs}
    return "" not in folders and len(pairs) == len(folders) == len({i for _, i in pairs})

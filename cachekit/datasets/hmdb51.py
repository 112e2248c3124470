"""HMDB51's official splits (``test_train_splits.rar`` -> ``testTrainMulti_7030_splits/``).

One file per class and fold, ``<class>_test_split<N>.txt``; a line ``<name>.avi <mark>`` with mark
``1`` train, ``2`` test, ``0`` unused (left out, counted in a note). The class is the file name's,
the video ``<--video-root>/<class>/<name>.avi``. The folder of the 153 files reads fold ``--fold N``
(default 1). Class order (for ``--class-names`` rows numbered 0..): the sorted class names, as
mmaction2 and torchvision number them. Text gets ``brush_hair`` as "brush hair".

Refused (near misses): a mark other than 0/1/2 (a ViFi-CLIP list of HMDB names: ``--format
vifi``); names of another class in a class's file; split files named otherwise
(``brush_hair_test_split_1.txt``).
"""

from __future__ import annotations

import re

from ..errors import InputError, InputNotFound
from .base import NO, SPECIFIC, Context, InputSet, Source

NAME = "hmdb51"
DESCRIPTION = "HMDB51 testTrainMulti_7030_splits/<class>_test_splitN.txt (or the folder, --fold N)"

FILE = re.compile(r"^(?P<cls>[a-z_]+)_test_split(?P<fold>\d)\.txt$")
NEAR_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<sep>[_\- ]?)(?P<fold>\d+)\.txt$", re.IGNORECASE)
LINE = re.compile(r"^(\S+\.avi)\s+(-?\d+)$")
# <source>_<class>_<f|h|u|l>_<cm|nm>_<np0..np10>_<fr|ba|le|ri>_<goo|med|bad>_<n>.avi (datasets.md §2)
GRAMMAR = re.compile(r"_[fhul]_(cm|nm)_np\d+_(fr|ba|le|ri)_(goo|med|bad)_\d+\.avi$")
MARKS = {"1": "train", "2": "test"}


def sniff(src: Source) -> int:
    if src.is_dir:
        return SPECIFIC if any(FILE.match(p.name) for p in src.children) else NO
    lines = src.lines
    parsed = [LINE.match(ln) for ln in lines]
    if not lines or not all(parsed):
        return NO
    if NEAR_FILE.match(src.name):
        return SPECIFIC
    # HMDB names with marks 0/1/2 only: an official split file under another name (read() refuses)
    if all(GRAMMAR.search(m[1]) and m[2] in ("0", "1", "2") for m in parsed):
        return SPECIFIC
    return NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    if src.is_dir:
        fold = ctx.fold or 1
        files = sorted(p for p in src.children if (m := FILE.match(p.name)) and int(m["fold"]) == fold)
        if not files:
            raise InputNotFound(f"{src.path}: no <class>_test_split{fold}.txt files (--fold N picks the fold)")
        for p in files:
            read(Source(p), ctx, out)
        return
    m = FILE.match(src.name)
    if m is None:
        raise InputError(f"{src.path}: HMDB51 split files are named <class>_test_split<N>.txt (e.g. "
                         f"brush_hair_test_split1.txt), not {src.name}; refusing to guess its class and fold")
    cls, fold = m["cls"], int(m["fold"])
    if ctx.fold is not None and fold != ctx.fold:
        raise InputError(f"{src.path} is fold {fold}, but --fold {ctx.fold} was given: pass that fold's split files "
                         "(or their folder with --fold), or leave --fold out")
    out.same_fold(NAME, f"fold {fold}", src.name)
    unused = 0
    for n, ln in src.numbered_lines:
        row = LINE.match(ln)
        if row is None:
            raise InputError(f"{src.path}: line {n}: expected '<name>.avi <0|1|2>', got {ln!r}")
        name, mark = row[1], row[2]
        if mark not in ("0", "1", "2"):
            raise InputError(f"{src.path}: line {n}: mark {mark}; HMDB51 marks are 1 train, 2 test, 0 unused "
                             "(a ViFi-CLIP list of class numbers? pass --format vifi)")
        if f"_{cls}_" not in name:
            raise InputError(f"{src.path}: line {n}: {name} is not a clip of class {cls} (its name lacks _{cls}_); "
                             "an HMDB51 split file lists one class's clips")
        if mark == "0":
            unused += 1
            continue
        out.add(NAME, ctx.resolve(f"{cls}/{name}", src.path.parent), MARKS[mark], class_id=cls)
    if unused:
        reason = "HMDB51 clips marked 0 (neither train nor test in this fold) left out"
        out.skipped[reason] = out.skipped.get(reason, 0) + unused

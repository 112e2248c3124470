"""UCF101's official lists (``UCF101TrainTestSplits-RecognitionTask.zip`` -> ``ucfTrainTestlist/``).

``classInd.txt`` (``<id 1..101> <Class>``, CRLF) beside ``trainlistNN.txt`` (``<Class>/<file>.avi
<classInd id>``) and ``testlistNN.txt`` (``<Class>/<file>.avi``: the class is the folder). Videos are
``<--video-root>/<Class>/<file>.avi`` (``UCF-101/`` as unrared). The folder ``ucfTrainTestlist/``
itself reads fold ``--fold N`` (default 1). The class is always the folder, never the file stem
(folder ``HandstandPushups``, files ``v_HandStandPushups_*``); text gets it as words
("apply eye makeup"), the store keeps ``ApplyEyeMakeup`` beside it.

Refused (near misses): a list without ``classInd.txt`` beside it; a trainlist whose numbers are
not the classInd ids of its folders (``classInd - 1``: ViFi-CLIP's numbering); a testlist line with
a second field; a class that classInd does not name.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError, InputNotFound
from .base import NO, SPECIFIC, ClassSet, Context, InputSet, Source

NAME = "ucf101"
DESCRIPTION = "UCF101 ucfTrainTestlist/: classInd.txt + trainlistNN.txt / testlistNN.txt (or the folder, --fold N)"

LINE = re.compile(r"^([A-Za-z]+)/(v_[A-Za-z]+_g\d\d_c\d\d\.avi)(?:\s+(\S+))?$")
CLASSIND = re.compile(r"^(\d+)\s+([A-Za-z]+)$")
LIST_NAME = re.compile(r"^(train|test)list0?(\d+)\.txt$", re.IGNORECASE)


def sniff(src: Source) -> int:
    if src.is_dir:
        names = {p.name for p in src.children}
        return SPECIFIC if "classInd.txt" in names and any(LIST_NAME.match(n) for n in names) else NO
    lines = src.lines
    if lines and all(LINE.match(ln) for ln in lines):
        return SPECIFIC
    if src.name.lower() == "classind.txt" and lines and all(CLASSIND.match(ln) for ln in lines):
        return SPECIFIC  # the class list itself: read() says what to pass instead
    return NO


def class_index(path: Path) -> list[str]:
    """classInd.txt -> class names in id order (ids 1..C, each once)."""
    lines = Source(path).lines
    rows = [CLASSIND.match(ln) for ln in lines]
    if not lines or not all(rows):
        bad = next((ln for ln, m in zip(lines, rows) if not m), "(empty)")
        raise InputError(f"{path}: not a UCF101 classInd.txt (expected '<id> <ClassName>' lines, got {bad!r})")
    ids = [int(m[1]) for m in rows]
    if ids != list(range(1, len(ids) + 1)):
        raise InputError(f"{path}: classInd ids must be 1..{len(ids)} in order")
    return [m[2] for m in rows]


def read(src: Source, ctx: Context, out: InputSet) -> None:
    if src.is_dir:
        fold = ctx.fold or 1
        lists = [src.path / f"{kind}list{fold:02d}.txt" for kind in ("train", "test")]
        absent = [p.name for p in lists if not p.is_file()]
        if absent:
            raise InputNotFound(f"{src.path}: no {' or '.join(absent)} for fold {fold} (--fold N picks one of the "
                                "folds whose lists are there)")
        for p in lists:
            read(Source(p), ctx, out)
        return
    if src.name.lower() == "classind.txt":
        raise InputError(f"{src.path} is UCF101's class list; pass the lists beside it (trainlist01.txt "
                         "testlist01.txt) or their folder")
    cls_file = src.path.parent / "classInd.txt"
    if not cls_file.is_file():
        raise InputError(f"{src.path}: a UCF101 list needs the classInd.txt it ships with beside it (not found in "
                         f"{src.path.parent}); it is not read as another format without --format")
    classes = class_index(cls_file)
    ids = {c: i + 1 for i, c in enumerate(classes)}
    rows = [LINE.match(ln) for ln in src.lines]

    def at(i: int) -> int:  # the file's line number of rows[i]
        return src.numbered_lines[i][0] if i < len(src.numbered_lines) else 1

    if not rows or not all(rows):
        n = next((i for i, m in enumerate(rows) if m is None), 0)
        raise InputError(f"{src.path}: line {at(n)} is not a UCF101 list line ('<Class>/v_<Class>_gNN_cNN.avi[ <id>]')")
    numbered = [m for m in rows if m and m[3] is not None]
    name = LIST_NAME.match(src.name)
    kind = name[1].lower() if name else ("train" if numbered else "test")
    fold = f"fold {int(name[2])}" if name else "one fold"
    if name and ctx.fold is not None and int(name[2]) != ctx.fold:
        raise InputError(f"{src.path} is fold {int(name[2])}, but --fold {ctx.fold} was given: pass that fold's "
                         "lists (or their folder with --fold), or leave --fold out")
    if kind == "test" and numbered:
        raise InputError(f"{src.path}: a UCF101 testlist has no class numbers, but line {at(rows.index(numbered[0]))} "
                         f"has {numbered[0][3]!r} (an edited copy? the official testlist is '<Class>/<file>.avi')")
    if kind == "train":
        if len(numbered) != len(rows):
            n = next(i for i, m in enumerate(rows) if m[3] is None)
            raise InputError(f"{src.path}: line {at(n)} has no classInd id; a UCF101 trainlist gives one on every line")
        _check_ids(src, rows, ids)
    out.same_fold(NAME, fold, src.name)
    for n, m in zip((n for n, _ in src.numbered_lines), rows):
        cls = m[1]
        if cls not in ids:
            raise InputError(f"{src.path}: line {n}: class {cls!r} is not in {cls_file.name}")
        out.add(NAME, ctx.resolve(f"{cls}/{m[2]}", src.path.parent), kind, class_id=cls)
    out.classes[NAME] = ClassSet(order=classes)


def _check_ids(src: Source, rows, ids: dict[str, int]) -> None:
    """Each line's number must be its folder's 1-based classInd id (ViFi-CLIP's 0-based refused)."""
    given = [(m[1], m[3]) for m in rows]
    if not all(re.fullmatch(r"\d+", v) for _, v in given):
        bad = next(v for _, v in given if not re.fullmatch(r"\d+", v))
        raise InputError(f"{src.path}: {bad!r} is not a classInd id")
    if all(c in ids and int(v) == ids[c] - 1 for c, v in given):
        raise InputError(f"{src.path}: every number is its class's classInd id - 1 (0-based, as ViFi-CLIP numbers "
                         "them), not the official 1-based id; pass --format vifi to read it as a ViFi-CLIP list")
    for (n, _), (c, v) in zip(src.numbered_lines, given):
        if c in ids and int(v) != ids[c]:
            raise InputError(f"{src.path}: line {n}: {c} is classInd id {ids[c]}, the line says {v}; the list "
                             "does not follow the classInd.txt beside it")

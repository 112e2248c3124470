"""Input layouts, one reader module each, found by name through one plain dict: name -> module.

Each module exports ``NAME``, ``DESCRIPTION``, ``sniff(src: Source) -> int`` (:data:`~.base.NO`,
:data:`~.base.GENERIC` or :data:`~.base.SPECIFIC`) and ``read(src, ctx, out: InputSet)``. An INPUT
is read by the one reader that claims it most specifically; two claiming it alike is an error that
names ``--format``, and a file no reader claims is refused (never read as something else). A
reader's ``read`` refuses the near misses of its layout in one line. A new layout is one module
here and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from .base import GENERIC, NO, SPECIFIC, Context, InputSet, Source

FORMATS: dict[str, str] = {
    # the public data sets' own files, as downloaded
    "ucf101": "cachekit.datasets.ucf101",  # ucfTrainTestlist/{classInd,trainlistNN,testlistNN}.txt
    "hmdb51": "cachekit.datasets.hmdb51",  # testTrainMulti_7030_splits/<class>_test_splitN.txt
    "ssv2": "cachekit.datasets.ssv2",  # something-something-v2-{train,validation,test}.json
    "kinetics": "cachekit.datasets.kinetics",  # kinetics-400/600/700 CSVs
    # few-shot and fine-tuning split lists of the papers' code
    "clip_fsar": "cachekit.datasets.clip_fsar",  # train3//path, train3/id (CLIP-FSAR, OTAM)
    "trx": "cachekit.datasets.trx",  # <class>/<video stem> (CMN, TRX, ARN)
    "vifi": "cachekit.datasets.vifi",  # <path> <label> (ViFi-CLIP, EZ-CLIP video lists)
    # plain inputs
    "csv": "cachekit.datasets.csv_list",  # path,label
    "list": "cachekit.datasets.paths",  # one video path per line
    "folder": "cachekit.datasets.folder",  # class folders of videos, or a folder of videos
    "frames": "cachekit.datasets.frame_folders",  # frame folders (one video each), in class folders
}


def reader(name: str) -> ModuleType:
    if name not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {name!r}")
    return importlib.import_module(FORMATS[name])


def detect(src: Source) -> ModuleType:
    """The reader that claims ``src`` most specifically (one-line errors: none, or a tie)."""
    scores: dict[str, int] = {}
    for name in FORMATS:
        score = reader(name).sniff(src)
        if score > NO:
            scores[name] = score
    if not scores:
        what = "folder" if src.is_dir else "file"
        raise InputError(f"{src.path}: a {what} of no layout clipcache knows; if it is one of "
                         f"{', '.join(FORMATS)}, pass --format NAME")
    best = max(scores.values())
    top = [n for n, s in scores.items() if s == best]
    if len(top) > 1:
        raise InputError(f"{src.path} reads as {' or as '.join(top)}; pass --format {top[0]} (or --format "
                         f"{top[1]}) to say which")
    return reader(top[0])


def read_source(path: Path, ctx: Context, out: InputSet, fmt: str | None = None) -> str:
    """Read one INPUT file or folder into ``out`` with ``fmt``'s reader (None: detected); returns
    the format's name."""
    src = Source(path)
    mod = reader(fmt) if fmt else detect(src)
    mod.read(src, ctx, out)
    return mod.NAME


__all__ = ["FORMATS", "GENERIC", "NO", "SPECIFIC", "Context", "InputSet", "Source", "detect", "read_source", "reader"]

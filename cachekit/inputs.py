"""Turn what a user points ``extract`` at into a list of labelled videos.

INPUT may be: video files or globs; any file or folder a reader of :mod:`cachekit.datasets` claims
(the public data sets' own annotation files as downloaded: UCF101, HMDB51, Something-Something v2,
Kinetics; few-shot split lists of CLIP-FSAR, OTAM, CMN, TRX, ViFi-CLIP; a CSV ``path,label``; a list
of paths; class folders of videos; frame folders), recognised by content (``fmt`` overrides), with
listed paths resolved against ``--video-root``. Split files give each video a split name and a
class; the class's display name (:func:`cachekit.datasets.base.name_classes`) goes to text, the
data set's own class id beside it into the store.
"""

from __future__ import annotations

import glob
import os
from dataclasses import replace
from pathlib import Path

from .datasets import read_source
from .datasets.base import ClassNames, Context, InputSet, VideoItem, load_class_names, name_classes, read_class_names
from .errors import InputError, InputNotFound
from .video import is_video_name

__all__ = ["InputSet", "VideoItem", "collect_inputs", "read_class_names"]


def collect_inputs(inputs: list[str], video_root: str | None = None, class_names: str | None = None,
                   fmt: str | None = None, fold: int | None = None, require_videos: bool = True) -> InputSet:
    """Parse every INPUT argument; duplicates (same path and split) are kept once, first label wins.

    ``fmt``: read every file / folder INPUT with this reader (a name in
    :data:`cachekit.datasets.FORMATS`) instead of the one its content names. ``fold``: which fold a
    data set's split folder gives (UCF101, HMDB51; default 1). ``require_videos=False``: return
    what the lists name even when none of it is on disk (evaluation maps such lists onto a store).
    """
    if not inputs:
        raise InputError("no INPUT given: pass video files, globs, a list/CSV/split file or a folder")
    root = Path(video_root) if video_root else None
    if root is not None and not root.is_dir():
        raise InputNotFound(f"--video-root {video_root} is not a directory")
    if fold is not None and fold < 1:
        raise InputError(f"--fold must be >= 1, got {fold}")
    names: ClassNames | None = load_class_names(class_names) if class_names else None
    ctx = Context(video_root=root, class_names=names, fold=fold)
    out = InputSet()
    for arg in inputs:
        p = Path(arg)
        if p.is_file() and is_video_name(p):
            out.items.append(VideoItem(str(p)))
        elif p.is_dir() and is_video_name(p):  # a folder named like a video: reported as such when decoded
            out.items.append(VideoItem(str(p)))
        elif p.exists():
            read_source(p, ctx, out, fmt)
        elif any(c in arg for c in "*?["):
            hits = sorted(glob.glob(arg, recursive=True))
            if not hits:
                raise InputNotFound(f"no file matches {arg}")
            for h in hits:
                if is_video_name(h):
                    out.items.append(VideoItem(h))
                else:
                    read_source(Path(h), ctx, out, fmt)
        else:
            raise InputNotFound(f"input {arg} not found")
    _name_classes(out, names)
    seen: dict[tuple[str, str | None], VideoItem] = {}
    for it in out.items:
        seen.setdefault((os.path.abspath(it.path), it.split), it)
    dropped = len(out.items) - len(seen)
    out.items = list(seen.values())
    out.item_format = {}
    if dropped:
        out.notes.append(f"{dropped} duplicate input lines ignored")
    for reason, n in out.skipped.items():
        out.notes.append(f"{n} {reason}")
    for split, miss in out.missing.items():
        out.notes.append(f"split {split!r}: {len(miss)} listed videos not found (e.g. {miss[0]})")
    if not out.items and require_videos:
        hint = "; pass --video-root, the folder the lists' paths are relative to" if out.missing and root is None else ""
        raise InputError("the inputs name no existing video" + (f" ({out.notes[-1]})" if out.notes else "") + hint)
    return out


def _name_classes(out: InputSet, names: ClassNames | None) -> None:
    """Display names for the items that carry only their data set's class id (per format)."""
    ids: dict[str, set[str]] = {}
    for i, it in enumerate(out.items):
        if it.label is None and it.class_id is not None:
            ids.setdefault(out.item_format.get(i, "?"), set()).add(it.class_id)
    if not ids:
        return
    from .datasets import FORMATS, reader

    def override(fmt: str) -> ClassNames | None:  # a format whose own label file --class-names is: read there
        own = fmt in FORMATS and getattr(reader(fmt), "OWN_CLASS_NAMES", False)
        return None if own or (names is not None and names.per_split is not None) else names

    named = {fmt: name_classes(fmt, found, out.classes.get(fmt), override(fmt)) for fmt, found in ids.items()}
    for i, it in enumerate(out.items):
        if it.label is None and it.class_id is not None:
            out.items[i] = replace(it, label=named[out.item_format.get(i, "?")][it.class_id])

"""Turn what a user points ``extract`` at into a list of labelled videos.

INPUT may be: video files or globs; a text file of paths; a CSV ``path,label``; a folder with one
sub-folder per class; a split file in the CLIP-FSAR format (``train3//rel/path.mp4`` or
``train3/videoid``) or the ViFi-CLIP format (``rel/path.mp4 12``), resolved against
``--video-root``. Split files give each video a split name and a class label.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, InputNotFound
from .video import is_video_name


@dataclass(frozen=True)
class VideoItem:
    """One video to extract: where it is, its class name (or None) and the split it belongs to."""

    path: str
    label: str | None = None
    split: str | None = None


@dataclass
class InputSet:
    """Everything parsed from the INPUT arguments."""

    items: list[VideoItem] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> listed paths not found
    notes: list[str] = field(default_factory=list)

    @property
    def splits(self) -> dict[str, list[VideoItem]]:
        out: dict[str, list[VideoItem]] = {}
        for it in self.items:
            if it.split:
                out.setdefault(it.split, []).append(it)
        return out


_CLIPFSAR = re.compile(r"^(train|val|test)(\d+)(//?)(.+)$")
_VIFI = re.compile(r"^(\S.*?)\s+(-?\d+)$")


def _read_text(path: Path) -> list[str]:
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    # Bytes that are not UTF-8 (file names in another encoding) survive as the surrogates
    # os.fsencode turns back into the same bytes, so such paths still open.
    text = raw.decode("utf-8", errors="surrogateescape")
    return [ln.strip() for ln in text.splitlines()]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a ``id,name`` CSV (ViFi-CLIP labels.csv) or one name per line."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFound(f"class-name file {path} not found")
    lines = [ln for ln in _read_text(p) if ln]
    if lines and lines[0].lower().replace(" ", "") in ("id,name", "id,label"):
        rows = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
        try:
            pairs = sorted((int(r[0]), r[1].strip()) for r in rows if r)
        except (ValueError, IndexError) as err:
            raise InputError(f"{path}: expected 'id,name' rows ({err})") from err
        if [i for i, _ in pairs] != list(range(len(pairs))):
            raise InputError(f"{path}: ids must be 0..{len(pairs) - 1} without gaps")
        names = [n for _, n in pairs]
    else:
        names = lines
    if any(not n for n in names):
        raise InputError(f"{path}: empty class name")
    return names


def _resolve(rel: str, root: Path | None, base: Path) -> str:
    p = Path(rel)
    if p.is_absolute():
        return str(p)
    return str((root if root is not None else base) / p)


def _class_from_path(rel: str) -> str | None:
    parent = Path(rel).parent.name
    return parent.replace("_", " ") if parent else None


def _split_name_of(path: Path) -> str:
    stem = path.stem.lower()
    for s in ("train", "val", "test"):
        if stem.startswith(s):
            return s
    if stem.startswith("validation"):
        return "val"
    return stem


def parse_split_file(path: Path, video_root: Path | None, class_names: list[str] | dict | None,
                     out: InputSet) -> bool:
    """Parse a CLIP-FSAR or ViFi-CLIP split file into ``out``; False when it is neither format."""
    lines = [ln for ln in _read_text(path) if ln and not ln.startswith("#")]
    if not lines:
        return False
    if all(_CLIPFSAR.match(ln) for ln in lines):
        names = class_names if isinstance(class_names, dict) else {}
        for ln in lines:
            split, idx, sep, rest = _CLIPFSAR.match(ln).groups()  # type: ignore[union-attr]
            rel = rest if sep == "//" else f"{rest}.mp4"
            label = None
            per_split = names.get(split) if names else None
            if per_split is not None:
                if int(idx) >= len(per_split):
                    raise InputError(f"{path}: class index {idx} but only {len(per_split)} {split} class names")
                label = per_split[int(idx)]
            elif isinstance(class_names, list):
                raise InputError(
                    f"{path}: CLIP-FSAR class indices are per split; give --class-names as a folder "
                    "with train/val/test class lists (e.g. train_classes.txt)"
                )
            else:
                label = _class_from_path(rel) if sep == "//" else None
                label = label or f"{split} class {idx}"
            _add(out, _resolve(rel, video_root, path.parent), label, split)
        return True
    if all(_VIFI.match(ln) for ln in lines):
        split = _split_name_of(path)
        for ln in lines:
            rel, lab = _VIFI.match(ln).groups()  # type: ignore[union-attr]
            i = int(lab)
            if isinstance(class_names, list):
                if not 0 <= i < len(class_names):
                    raise InputError(f"{path}: label {i} outside the {len(class_names)} class names")
                label = class_names[i]
            else:
                label = _class_from_path(rel) or f"class {i}"
            _add(out, _resolve(rel, video_root, path.parent), label, split)
        return True
    return False


def _add(out: InputSet, path: str, label: str | None, split: str | None) -> None:
    if split and not (os.path.exists(path)):
        out.missing.setdefault(split, []).append(path)
        return
    out.items.append(VideoItem(path, label, split))


def _parse_csv(path: Path, out: InputSet, video_root: Path | None) -> None:
    rows = list(csv.reader(io.StringIO("\n".join(_read_text(path)))))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    for n, row in enumerate(rows, 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 2 or not row[1].strip():
            raise InputError(f"{path}: line {n}: expected 'path,label', got {','.join(row)!r}")
        out.items.append(VideoItem(_resolve(row[0].strip(), video_root, path.parent), row[1].strip()))


def collect_inputs(inputs: list[str], video_root: str | None = None,
                   class_names: str | None = None) -> InputSet:
    """Parse every INPUT argument; duplicates (same path) are kept once, first label wins."""
    if not inputs:
        raise InputError("no INPUT given: pass video files, globs, a list/CSV/split file or a folder")
    root = Path(video_root) if video_root else None
    if root is not None and not root.is_dir():
        raise InputNotFound(f"--video-root {video_root} is not a directory")
    names: list[str] | dict | None = None
    if class_names:
        cn = Path(class_names)
        if cn.is_dir():
            names = {s: read_class_names(cn / f"{s}_classes.txt")
                     for s in ("train", "val", "test") if (cn / f"{s}_classes.txt").is_file()}
        else:
            names = read_class_names(cn)
    out = InputSet()
    for arg in inputs:
        p = Path(arg)
        if p.is_dir() and not is_video_name(p):
            _parse_folder(p, out)
        elif p.is_file() and is_video_name(p):
            out.items.append(VideoItem(str(p)))
        elif p.is_file() and p.suffix.lower() == ".csv":
            _parse_csv(p, out, root)
        elif p.is_file():
            if not parse_split_file(p, root, names, out):
                lines = [ln for ln in _read_text(p) if ln and not ln.startswith("#")]
                for ln in lines:
                    out.items.append(VideoItem(_resolve(ln, root, p.parent)))
        elif p.exists():  # e.g. a directory named like a video
            out.items.append(VideoItem(str(p)))
        elif any(c in arg for c in "*?["):
            hits = sorted(glob.glob(arg, recursive=True))
            if not hits:
                raise InputNotFound(f"no file matches {arg}")
            out.items.extend(VideoItem(h) for h in hits)
        else:
            raise InputNotFound(f"input {arg} not found")
    seen: dict[str, VideoItem] = {}
    for it in out.items:
        key = (os.path.abspath(it.path), it.split)
        if key not in seen:
            seen[key] = it
    dropped = len(out.items) - len(seen)
    out.items = list(seen.values())
    if dropped:
        out.notes.append(f"{dropped} duplicate input lines ignored")
    for split, miss in out.missing.items():
        out.notes.append(f"split {split!r}: {len(miss)} listed videos not found (e.g. {miss[0]})")
    if not out.items:
        raise InputError("the inputs name no existing video" + (f" ({out.notes[-1]})" if out.notes else ""))
    return out


def _parse_folder(root: Path, out: InputSet) -> None:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not is_video_name(d))
    found = 0
    for d in subdirs:
        for f in sorted(d.rglob("*")):
            if is_video_name(f):
                out.items.append(VideoItem(str(f), d.name.replace("_", " ")))
                found += 1
    if not subdirs:
        for f in sorted(root.iterdir()):
            if is_video_name(f):
                out.items.append(VideoItem(str(f)))
                found += 1
    if not found:
        raise InputError(f"folder {root} holds no videos (expected one sub-folder of videos per class)")

"""What every input reader shares: the parsed inputs (:class:`VideoItem`, :class:`InputSet`), the
source a reader sniffs (:class:`Source`), the reading context (:class:`Context`: video root, fold,
the ``--class-names`` override) and class names for text (:func:`words`, :func:`name_classes`).

A reader leaves a video's display name to :func:`name_classes` by giving it the data set's own
class id (``ApplyEyeMakeup``, ``brush_hair``, an SSv2 labels.json id) and no label; the id is kept
in the store beside the name.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import InputError, InputNotFound
from ..video import is_video_name

NO = 0  # sniff: not this layout
GENERIC = 1  # sniff: a plain layout (a list of paths, a CSV, class folders, a ViFi-CLIP list)
SPECIFIC = 2  # sniff: this data set's own layout, or a near miss of it that ``read`` refuses


@dataclass(frozen=True)
class VideoItem:
    """One video to extract: where it is, its class name (or None), its split, and the data
    set's own id of its class (kept in the store beside the name; None where there is none)."""

    path: str
    label: str | None = None
    split: str | None = None
    class_id: str | None = None


@dataclass
class ClassSet:
    """A data set's classes as one reader saw them: the official order (what ``--class-names``
    rows numbered 0.. index; None: sorted ids) and default names for ids that are not words."""

    order: list[str] | None = None
    names: dict[str, str] = field(default_factory=dict)
    # every class the reader read, with or without a video present: with no official order, rows
    # numbered 0.. index these sorted, so a class missing on disk does not shift the later names
    listed: set[str] = field(default_factory=set)


@dataclass
class InputSet:
    """Everything parsed from the INPUT arguments."""

    items: list[VideoItem] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> listed paths not found
    notes: list[str] = field(default_factory=list)
    classes: dict[str, ClassSet] = field(default_factory=dict)  # format -> its classes (naming pass)
    formats: dict[str, str] = field(default_factory=dict)  # format -> what was read ("fold 1", ...)
    item_format: dict[int, str] = field(default_factory=dict)  # index in items -> the format that read it
    skipped: dict[str, int] = field(default_factory=dict)  # why listed lines were left out -> how many

    @property
    def splits(self) -> dict[str, list[VideoItem]]:
        out: dict[str, list[VideoItem]] = {}
        for it in self.items:
            if it.split:
                out.setdefault(it.split, []).append(it)
        return out

    def add(self, fmt: str, path: str, split: str | None, label: str | None = None,
            class_id: str | None = None, listed: bool = True) -> None:
        """A video a reader found (or, when ``listed`` and the file is absent, a missing one)."""
        for what in (label, class_id):
            if what is not None and not _is_utf8(what):
                raise InputError(f"the class name {what!r} (of {path!r}) is not UTF-8 text: its list file or folder "
                                 "name is in another encoding (e.g. cp1252, as Excel saves CSVs); save it as UTF-8")
        if class_id is not None:
            self.saw_class(fmt, class_id)
        if listed and split and not os.path.exists(path):
            self.missing.setdefault(split, []).append(path)
            return
        self.item_format[len(self.items)] = fmt
        self.items.append(VideoItem(path, label, split, class_id))

    def saw_class(self, fmt: str, class_id: str) -> None:
        """A class ``fmt``'s files name, whether or not any of its videos is present."""
        self.classes.setdefault(fmt, ClassSet()).listed.add(class_id)

    def same_fold(self, fmt: str, fold: str, what: str) -> None:
        """Refuse lists of two folds of one data set in one command (their splits would merge)."""
        have = self.formats.get(fmt)
        if have is not None and have != fold:
            raise InputError(f"{what} is {fold} but another input is {have}: extract one fold per store "
                             "(the splits of two folds would merge)")
        self.formats[fmt] = fold


def _is_utf8(text: str) -> bool:
    """False for text holding bytes that were not UTF-8 (read with ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Source:
    """An INPUT path as a reader sees it: a file's text (lines without blanks) or a folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.is_dir = self.path.is_dir()

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def raw(self) -> bytes:
        return b"" if self.is_dir else self.path.read_bytes()

    @cached_property
    def text(self) -> str | None:
        """The file as text (None: a folder, or bytes with NUL: not a text file)."""
        if self.is_dir or b"\0" in self.raw[:65536]:
            return None
        # Bytes that are not UTF-8 (file names in another encoding) survive as the surrogates
        # os.fsencode turns back into the same bytes, so such paths still open.
        return self.raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")

    @cached_property
    def lines(self) -> list[str]:
        """Non-blank lines, stripped (CRLF and a missing final newline are data, not errors)."""
        return [ln for _, ln in self.numbered_lines]

    @cached_property
    def numbered_lines(self) -> list[tuple[int, str]]:
        """``(line number in the file, line)`` of :attr:`lines`: what an error message names."""
        if self.text is None:
            return []
        return [(n, ln.strip()) for n, ln in enumerate(self.text.splitlines(), 1) if ln.strip()]

    @cached_property
    def children(self) -> list[Path]:
        return sorted(self.path.iterdir()) if self.is_dir else []


@dataclass
class ClassNames:
    """``--class-names FILE``: names by the data set's class order (``by_index``), by its own class
    ids (``by_id``) or, for CLIP-FSAR split files, per split (``per_split``)."""

    path: str
    by_index: list[str] | None = None
    by_id: dict[str, str] | None = None
    per_split: dict[str, list[str]] | None = None


@dataclass
class Context:
    """What a reader needs beside its file: where the videos are, which fold, the name override."""

    video_root: Path | None = None
    class_names: ClassNames | None = None
    fold: int | None = None
    _clip_index: dict = field(default_factory=dict)

    def resolve(self, rel: str, base: Path) -> str:
        """A listed path: absolute as given, else under ``--video-root`` (else beside the list)."""
        p = Path(rel)
        if p.is_absolute():
            return str(p)
        return str((self.video_root if self.video_root is not None else base) / p)

    def root(self, base: Path) -> Path:
        return self.video_root if self.video_root is not None else base

    def files_by_stem(self, root: Path) -> dict[str, str]:
        """stem -> path of every video file and frame folder under ``root`` (walked once per root);
        a stem found twice keeps its first path in sorted order."""
        key = str(root)
        if key not in self._clip_index:
            from ..frames import is_frame_folder

            found: dict[str, str] = {}
            visited: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # linked folders too
                real = os.path.realpath(dirpath)
                if real in visited:  # a link back up the tree, or two links to one folder
                    dirnames.clear()
                    continue
                visited.add(real)
                dirnames.sort()
                for f in sorted(filenames):
                    if is_video_name(f):
                        found.setdefault(os.path.splitext(f)[0], os.path.join(dirpath, f))
                for d in list(dirnames):
                    full = os.path.join(dirpath, d)
                    if is_frame_folder(full):
                        found.setdefault(d, full)
                        dirnames.remove(d)  # its images are frames, not more videos
            self._clip_index[key] = found
        return self._clip_index[key]


# --------------------------------------------------------------------------- small parsers
def split_of(name: str) -> str | None:
    """The split a list file's name says: ``trainlist01.txt`` -> train, ``validation.json`` -> val."""
    stem = name.lower()
    for word, split in (("validation", "val"), ("validate", "val"), ("train", "train"), ("val", "val"),
                        ("test", "test")):
        if word in stem:
            return split
    return None


def parse_csv_rows(src: Source) -> list[list[str]]:
    """Rows of a CSV file (quotes honoured); an unbalanced quote is refused, never merged silently."""
    return [row for _, row in numbered_csv_rows(src)]


def numbered_csv_rows(src: Source) -> list[tuple[int, list[str]]]:
    """``(line number of its first line, row)`` of every non-blank row of a CSV file."""
    text = "\n".join(ln.strip() for ln in (src.text or "").splitlines())
    if text.count('"') % 2:
        raise InputError(f"{src.path}: unbalanced double quote; refusing to guess where a field ends")
    out, reader, start = [], csv.reader(io.StringIO(text)), 1
    for row in reader:
        if row:
            out.append((start, row))
        start = reader.line_num + 1
    return out


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a ``id,name`` CSV (ViFi-CLIP labels.csv) or one name per line."""
    names = load_class_names(path)
    if names.by_index is None:
        raise InputError(f"{path}: expected 'id,name' rows with ids 0..C-1, or one name per line")
    return names.by_index


def load_class_names(path: str | os.PathLike) -> ClassNames:
    """``--class-names``: a folder of ``{train,val,test}_classes.txt`` (CLIP-FSAR), an ``id,name`` CSV
    whose ids are 0..C-1 (the data set's class order) or the data set's own class ids, or one name
    per line (the class order)."""
    p = Path(path)
    if p.is_dir():
        per = {s: read_class_names(p / f"{s}_classes.txt")
               for s in ("train", "val", "test") if (p / f"{s}_classes.txt").is_file()}
        if not per:
            raise InputNotFound(f"--class-names {path}: no train_classes.txt, val_classes.txt or test_classes.txt")
        return ClassNames(str(p), per_split=per)
    if not p.is_file():
        raise InputNotFound(f"class-name file {path} not found")
    src = Source(p)
    lines = src.lines
    if lines and lines[0].lower().replace(" ", "") in ("id,name", "id,label", "class,name"):
        rows = [r for r in csv.reader(io.StringIO("\n".join(lines[1:]))) if r]
        if any(len(r) < 2 or not r[1].strip() for r in rows):
            bad = next(r for r in rows if len(r) < 2 or not r[1].strip())
            raise InputError(f"{path}: expected 'id,name' rows, got {','.join(bad)!r} (empty class name?)")
        if all(re.fullmatch(r"\d+", r[0].strip()) for r in rows):
            pairs = sorted((int(r[0]), r[1].strip()) for r in rows)
            if [i for i, _ in pairs] != list(range(len(pairs))):
                raise InputError(f"{path}: ids must be 0..{len(pairs) - 1} without gaps")
            return ClassNames(str(p), by_index=[n for _, n in pairs])
        by_id: dict[str, str] = {}
        for r in rows:
            if by_id.setdefault(r[0].strip(), r[1].strip()) != r[1].strip():
                raise InputError(f"{path}: class {r[0].strip()!r} is named twice")
        return ClassNames(str(p), by_id=by_id)
    if any(not n for n in lines):
        raise InputError(f"{path}: empty class name")
    return ClassNames(str(p), by_index=list(lines))


# --------------------------------------------------------------------------- class names
_CAMEL = re.compile(r"[A-Z]+\d*(?=[A-Z][a-z])|[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")


def words(class_id: str) -> str:
    """A class id as words for the text encoder, as ViFi-CLIP's label files write them:
    ``ApplyEyeMakeup`` -> ``apply eye makeup``, ``brush_hair`` -> ``brush hair``,
    ``hurling_(sport)`` -> ``hurling (sport)``; a name with spaces already is kept as it is."""
    if " " in class_id.strip():
        return class_id.strip()
    if "_" in class_id:
        return " ".join(class_id.replace("_", " ").split())
    parts = _CAMEL.findall(class_id)
    if parts and "".join(parts) == class_id:
        return " ".join(p if (p.isupper() and len(p) > 1) else p.lower() for p in parts)
    return class_id


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def name_classes(fmt: str, ids: set[str], cset: ClassSet | None, names: ClassNames | None) -> dict[str, str]:
    """own class id -> display name, for the ids one format read. ``--class-names`` overrides the
    default (:func:`words`, or the reader's own names): rows numbered 0.. follow the data set's
    order; a name that spells another class of the set is refused (HMDB's kick / kick ball trap)."""
    cset = cset or ClassSet()
    order = cset.order if cset.order is not None else sorted(ids | cset.listed)
    out = {i: cset.names.get(i) or words(i) for i in ids}
    if names is not None and names.by_id is not None:
        unknown = sorted(ids - set(names.by_id))
        if unknown:
            raise InputError(f"--class-names {names.path} names no class {unknown[0]!r} ({len(unknown)} of the "
                             f"{len(ids)} {fmt} classes are not in it)")
        out = {i: names.by_id[i] for i in ids}
    elif names is not None and names.by_index is not None:
        if len(names.by_index) < len(order):
            raise InputError(f"--class-names {names.path} has {len(names.by_index)} names; the {fmt} classes "
                             f"number {len(order)}")
        pos = {c: k for k, c in enumerate(order)}
        own = {_norm(c): c for c in order}
        for i in ids:
            if i not in pos:
                raise InputError(f"class {i!r} is not in the {fmt} class list that --class-names {names.path} numbers")
            name = names.by_index[pos[i]]
            other = own.get(_norm(name))
            if other is not None and other != i:
                raise InputError(f"--class-names {names.path}: row {pos[i]} names {name!r}, which is the class "
                                 f"{other!r}, but row {pos[i]} of the {fmt} class order is {i!r}; the file numbers "
                                 "the classes in another order (give 'id,name' rows with the data set's own ids)")
            out[i] = name
    seen: dict[str, str] = {}
    for i in sorted(out):
        first = seen.setdefault(out[i], i)
        if first != i:
            raise InputError(f"{fmt} classes {first!r} and {i!r} would both be named {out[i]!r}; "
                             "give distinct names with --class-names")
    return out

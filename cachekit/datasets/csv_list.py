"""A CSV of ``path,label`` rows (a ``path,label`` header is optional); paths relative to
``--video-root``, else to the CSV's folder."""

from __future__ import annotations

from ..errors import InputError
from .base import GENERIC, NO, Context, InputSet, Source, numbered_csv_rows

NAME = "csv"
DESCRIPTION = "CSV of path,label rows"


def sniff(src: Source) -> int:
    return GENERIC if not src.is_dir and src.name.lower().endswith(".csv") else NO


def read(src: Source, ctx: Context, out: InputSet) -> None:
    rows = numbered_csv_rows(src)
    if rows and [c.strip().lower() for c in rows[0][1][:2]] == ["path", "label"]:
        rows = rows[1:]
    for n, row in rows:
        if not row or not row[0].strip():
            continue
        if len(row) != 2 or not row[1].strip():
            raise InputError(f"{src.path}: line {n}: expected 'path,label', got {','.join(row)!r}")
        out.add(NAME, ctx.resolve(row[0].strip(), src.path.parent), None, label=row[1].strip(), listed=False)

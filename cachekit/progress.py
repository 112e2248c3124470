"""Progress bars for the long steps: tqdm on stderr, with ETA and rate, where a person watches.

Commands show bars unless ``--no-progress`` is given or stderr is not a terminal
(:func:`wanted`): a log file or a pipe gets no carriage-return noise. Library functions take a
``progress`` flag where they have one (extract, train, synth, index); code several calls deep
(evaluation's episode loop) reads :func:`scope`'s setting through :func:`bar` instead of growing a
parameter on every function in between. Outside a command, bars are off unless asked for.
"""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("clipcache_progress", default=False)


def wanted(no_progress: bool = False, stream=None) -> bool:
    """Bars on: not ``--no-progress`` and stderr (or ``stream``) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return not no_progress and tty


@contextmanager
def scope(on: bool) -> Iterator[None]:
    """Within the block, :func:`bar` draws (``on``) or stays silent."""
    token = _ON.set(bool(on))
    try:
        yield
    finally:
        _ON.reset(token)


def enabled() -> bool:
    return _ON.get()


def bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
        on: bool | None = None):
    """A tqdm bar (ETA and rate: tqdm's default format with a total) on stderr; silent unless
    ``on`` is True, or ``on`` is None and the current :func:`scope` is on."""
    from tqdm import tqdm

    show = enabled() if on is None else on
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, dynamic_ncols=True, file=sys.stderr)


__all__ = ["bar", "enabled", "scope", "wanted"]

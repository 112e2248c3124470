"""``--json`` mode: stdout carries the result and nothing else.

A library a command calls may print on stdout (``torch.onnx`` announces "[torch.onnx] Obtain model
graph ..."; a C extension may write to file descriptor 1). Any such line ahead of the JSON breaks
every consumer (``clipcache index --json | jq``). :func:`json_stdout` guards a command at two depths:

- file descriptor 1 is pointed at stderr for the command's duration (where stdout is a real file
  descriptor), so writes from C code land on stderr;
- ``sys.stdout`` becomes a :class:`JsonLines` stream over the original stdout that passes each
  complete line through only if it is a JSON object or array and sends every other line to stderr.

The commands keep printing their result with ``click.echo``; a line that is not JSON is by
definition not the result in ``--json`` mode, so nothing the command meant to print is lost: it
is on stderr, where notes belong.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO


def _is_json(line: str) -> bool:
    """A JSON object or array (what the commands print); a bare number or word a library prints is not."""
    if not line.startswith(("{", "[")):
        return False
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


class JsonLines(io.TextIOBase):
    """A text stream that forwards complete JSON lines to ``out`` and anything else to ``err``."""

    def __init__(self, out: TextIO, err: TextIO):
        super().__init__()
        self._out, self._err = out, err
        self._pending = ""

    @property
    def encoding(self) -> str:  # click picks its writer by the stream's encoding
        return getattr(self._out, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._out, "errors", None) or "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        self._pending += s
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._route(line + "\n")
        return len(s)

    def _route(self, text: str) -> None:
        line = text.strip()
        if not line:
            return
        (self._out if _is_json(line) else self._err).write(text)

    def flush(self) -> None:
        self._out.flush()
        self._err.flush()

    def close_pending(self) -> None:
        """Route a last line that did not end in a newline."""
        if self._pending:
            text, self._pending = self._pending, ""
            self._route(text if text.endswith("\n") else text + "\n")
        self.flush()


def _real_fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextmanager
def json_stdout() -> Iterator[None]:
    """For a ``--json`` command: only JSON lines reach stdout (see the module docstring)."""
    original = out = sys.stdout
    err = sys.stderr
    saved_fd = None
    if _real_fd(out) == 1 and _real_fd(err) is not None:
        out.flush()
        saved_fd = os.dup(1)
        os.dup2(_real_fd(err), 1)  # C code's writes to fd 1 go to stderr
        out = io.TextIOWrapper(os.fdopen(os.dup(saved_fd), "wb", buffering=0), encoding="utf-8",
                               line_buffering=True, write_through=True)
    guard = JsonLines(out, err)
    sys.stdout = guard
    try:
        yield
    finally:
        try:
            guard.close_pending()
        finally:
            sys.stdout = original
            if saved_fd is not None:
                out.close()
                os.dup2(saved_fd, 1)
                os.close(saved_fd)


def wants_json(args: list[str]) -> bool:
    """Whether a command line asks for ``--json`` (before any ``--`` that ends the options)."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False

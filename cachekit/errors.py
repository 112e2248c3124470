"""One error family for everything a user can get wrong.

The CLI catches :class:`ClipcacheError`, prints its message on one line and exits with code 2.
Subclasses mix in the standard exception type they refine, so library users can catch either.
"""

from __future__ import annotations

from clipcache.stores import StoreError


class ClipcacheError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""

    exit_code = 2


class InputError(ClipcacheError, ValueError):
    """Bad command-line value, input list, split file or label file."""


class InputNotFound(ClipcacheError, FileNotFoundError):
    """A named input (video, list, split file, folder) does not exist."""


class ModelError(ClipcacheError, ValueError):
    """Unknown model name or unusable model config."""


class WeightsNotFound(ClipcacheError, FileNotFoundError):
    """Pretrained weights are not available offline (or cannot be read)."""


class DecodeError(ClipcacheError, RuntimeError):
    """A video cannot be decoded; recorded per video during extraction, never fatal there."""


class CacheKeyMismatch(ClipcacheError, ValueError):
    """A store, run or index was made with a different model / sampling / layout."""


class RunError(ClipcacheError, ValueError):
    """A run directory is missing, incomplete or altered."""


__all__ = [
    "ClipcacheError",
    "InputError",
    "InputNotFound",
    "ModelError",
    "WeightsNotFound",
    "DecodeError",
    "CacheKeyMismatch",
    "RunError",
    "StoreError",
]

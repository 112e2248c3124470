"""CPU-side process settings (light: no torch): how many cores this process may use, for sizing
worker pools, and glibc's malloc told to keep freed memory for reuse (:func:`keep_freed_memory`)."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# glibc's <malloc.h>: mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_BELOW = 32 << 20  # blocks under this come from malloc's heaps, not a fresh mmap each (glibc's maximum)
TRIM_ABOVE = 64 << 20  # free memory at a heap's top beyond this goes back to the system
OPT_OUT = "CLIPCACHE_MALLOC"  # =system: leave malloc as the system has it
_USER_SET = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_lock = threading.Lock()
_done: str | None = None


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def keep_freed_memory() -> str:
    """Have glibc's malloc keep freed blocks for reuse instead of giving them back to the system
    and taking fresh, zeroed pages again: blocks under 32 MB come from its heaps (a video's frames,
    an encoder batch's activations), and only free memory beyond 64 MB at a heap's top is returned.
    By default glibc maps such blocks afresh or trims them away: ~3,000 page faults a video in a
    decode worker, ~16% of its time (``benchmarks/malloc.py``), and ~12% of an EZ-CLIP step's.

    Called by ``extract`` and ``train`` (and the Ray engine's actors); once per process. Left
    alone where the user set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``, where
    ``CLIPCACHE_MALLOC=system``, and off glibc. Returns what it did, in a line (also logged)."""
    global _done
    with _lock:
        if _done is None:
            _done = _tune_malloc()
            log.debug("malloc: %s", _done)
        return _done


def _tune_malloc() -> str:
    if os.environ.get(OPT_OUT, "").strip().lower() == "system":
        return f"left as the system's ({OPT_OUT}=system)"
    user = [v for v in _USER_SET if os.environ.get(v)]
    if user:
        return f"left as set by {', '.join(user)}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        libc = ""
    if not libc.startswith("glibc"):
        return "left as the system's (not glibc)"
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW) and mallopt(_M_TRIM_THRESHOLD, TRIM_ABOVE)):
        return f"left as the system's ({libc} refused the thresholds)"
    return f"keeping freed blocks under {KEEP_BELOW >> 20} MB for reuse, trimming beyond {TRIM_ABOVE >> 20} MB ({libc})"

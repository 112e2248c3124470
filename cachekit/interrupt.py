"""Ctrl-C during a long loop: finish the step in hand, save, stop with a resumable state.

A ``KeyboardInterrupt`` raised wherever Python happens to be (between ``backward`` and the
optimiser step, halfway through writing a checkpoint) can leave a state that no checkpoint
describes. :class:`DeferredSigint` turns the first SIGINT into a request that the loop reads
between steps (:meth:`DeferredSigint.requested`), so it can checkpoint cleanly and raise
:class:`Interrupted`; a second Ctrl-C interrupts at once, as usual. Under torchrun every rank
gets the signal; :meth:`requested` with a :class:`~cachekit.distributed.Dist` makes the ranks agree
(any rank asked) so that all stop after the same step and no collective waits forever.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, handled: the state on disk is resumable; the message says what was saved."""


class DeferredSigint:
    """Installed on creation (main thread only; elsewhere it never reports a request)."""

    def __init__(self):
        self._asked = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
        if self._asked:  # the second Ctrl-C: stop now
            self.restore()
            raise KeyboardInterrupt
        self._asked = True

    def requested(self, dist=None) -> bool:
        """Whether Ctrl-C was pressed (on any rank, when ``dist`` spans several)."""
        if dist is not None and dist.world > 1:
            return any(dist.all_gather(self._asked))
        return self._asked

    def restore(self) -> None:
        """Put the previous SIGINT handler back (idempotent)."""
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


__all__ = ["DeferredSigint", "Interrupted"]

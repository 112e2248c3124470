"""Training curves as TensorBoard event files in the run directory.

``clipcache train`` writes, every ``log_every`` optimiser steps, the mean training loss over those
steps (``train/loss``), the learning rate (``train/lr``) and the throughput (``train/episodes_per_s``
or ``train/videos_per_s``: items per second of training time since the last point, validations
left out); and at every
validation the accuracy and its 95% interval (``val/accuracy``, ``val/ci95``). The files
(``events.out.tfevents.*``) lie in the run directory itself, so ``tensorboard --logdir runs/``
shows every run of that folder by its name; a resumed run appends a new file whose steps
continue the old ones.

Only rank 0 of a torchrun job writes. Nothing here changes training: the writer only reads the
numbers the loop already has.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOG_EVERY = 10


class _Opening(threading.Thread):
    """Imports TensorBoard's writer and opens it in the background: the import costs a fresh
    process a few tenths of a second, which need not delay the first step."""

    def __init__(self, run_dir: str):
        super().__init__(name="clipcache-tensorboard", daemon=True)
        self.run_dir = run_dir
        self.writer = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.run_dir, flush_secs=30)
        except BaseException as err:  # re-raised in the training thread by result()
            self.error = err

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.writer


class TrainCurves:
    """TensorBoard scalars of one training run; every method is a no-op when ``enabled`` is False.

    ``per_step``: items (episodes or videos, named by ``unit``) one optimiser step consumes,
    for the throughput. The writer opens in a background thread; scalars wait in a queue (with
    their wall time) until it is open, and :meth:`close` waits for it.
    """

    def __init__(self, run_dir: str | os.PathLike, log_every: int = DEFAULT_LOG_EVERY, per_step: int = 1,
                 unit: str = "episodes", enabled: bool = True):
        if log_every < 1:
            from .errors import InputError

            raise InputError(f"--log-every must be >= 1, got {log_every}")
        self.log_every, self.per_step, self.unit = log_every, per_step, unit
        self._writer = None
        self._opening = _Opening(str(Path(run_dir))) if enabled else None
        self._queue: list[tuple[str, float, int, float]] = []  # (tag, value, step, wall time)
        self._losses: list[float] = []
        self._last = time.perf_counter()  # end of the previous step (or validation)
        self._busy = 0.0  # training seconds since the last point (validations left out)
        self._steps_since = 0
        self._pending: tuple[int, float] | None = None  # (step, lr) of the last step not yet written

    @property
    def enabled(self) -> bool:
        return self._writer is not None or self._opening is not None

    def _add(self, tag: str, value: float, step: int) -> None:
        self._queue.append((tag, value, step, time.time()))

    def _drain(self, wait: bool = False) -> bool:
        """Write the queued scalars once the writer is open (``wait``: wait for it); True if written."""
        if self._writer is None:
            if self._opening is None or (not wait and self._opening.is_alive()):
                return False
            opening, self._opening = self._opening, None
            self._writer = opening.result()
        for tag, value, step, wall in self._queue:
            self._writer.add_scalar(tag, value, step, walltime=wall)
        self._queue.clear()
        return True

    def step(self, step: int, loss: float, lr: float) -> None:
        """After optimiser step ``step`` (1-based count of steps done) with its loss and learning rate."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self._busy += now - self._last
        self._last = now
        self._losses.append(loss)
        self._steps_since += 1
        self._pending = (step, lr)
        if step % self.log_every == 0:
            self._point()

    def _point(self) -> None:
        """One point of the training curves: the steps since the previous one."""
        step, lr = self._pending
        finite = [x for x in self._losses if math.isfinite(x)]
        if finite:
            self._add("train/loss", sum(finite) / len(finite), step)
        self._add("train/lr", lr, step)
        if self._busy > 0:
            self._add(f"train/{self.unit}_per_s", self._steps_since * self.per_step / self._busy, step)
        self._losses.clear()
        self._steps_since, self._busy, self._pending = 0, 0.0, None
        self._drain()

    def validation(self, step: int, accuracy: float, ci95: float | None = None) -> None:
        if not self.enabled:
            return
        self._add("val/accuracy", accuracy, step)
        if ci95 is not None:
            self._add("val/ci95", ci95, step)
        if self._drain():
            self._writer.flush()
        self._last = time.perf_counter()  # validation time is not training throughput

    def close(self) -> None:
        """The last, partial interval's point (the run ended or stopped between points), then the file."""
        if self.enabled:
            if self._pending is not None:
                self._point()
            self._drain(wait=True)
            self._writer.close()
            self._writer = None


def read_scalars(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files: ``{tag: [(step, value), ...]}`` (TensorBoard's reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags().get("scalars", []):
        out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


__all__ = ["DEFAULT_LOG_EVERY", "TrainCurves", "read_scalars"]

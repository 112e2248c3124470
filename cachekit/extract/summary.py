"""What an extraction did: counts, failures and the seconds each stage took (``extract --json``)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

#: The stages timed in :attr:`ExtractSummary.seconds` (benchmarks and ``extract --json`` read them).
STAGES = ("hash", "decode", "encode", "write", "text")


@dataclass
class ExtractSummary:
    inputs: int = 0
    unique: int = 0
    already_done: int = 0
    extracted: int = 0
    extended: int = 0  # committed videos that got the arrays an extended key adds
    extend_failed: int = 0  # committed videos that could not be extended (key left as it was)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped_failed: int = 0
    text_classes: int = 0
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    # CPU seconds of the thread that ran each stage (``time.thread_time``). For the write stage
    # (one thread) its whole CPU cost: ``seconds["write"]`` is wall time, waits for a core
    # included, which on a machine whose cores the encoder fills is mostly the encoder's time. For
    # encode and decode only the calling thread's share (torch's worker threads and the decode
    # threads are not counted).
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0
    store: str = ""
    notes: list[str] = field(default_factory=list)
    encoder: str | None = None  # the encoder's caveat (random or toy weights; cachekit.caveat), None for real CLIP
    coverage: dict = field(default_factory=dict)  # split -> listed / present / failed / used (cachekit.coverage)

    def to_dict(self) -> dict:
        return asdict(self)

    @contextmanager
    def timed(self, stage: str):
        """Add the seconds the ``with`` body takes to ``stage`` (also when it raises). Stages
        running on other threads (the writer) each add to their own entry."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0
            self.cpu_seconds[stage] += time.thread_time() - c0


def merge_summaries(parts: list[ExtractSummary]) -> ExtractSummary:
    """One summary of the ranks' (torchrun) summaries: counts add up, seconds are the slowest rank's."""
    out = parts[0]
    for p in parts[1:]:
        out.extracted += p.extracted
        out.extended += p.extended
        out.extend_failed += p.extend_failed
        out.failed += p.failed
        out.skipped_failed += p.skipped_failed
        out.frames += p.frames
        out.text_classes += p.text_classes
        for k, v in p.seconds.items():
            out.seconds[k] = max(out.seconds.get(k, 0.0), v)
        for k, v in p.cpu_seconds.items():
            out.cpu_seconds[k] = max(out.cpu_seconds.get(k, 0.0), v)
        out.wall = max(out.wall, p.wall)
    return out

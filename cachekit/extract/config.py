"""Extraction's settings (:class:`ExtractConfig`) and how its stages share the CPU (:func:`pipeline_plan`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..cpu import usable_cores
from ..encoder import EncoderConfig
from ..errors import InputError
from ..video import Backend, SamplerConfig


@dataclass(frozen=True)
class ExtractConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tokens_at: tuple[int, ...] = ()
    templates: str = "single"
    batch_size: int = 32  # frames per encoder forward (fixed: the last batch is padded)
    workers: int | None = None  # decoding threads; None: the cores this process may use
    backend: Backend = "auto"
    retry_failed: bool = False
    commit_every: int = 32  # videos per batch commit: the most work a kill can lose
    pixels: bool = False  # also cache the resized, centre-cropped uint8 frames (backbone methods)
    fps: float | None = None  # frame folders' rate (timestamps only); None: cachekit.frames.DEFAULT_FPS

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        if self.commit_every < 1:
            raise InputError(f"--commit-every must be >= 1, got {self.commit_every}")
        if self.fps is not None and not self.fps > 0:
            raise InputError(f"--fps must be > 0, got {self.fps}")
        if len(set(self.tokens_at)) != len(self.tokens_at):
            raise InputError(f"--tokens-at lists a block twice: {self.tokens_at}")

    @property
    def n_workers(self) -> int:
        """Decoding threads when the encoder runs elsewhere (CUDA): ``workers``, or every core
        this process may run on. :func:`pipeline_plan` sizes them for a CPU encoder."""
        if self.workers is not None:
            return max(1, self.workers)
        return usable_cores()


def parse_blocks(text: str | None) -> tuple[int, ...]:
    """``"6,9"`` -> ``(6, 9)``; empty or None -> ``()``."""
    if not text:
        return ()
    try:
        blocks = tuple(sorted(int(t) for t in text.split(",") if t.strip()))
    except ValueError as err:
        raise InputError(f"--tokens-at must be block numbers like 6 or 6,9, not {text!r}") from err
    return blocks


@dataclass(frozen=True)
class PipelinePlan:
    """How extraction shares the CPU: ``workers`` decode threads; ``yield_cpu``: decoders run at
    a lower priority, inside the encoder's gaps."""

    workers: int
    yield_cpu: bool
    encoder_threads: int


def pipeline_plan(cfg: ExtractConfig, device_type: str) -> PipelinePlan:
    """Size the decode workers and the writer from the cores the encoder leaves.

    A CPU encoder comes first: its torch threads keep their cores, decoders get the rest (at
    least one). Where they still share cores (the default: torch takes every core), decoders
    lower their priority, so the encoder's threads are never preempted by them and stall each
    other at a barrier (OpenMP's threads wait for the slowest): they run while the encoder is
    between forwards or waits for frames. The writer keeps its priority: its CPU is a
    thousandth of the encoder's, and lowered it waited for a core ~1 ms a video
    (``benchmarks/extract.py --only pipeline``). Each decoder keeps one torch thread for
    the resize. A CUDA encoder leaves the CPU to the decoders. ``--workers`` overrides the count.
    """
    import torch

    cores = usable_cores()
    if device_type == "cuda":
        return PipelinePlan(cfg.n_workers, False, torch.get_num_threads())
    threads = torch.get_num_threads()
    workers = cfg.workers if cfg.workers is not None else cores - threads
    workers = max(1, workers)
    return PipelinePlan(workers, workers + threads > cores, threads)


def lower_priority(step: int = 10) -> None:
    """Raise this thread's nice value (Linux: per thread; elsewhere, or not allowed: nothing)."""
    import threading

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):
        pass

"""The encode stage: the frozen encoder's forwards, in row groups that keep values reproducible.

A video's stored values do not depend on which other videos were extracted with it
(reliability.md I4): on CPU each forward holds the rows of one video only, in groups of
``min(batch_size, views * frames)`` rows at fixed positions (the last group padded). Sharing a
forward with other videos moves a row to another position, and that alone changes its result in
the last bits (measured: 4.8e-7 at batch 5 on CPU). On CUDA, where batch size matters for
throughput, whole videos are packed into forwards of ``batch_size`` rows instead; fp16 autocast
there already makes values reproducible only to a tolerance (about 1e-3 after fp16 storage),
which the CUDA path documents rather than hides.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np

from ..encoder import FrozenCLIP
from .reader import Pending


class Encoder:
    """Forwards of ``batch_size`` rows through ``enc``, caching the tokens entering ``tokens_at``.

    ``pack``: whole videos share forwards (the default on CUDA; on CPU only to test that path).
    Decoded videos wait in :meth:`push`'s queue until :meth:`ready` hands out a group to encode.
    """

    def __init__(self, enc: FrozenCLIP, batch_size: int, tokens_at: tuple[int, ...], pack: bool | None = None):
        self.enc, self.batch_size, self.tokens_at = enc, batch_size, tokens_at
        self.autocast = enc.device.type == "cuda"
        self.pack = enc.device.type == "cuda" if pack is None else pack
        self.queue: deque[Pending] = deque()  # decoded videos whose rows are not encoded yet
        self.rows_waiting = 0

    def forward(self, pixels, size: int) -> dict:
        """Encode one batch ``[n <= size, 3, S, S]``, padded to ``size`` rows -> device tensors
        per output (``emb``/``cls`` ``[n, D]`` float32, ``tokens_<b>`` ``[n, N+1, W]`` float16)."""
        import torch

        n = pixels.shape[0]
        if n < size:  # pad: every forward of a video has the same shape and row positions
            pixels = torch.cat([pixels, pixels.new_zeros((size - n, *pixels.shape[1:]))])
        pixels = pixels.to(self.enc.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            out = self.enc.encode_frames(pixels, self.tokens_at)
            res = {"emb": out.emb[:n].float(), "cls": out.cls[:n].float()}
            for blk, tok in out.tokens.items():
                res[f"tokens_{blk}"] = tok[:n].to(torch.float16)
        return res  # device tensors: copied to the host by the writer thread (overlaps the next forward)

    # ------------------------------------------------------------- the pipeline's groups
    def push(self, p: Pending) -> None:
        """Queue a decoded video for :meth:`ready`."""
        self.queue.append(p)
        self.rows_waiting += p.pixels.shape[0]

    def ready(self, flush: bool) -> Iterator[list[Pending]]:
        """The groups of queued videos to encode now: on CPU each video alone, as it comes; on
        CUDA (``pack``) whole videos up to ``batch_size`` rows, once that many rows wait (or
        ``flush``: the inputs are done)."""
        while self.queue and (flush or not self.pack or self.rows_waiting >= self.batch_size):
            group = [self.queue.popleft()]
            if self.pack:  # CUDA: whole videos packed up to batch_size rows, for throughput
                while self.queue and sum(q.pixels.shape[0] for q in group) + self.queue[0].pixels.shape[0] \
                        <= self.batch_size:
                    group.append(self.queue.popleft())
            for q in group:
                self.rows_waiting -= q.pixels.shape[0]
            yield group

    def encode(self, group: list[Pending]) -> list[dict]:
        """Forward a group's rows -> the device outputs of each forward, in row order; each video
        keeps its row count (``rows``) and lets go of its input pixels."""
        import torch

        rows = torch.cat([q.pixels for q in group]) if len(group) > 1 else group[0].pixels  # [R, 3, S, S]
        n = rows.shape[0]
        g = max(n, self.batch_size) if self.pack else min(self.batch_size, n)
        outs = [self.forward(rows[start:start + g], g) for start in range(0, n, g)]
        for q in group:
            q.rows = q.pixels.shape[0]
            q.pixels = None  # the writer needs the outputs only
        return outs

    # ------------------------------------------------------------- one video, one set of rows
    def encode_video(self, p: Pending) -> Pending:
        """One decoded video's outputs on the host (``p.outs``), its frames in forwards of their
        own, as the CPU pass does them (the Ray engine's actors encode this way: the same bytes)."""
        p.outs = [self.encode_rows(p.pixels, list(self.tokens_at), True)]
        p.rows, p.pixels = p.pixels.shape[0], None
        return p

    def encode_rows(self, pixels, blocks: list[int], full: bool) -> dict:
        """Forward ``pixels [n, 3, S, S]`` in groups of ``min(batch_size, n)`` rows (the last one
        padded), as the per-video pass does -> host arrays: everything (``full``), or only the
        tokens of ``blocks`` from a forward that stops before the last of them (extension)."""
        import torch

        n = pixels.shape[0]
        g = min(self.batch_size, n)
        outs = []
        for start in range(0, n, g):
            rows = pixels[start:start + g]
            m = rows.shape[0]
            if full:
                outs.append(self.forward(rows, g))
                continue
            if m < g:
                rows = torch.cat([rows, rows.new_zeros((g - m, *rows.shape[1:]))])
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
                toks = self.enc.encode_tokens(rows.to(self.enc.device), blocks)
            outs.append({f"tokens_{b}": toks[b][:m].to(torch.float16) for b in blocks})
        return to_host(outs)


def to_host(outs: list[dict]) -> dict:
    """Forwards' device outputs -> one host array per output, rows in order."""
    return {k: np.concatenate([o[k].cpu().numpy() for o in outs]) for k in outs[0]}

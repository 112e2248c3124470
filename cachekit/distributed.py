"""Running as one rank of a ``torchrun`` job: who am I, and the few collectives extraction needs.

Ranks are not stable across torchrun restarts and the world size may change, so nothing stored
ever depends on them: they only decide who does which piece of work this time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    """Rank and world size; collectives are no-ops for a single process."""

    rank: int = 0
    world: int = 1
    _pg: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._pg:
            import torch.distributed as td

            td.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled over gloo)."""
        if not self._pg:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def owns(self, key: str) -> bool:
        """Whether this rank does the work for content key ``key`` (hex), this time."""
        return int(key[:16], 16) % self.world == self.rank

    def close(self) -> None:
        if self._pg:
            import torch.distributed as td

            td.destroy_process_group()
            self._pg = False


def rank_device(requested: str, dist: Dist) -> tuple[str, str | None]:
    """The device this rank computes on, and a note when it is not what ``requested`` would pick.

    One process: :func:`cachekit.encoder.pick_device`. Under torchrun with CUDA: rank ``LOCAL_RANK``
    takes GPU ``cuda:LOCAL_RANK`` when the machine has a GPU per local rank; with more ranks than
    GPUs on a machine, every rank falls back to the CPU (the process group is gloo, which also runs
    there) and the note says so, rather than two ranks sharing a GPU or one rank failing.
    """
    from .encoder import pick_device

    device = pick_device(requested)
    if dist.world <= 1 or not device.startswith("cuda"):
        return device, None
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", dist.rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
    gpus = torch.cuda.device_count()
    if local_world > gpus:
        return "cpu", (f"{local_world} ranks on this machine and {gpus} GPU{'s' if gpus != 1 else ''}: more "
                       f"ranks than GPUs, so every rank runs on the CPU (gloo); launch at most {gpus} ranks "
                       f"per machine (--nproc-per-node {gpus}) to use the GPUs")
    if device == "cuda":  # a bare "cuda": this rank's own GPU
        device = f"cuda:{local_rank}"
    return device, None


def dist_from_env() -> Dist:
    """A :class:`Dist` for torchrun's environment (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group(backend="gloo")  # object collectives only; encoding stays per rank
    return Dist(rank=td.get_rank(), world=td.get_world_size(), _pg=True)

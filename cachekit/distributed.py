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


def dist_from_env() -> Dist:
    """A :class:`Dist` for torchrun's environment (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group(backend="gloo")  # object collectives only; encoding stays per rank
    return Dist(rank=td.get_rank(), world=td.get_world_size(), _pg=True)

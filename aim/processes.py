"""The processes of one job started by ``accelerate launch`` (or ``torchrun``): which one this is, how
many there are, and a barrier. One process (no launcher) is rank 0 of 1 and never waits.

The process group is accelerate's (``PartialState``: gloo on CPUs, NCCL on GPUs); nothing here
opens sockets of its own. ``aim icl-eval`` and ``aim compress-demos`` split their work by rank and
write per-rank files that the main process merges (docs/scaling.md).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    state: Optional[object] = None  # accelerate's PartialState, when launched

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Every process reaches this point before any goes on."""
        if self.world > 1:
            self.state.wait_for_everyone()

    def device(self, device: str) -> str:
        """This process's device for a requested one: ``cuda`` becomes ``cuda:LOCAL_RANK`` when launched."""
        if self.world > 1 and device == "cuda":
            return f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
        return device


def launched() -> bool:
    """Whether a launcher started several processes (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@functools.lru_cache(maxsize=1)
def processes() -> Processes:
    """This process's place in the job (rank 0 of 1 without a launcher)."""
    if not launched():
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state)


class _Group:
    """torch.distributed's default process group, started by the program that runs aim (lmms-eval)."""

    def wait_for_everyone(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def group_processes() -> Processes:
    """This process's place in the torch.distributed group another program started, when there is
    one (lmms-eval starts its own, after accelerate's state may already say "one process");
    ``processes()`` otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Processes(dist.get_rank(), dist.get_world_size(), _Group())
    return processes()

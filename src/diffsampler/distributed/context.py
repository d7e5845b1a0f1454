"""Who this process is among a run's processes, and the collectives training needs.

torchrun (one machine: `--nproc_per_node N`; several: `--nnodes M --rdzv_backend c10d
--rdzv_endpoint HOST:PORT`) starts every process with WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in its environment. `launch` reads them and joins the process group: gloo on the CPU,
NCCL when the run's device is CUDA (each process then takes the GPU cuda:LOCAL_RANK). Without them,
or with WORLD_SIZE=1, there is no group and every collective below returns its input: a
one-process run executes exactly the code it always did.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DiffSamplerError


class RankZeroError(DiffSamplerError):
    """Raised on the other processes when what rank 0 alone computes for all of them failed there."""


@dataclass
class Context:
    """This process's place in the run: `rank` of `world` processes, `local_rank` on its machine,
    and `device`, where the tensors of collectives live (cuda:LOCAL_RANK under NCCL, else the CPU)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False   # `launch` joined the group (and leaves it), rather than a caller

    def leave(self) -> None:
        """Leave the process group `launch` joined (after the last collective); no-op otherwise.

        A barrier first: no process closes its connections while another is still inside the last
        collective (gloo's transport aborts a process whose peer closed a connection mid-message)."""
        import torch.distributed as dist
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        self.owns_group = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory, logs and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other processes (collectives communicate)."""
        return self.world > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """t summed over the processes, in place (t itself on one process)."""
        if self.active:
            import torch.distributed as dist
            moved = t.to(self.device)
            dist.all_reduce(moved)
            if moved is not t:
                t.copy_(moved)
        return t

    def all_gather_objects(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects; tensors on the CPU)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every process (others pass anything, e.g. None)."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, fn):
        """fn() computed on rank 0 alone, its result (picklable, CPU tensors) given to every process.
        An error of fn on rank 0 is raised there and, as `RankZeroError` with its message, on the others."""
        if not self.active:
            return fn()
        if self.is_main:
            try:
                out = fn()
            except Exception as e:
                self.broadcast(("error", f"{type(e).__name__}: {e}"))
                raise
            return self.broadcast(("ok", out))[1]
        status, out = self.broadcast(None)
        if status == "error":
            raise RankZeroError(f"rank 0 failed: {out}")
        return out

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """[t of rank 0, t of rank 1, ...]: tensors of one shape, on every process."""
        if not self.active:
            return [t]
        import torch.distributed as dist
        moved = t.contiguous().to(self.device)
        out = [torch.empty_like(moved) for _ in range(self.world)]
        dist.all_gather(out, moved)
        return [o.to(t.device) for o in out]

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world}"


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from the launcher's environment ((1, 0, 0) without one)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 1, 0, 0
    return world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))


def wants_cuda(device: str) -> bool:
    """Whether a run on `device` (the config key) uses the GPU: 'cuda', 'cuda:N', or 'auto' where one exists
    (then the process group is NCCL's, else gloo's)."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@contextmanager
def launch(device: str = "cpu") -> Iterator[Context]:
    """The Context of this process for a run on `device` (the config key): a process group joined
    from the launcher's environment for the block's duration when there are several processes (and
    left at its end), none otherwise. An existing group (a caller that initialised it) is used as it is."""
    world, rank, local = env_world()
    if world == 1:
        yield Context()
        return
    import torch.distributed as dist
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world}: this PyTorch build has no torch.distributed")
    cuda = wants_cuda(device)
    if cuda and device not in ("cuda", "auto"):
        raise ConfigError(f"config key 'device' = {device!r}: with {world} processes use device=cuda (each process "
                          "takes cuda:LOCAL_RANK)")
    if cuda:
        torch.cuda.set_device(local)
    ctx = Context(rank, world, local, torch.device("cuda", local) if cuda else torch.device("cpu"))
    if dist.is_initialized():
        yield ctx
        return
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    ctx.owns_group = True
    try:
        yield ctx
    finally:
        ctx.leave()


__all__ = ["Context", "RankZeroError", "launch", "env_world", "wants_cuda"]

"""Data-parallel training on ``torch.distributed``: who am I, and one all-reduce per step.

:class:`World` reads the environment that ``torchrun`` (or a cluster launcher) sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), joins the
process group (gloo on the CPU, NCCL on CUDA) and averages gradients across ranks with one
all-reduce of a flat buffer per optimizer step. Without those variables it is a world of
one process and every operation is a no-op, so the same training code runs everywhere.

The training loops use it as follows:

- each step's global batch is made of ``shards`` groups of samples, each drawn from its own
  stream ``(seed, step, shard)``; rank ``r`` draws the shards ``r, r + N, ...`` (disjoint
  seeds per rank), so ``N`` ranks see exactly the samples one process sees with the same
  ``shards``;
- the gradients (and the loss, for the log) are averaged with one all-reduce;
- only rank 0 writes checkpoints, manifests and plots; every rank reads the checkpoint on
  resume, so an elastic restart (``torchrun --max-restarts``) continues from the last
  checkpoint with no lost or repeated step.

References
----------
.. [1] S. Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel
   Training", VLDB 13(12), 2020, arXiv:2006.15704.
.. [2] P. Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
   arXiv:1706.02677, 2017.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable

import torch

__all__ = ["World", "shard_step", "SHARD_STRIDE"]

#: Offset between the sample streams of two shards of one step (steps stay below it).
SHARD_STRIDE = 2 ** 40


def shard_step(step: int, shard: int) -> int:
    """The sampler step of ``shard`` at optimizer step ``step`` (shard 0: ``step`` itself,
    so a one-shard run draws exactly what the samplers drew before sharding existed)."""
    return int(step) + int(shard) * SHARD_STRIDE


def _store(rank: int, size: int, restart: int, timeout_s: float):
    """The rendezvous store of this attempt of the job.

    torchrun's agent keeps one store for the whole job (``TORCHELASTIC_USE_AGENT_STORE``),
    so the addresses the ranks of a failed attempt published are still in it when the job
    restarts; a restarted rank that read them would connect to a dead process and hang.
    Each attempt therefore gets its own key prefix.
    """
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size,
                          is_master=rank == 0 and not agent,
                          timeout=datetime.timedelta(seconds=timeout_s))
    return dist.PrefixStore(f"neurosolve/attempt{restart}", store)


@dataclass
class World:
    """The processes of a data-parallel run.

    Attributes
    ----------
    rank, size, local_rank : int
    backend : str or None
        ``"gloo"`` or ``"nccl"`` when a process group is in use, else None.
    restart : int
        How many times torchrun has restarted this job (``TORCHELASTIC_RESTART_COUNT``).

    Examples
    --------
    >>> from neurosolve.neural.distributed import World
    >>> w = World.from_env()      # no torchrun variables: one process
    >>> w.size, w.rank, w.is_main
    (1, 0, True)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    restart: int = 0

    @classmethod
    def from_env(cls, backend: str | None = None, device: str | torch.device | None = None,
                 timeout_s: float = 300.0) -> "World":
        """Join the process group described by the environment (if any).

        Parameters
        ----------
        backend : {"gloo", "nccl"}, optional
            Default: NCCL when ``device`` is CUDA, else gloo.
        device : str or torch.device, optional
            The device this rank trains on.
        timeout_s : float
            How long a collective (and the initial connection) may wait for the other
            ranks before it fails; a failure makes torchrun restart the job.

        Raises
        ------
        ValueError
            Inconsistent variables (a rank outside ``[0, WORLD_SIZE)``), or a backend that
            is not available.
        """
        import torch.distributed as dist

        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend(), restart)
        size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if size <= 1:
            return cls(restart=restart)
        rank = int(os.environ.get("RANK", "-1"))
        if not 0 <= rank < size:
            raise ValueError(f"RANK={os.environ.get('RANK')!r} with WORLD_SIZE={size}: start "
                             "the processes with torchrun (or set RANK in [0, WORLD_SIZE))")
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={size} but {var} is not set: start the "
                                 "processes with torchrun, or set MASTER_ADDR and MASTER_PORT")
        if backend is None:
            cuda = device is not None and torch.device(device).type == "cuda"
            backend = "nccl" if cuda else "gloo"
        if backend == "nccl" and not dist.is_nccl_available():
            raise ValueError("backend 'nccl' is not available in this torch build; use gloo")
        dist.init_process_group(backend=backend, store=_store(rank, size, restart, timeout_s),
                                rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, size, int(os.environ.get("LOCAL_RANK", "0")), backend, restart)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.rank == 0

    def my_shards(self, shards: int) -> list[int]:
        """The shards of a step this rank draws (``rank, rank + size, ...``).

        Raises
        ------
        ValueError
            ``shards`` is not a positive multiple of the world size.
        """
        if shards < 1 or shards % self.size:
            raise ValueError(f"shards={shards} must be a positive multiple of the number of "
                             f"processes ({self.size})")
        return list(range(self.rank, shards, self.size))

    def average(self, tensors: Iterable[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks, in place, with one all-reduce."""
        tensors = [t for t in tensors if t is not None]
        if self.size == 1 or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.size
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (same starting point)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

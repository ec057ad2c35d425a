"""Data-parallel training with PyTorch DistributedDataParallel, launched by ``torchrun`` (gloo on CPU, nccl on GPU).

One process per GPU (or per CPU worker). The engine wraps the student in ``DistributedDataParallel``
(:func:`wrap_ddp`) and hands the wrapper to the method as ``method.student``, so the method's training forward
passes are DDP's and its reducer averages the gradients during ``backward()``, overlapping communication with
computation. Checkpoints, EMA, validation and export use the plain module (``method.raw_student``).

Methods that call the student several times before one ``backward()`` (DUKD: the main+zoom-in batch, then the
zoom-out batch) need nothing special: autograd sums every use of a parameter into its single gradient
accumulator, whose hook DDP's reducer watches, so each parameter is reduced once per backward, with
``find_unused_parameters=False``. Every trainable parameter of the student must receive a gradient each step
(true of all srkd students); DDP otherwise reports the unused ones at the next iteration. Forward passes that
are not followed by the step's backward (the data-free generator update, sample images) use the plain module.
``broadcast_buffers`` is off: SR students hold only constant buffers (RGB mean), synchronised once when DDP
wraps the module, and a buffer broadcast inside every forward would make a forward on one rank alone (e.g. a
TensorBoard sample on rank 0) wait for the others.

Each rank draws its own shard of the global batch (the sampler is a pure function of step, rank and world
size). Rank 0 alone logs, validates and writes checkpoints. Per step one small ``all_reduce`` (:func:`step_stats`)
gives every rank the mean loss and the same skip/stop decisions (non-finite loss or gradient on any rank, a
stop signal received by any rank). A rank that raises makes its process exit non-zero, and torchrun's agent then
stops the other ranks (they would otherwise wait in a collective).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from srkd.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device_preference: str = "auto", timeout_min: float = 30.0) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, what="train.device")
    if device.type == "cuda" and device.index is None:  # one GPU per process under torchrun
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(minutes=timeout_min)
        )
    return DistEnv(rank, world_size, local_rank, device)


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def wrap_ddp(env: DistEnv, module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several ranks (its constructor broadcasts rank 0's
    parameters and buffers, so every rank starts equal); ``module`` itself on a single process."""
    if not env.distributed:
        return module
    # torch >= 2.12 names the per-forward buffer sync `forward_sync_buffers` (buffers still synced at init);
    # older versions only have `broadcast_buffers` (srkd students' buffers are equal on every rank anyway).
    new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync: dict[str, Any] = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    return DistributedDataParallel(
        module,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        find_unused_parameters=False,
        **no_buffer_sync,
    )


def step_stats(env: DistEnv, loss: float, flags: list[bool]) -> tuple[float, list[bool]]:
    """Mean of ``loss`` over ranks and, per flag, whether any rank raised it: one collective per step.

    A NaN loss on one rank gives a NaN mean everywhere, and the flags make the non-finite skip/stop and the
    stop-on-signal decisions identical on every rank (a rank deciding alone would leave the others waiting).
    """
    if not env.distributed:
        return loss, list(flags)
    t = torch.tensor([loss, *(float(f) for f in flags)], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    values = t.tolist()
    return values[0] / env.world_size, [v > 0 for v in values[1:]]


def mean_over_ranks(env: DistEnv, values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks; a key logged by some ranks only (e.g. a skipped generator update) is
    averaged over the ranks that have it. A no-op on a single process."""
    if not env.distributed:
        return values
    out: dict[str, list[float]] = {}
    for rank_values in gather_objects(env, {k: float(v) for k, v in values.items()}):
        for k, v in rank_values.items():
            out.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in out.items()}


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (used for per-rank RNG states in checkpoints)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


__all__ = [
    "DistEnv",
    "barrier",
    "cleanup",
    "gather_objects",
    "init",
    "mean_over_ranks",
    "step_stats",
    "wrap_ddp",
]

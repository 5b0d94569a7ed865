"""Data-parallel training over several processes (DistributedDataParallel).

`torchrun --nproc-per-node N -m s2s train RECIPE` (or `s2s train RECIPE --devices N`,
which starts torchrun) runs one training process per device. Every process builds the same
epoch batch list (it is deterministic in seed and epoch); an optimiser step takes
``world_size * accum_steps`` consecutive batches and rank r trains on the r-th slice of
them, so N processes with ``accum_steps = a`` take exactly the steps that one process with
``accum_steps = N * a`` takes.

Gradients travel over the device backend (nccl on CUDA, gloo on CPU); the small host-side
agreements (stop now? the validation record) travel over a CPU (gloo) group, so waiting
for rank 0 to decode the validation set never trips an NCCL watchdog and never costs a
host-device synchronisation.

`Single` is the one-process stand-in with the same methods, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from s2s.errors import S2SError

if TYPE_CHECKING:
    from s2s.tasks.task import Task

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (torch.distributed.run) started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def environment_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), readable before any
    process group exists (the CLI clears a run directory on rank 0 only)."""
    return int(os.environ.get("RANK", "0"))


class Single:
    """One process: every collective is the identity."""

    rank = 0
    world_size = 1
    is_main = True

    def device(self, device: torch.device) -> torch.device:
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        yield

    def no_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def share(self, group: Sequence[T], accum_steps: int) -> list[T]:
        return list(group)

    def shard(self, items: Sequence[T]) -> list[T]:
        return list(items)

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        return list(values)

    def any_true(self, flags: Sequence[bool]) -> list[bool]:
        return list(flags)

    def broadcast(self, value: Any) -> Any:
        return value


class Distributed(Single):
    """A member of a torchrun process group."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        # host-side agreements: CPU tensors, whatever the device backend
        self.control = dist.new_group(backend="gloo") if backend != "gloo" else None

    def device(self, device: torch.device) -> torch.device:
        """One CUDA device per process on a node, chosen by LOCAL_RANK."""
        if device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise S2SError(
                f"process {self.rank} (LOCAL_RANK {self.local_rank}) has no CUDA device: "
                f"this node has {count}; start at most {count} processes per node"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids and ids[0])

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (training the tokeniser, writing caches); the others
        wait, then run it and find its results in place."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def no_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce for every micro-batch but the step's last."""
        return contextlib.nullcontext() if last else model.no_sync()

    def share(self, group: Sequence[T], accum_steps: int) -> list[T]:
        """This rank's slice of a step's ``world_size * accum_steps`` batches (empty for a
        rank past the end of an epoch's short last group)."""
        start = self.rank * accum_steps
        return list(group[start : start + accum_steps])

    def shard(self, items: Sequence[T]) -> list[T]:
        return list(items[self.rank :: self.world_size])

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place over the device backend; no host sync under nccl."""
        dist.all_reduce(tensor)
        return tensor

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        summed = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(summed, group=self.control)
        return summed.tolist()

    def any_true(self, flags: Sequence[bool]) -> list[bool]:
        """Each flag, true on all ranks if it is true on any (a signal, a time limit)."""
        raised = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
        dist.all_reduce(raised, op=dist.ReduceOp.MAX, group=self.control)
        return [bool(value) for value in raised.tolist()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


def join(device: torch.device, task: Task) -> Single:
    """The process group of this run: `Single` outside torchrun, else joined (once) with
    the backend that suits ``device``, if the task's trainer shards its work."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Single()
    if not task.supports_ddp:
        raise S2SError(f"DDP does not serve task.type {task.name!r} yet: train it in one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Distributed(backend)


def leave() -> None:
    """Leave the process group (end of `s2s train`), if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(devices: int, train_args: list[str]) -> int:
    """Run ``s2s train TRAIN_ARGS`` in ``devices`` processes through torchrun on this
    machine; returns torchrun's exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "-m",
        "s2s",
        "train",
        *train_args,
    ]
    return subprocess.call(command)

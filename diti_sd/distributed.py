"""Several processes (``accelerate launch``): fit shards classes, scoring shards images.

Both are exact by construction: a class's training draws and optimiser steps depend only on that
class (see ``fit``), and an image's score only on that image, so the merged result equals a single
process's up to floating-point reduction order.
"""

from __future__ import annotations

import numpy as np
import torch


def world():
    """(process index, number of processes); (0, 1) without a launcher.

    Under ``accelerate launch`` or ``torchrun`` (WORLD_SIZE > 1) the process group is started here:
    NCCL on GPUs, gloo on CPUs.
    """
    import os

    if not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_main() -> bool:
    return world()[0] == 0


def shard(items: list, rank: int, size: int) -> list:
    return items[rank::size]


def merge_class_shards(adapters, owned: list[int]) -> None:
    """Every process trained the classes in ``owned``; afterwards all hold all classes' weights."""
    rank, size = world()
    if size == 1:
        return
    params = adapters.unet_parameters() + adapters.text_parameters()
    with torch.no_grad():
        for p in params:
            mask = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
            mask[owned] = 1
            merged = p * mask.view(-1, *([1] * (p.dim() - 1)))
            torch.distributed.all_reduce(merged, op=torch.distributed.ReduceOp.SUM)
            p.copy_(merged)


def gather_rows(array: np.ndarray, n_total: int) -> np.ndarray:
    """Undo ``shard`` over the first axis: rows i::size from every process, back in input order."""
    rank, size = world()
    if size == 1:
        return array
    parts = [None] * size
    torch.distributed.all_gather_object(parts, array)
    out = np.empty((n_total, *array.shape[1:]), dtype=array.dtype)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def finish() -> None:
    """Close the process group once every process is done.

    Left to interpreter shutdown, gloo's worker threads can outlive the interpreter and abort the
    process (SIGABRT, "terminate called without an active exception") after the work succeeded.
    Called only on success: after an error the other processes may never reach the barrier.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

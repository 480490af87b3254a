"""torch.distributed glue: one process = no-op; under torchrun, DDP with NCCL
on GPUs and gloo on CPUs.  Each rank takes a contiguous slice of the global
batch (the same role as DistributedSampler, with the order fixed by the
global seed rather than by the number of ranks)."""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as tdist


def init_from_env(device: str | None = None) -> str:
    """Initialise the process group if torchrun started us; returns the device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not tdist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        tdist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return f"cuda:{local}"
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if active() else 0


def world_size() -> int:
    return tdist.get_world_size() if active() else 1


def slice_bounds(n: int, r: int, w: int):
    per = n // w
    return r * per, (r + 1) * per


def wrap(module, device):
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def gather_cat(tensors):
    """Concatenate each tensor over ranks (in rank order)."""
    if not active():
        return tensors
    out = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(world_size())]
        tdist.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts))
    return out


def autocast(device, enabled: bool):
    """bf16 autocast on GPU when asked; a no-op on CPU (determinism contract)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def barrier():
    if active():
        tdist.barrier()


def shutdown():
    if active():
        tdist.destroy_process_group()

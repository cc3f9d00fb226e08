"""torch.distributed from the torchrun environment: init (gloo on CPU, nccl on CUDA), rank helpers, barriers."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from learn.errors import LearnError

        raise LearnError("device=cuda requested but no CUDA device is available (use train.device=cpu)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init(requested_device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; otherwise a single-process DistInfo."""
    if not launched_by_torchrun():
        return DistInfo(device=pick_device(requested_device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(requested_device, local_rank)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device) -> float:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def broadcast_object(obj):
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()  # a rank tearing gloo down while another still talks to it aborts the process
        dist.destroy_process_group()

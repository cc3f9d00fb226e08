"""torch.distributed from the torchrun environment: init (gloo on CPU, nccl on CUDA), rank helpers, barriers, a check
run on rank 0 that every rank agrees on (:func:`agree`), and every rank's RNG state for checkpoints."""

from __future__ import annotations

import datetime
import math
import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

from learn.errors import LearnError


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


def pick_device(requested: str = "auto", local_rank: int = 0,
                no_cuda: str = "device=cuda requested but no CUDA device is available (use train.device=cpu)",
                ) -> torch.device:
    """``cpu``, or the GPU ``local_rank`` for ``cuda``/``auto`` (``cuda:N`` keeps its N); ``no_cuda`` is the error
    for ``cuda`` on a machine without one."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LearnError(no_cuda)
    device = torch.device(requested) if requested.startswith("cuda:") else torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def init(requested_device: str = "auto", timeout_default: float = 1800.0) -> DistInfo:
    """Initialise the process group when launched by torchrun; otherwise a single-process DistInfo."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launched_by_torchrun() else 0
    return join(pick_device(requested_device, local_rank), timeout_default)


def join(device: torch.device | str, timeout_default: float = 1800.0) -> DistInfo:
    """Join torchrun's process group (nccl on CUDA, else gloo) on a device already chosen; the collective timeout is
    LEARN_DIST_TIMEOUT seconds, else ``timeout_default``. Without torchrun: a single-process DistInfo."""
    device = torch.device(device)
    if not launched_by_torchrun():
        return DistInfo(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        cuda = {"device_id": device} if device.type == "cuda" else {}
        if cuda:
            torch.cuda.set_device(device)
        timeout = collective_timeout(timeout_default)
        dist.init_process_group("nccl" if cuda else "gloo", store=_round_store(rank, world, timeout), rank=rank,
                                world_size=world, timeout=timeout, **cuda)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def world() -> tuple[int, int]:
    """(world size, rank); (1, 0) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def collective_timeout(default: float = 1800.0) -> datetime.timedelta:
    """How long a collective (and the store) waits for a silent peer: LEARN_DIST_TIMEOUT seconds, else ``default``
    (1800 for training; CEX passes 6 h).

    A peer that dies on this node is noticed at once (its sockets close and torchrun stops the group); the
    timeout only bounds a peer that hangs or whose machine vanished. Keep it above the longest rank-0-only
    stretch (validation, checkpoint writing), which the other ranks spend waiting in a barrier.
    """
    raw = os.environ.get("LEARN_DIST_TIMEOUT", str(default))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:  # NaN fails both
        raise LearnError(f"LEARN_DIST_TIMEOUT={raw!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def _round_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, with keys private to this restart round where torchrun shares one store across rounds.

    By default torchrun (c10d rendezvous, ``--standalone``) keeps one TCP store for the whole job and hands it to
    every round of workers. Without a per-round prefix, workers restarted after a failure read the dead round's
    gloo addresses (``Gloo connectFullMesh failed ... Connection refused``) or wait for keys that are never written
    again (a hang in a futex). ``TORCHELASTIC_RESTART_COUNT`` names the round, but only with one agent (one node):
    an agent restarted by another node's failure does not count it. Several nodes therefore need a fresh store
    per round, ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (scripts/launch.sh sets it when NNODES > 1).
    """
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if not shared or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return store
    return dist.PrefixStore(f"learn/round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def barrier() -> None:
    if world()[0] > 1:
        dist.barrier()


def broadcast_object(obj):
    if world()[0] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(info: DistInfo, check) -> None:
    """Run ``check`` on rank 0 only; every rank raises its LearnError (one broadcast under torchrun)."""
    error = None
    if info.is_main:
        try:
            check()
        except LearnError as e:
            if not info.enabled:
                raise
            error = e
    if info.enabled:
        message = broadcast_object(None if error is None else str(error))
        if message is not None:
            raise error if error is not None else LearnError(message)


def rng_states(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (torch, python, CUDA) in rank order, kept by a checkpoint for a bit-identical resume."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if not info.enabled:
        return [state]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def set_rng_state(state: dict) -> None:
    """Restore one rank's RNG state saved by :func:`rng_states`."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()  # a rank tearing gloo down while another still talks to it aborts the process
        dist.destroy_process_group()

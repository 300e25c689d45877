"""torch.distributed set-up for `torchrun`: DDP over NCCL on GPUs, gloo on CPUs.

A collective waits for every process of the run, so a node that dies would leave the others waiting; each
collective therefore gives up after VITMAE_DIST_TIMEOUT_S seconds, and a lost peer ends the run with one
line that says how to continue it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError

TIMEOUT_ENV = "VITMAE_DIST_TIMEOUT_S"
# NCCL's own default: long enough for a rank-0-only checkpoint save of a large model that the others wait
# for at a barrier, short enough that a dead node does not hold the others for gloo's 30 minutes.
DEFAULT_TIMEOUT_S = 600.0


class PeerLostError(RuntimeError):
    """Another process of the run died or stopped answering in a collective: the run cannot go on."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Joins the process group when started by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo", timeout=collective_timeout())
    return info


def collective_timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
        if seconds > 0:  # also False for nan
            return timedelta(seconds=seconds)
    except (ValueError, OverflowError):  # not a number; inf or too large for a timedelta
        pass
    raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")


def raise_if_peer_lost(err: RuntimeError, info: DistInfo, run_dir: Path) -> None:
    """Raise a PeerLostError in place of torch's error for a collective whose peer died (gloo: connection
    reset or closed; NCCL, the store: a DistError) or did not answer within the timeout."""
    text = str(err)
    if not info.enabled or not (isinstance(err, dist.DistError) or "gloo/" in text):
        return
    # gloo's messages start with its source location, "[.../pair.cc:545] Read error [10.0.0.2]:3041: ..."
    detail = re.sub(r"^\[[^\]]*\] ", "", text.strip().splitlines()[0] if text.strip() else type(err).__name__)
    detail = detail.split(". This is typically", 1)[0][:200]
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    what = (f"no answer from another process within {collective_timeout().total_seconds():g} s ({TIMEOUT_ENV})"
            if timed_out else "lost the connection to another process")
    raise PeerLostError(f"rank {info.rank} of {info.world_size}: {what} ({detail}): a node died or hangs; "
                        f"stopped. Restart every node with --resume {run_dir} to continue from the last "
                        "checkpoint") from None


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

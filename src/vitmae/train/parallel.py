"""How the engine spreads training over processes: the parallel strategy.

The engine asks a strategy, never torch.distributed's wrappers, for what differs between single-process,
data-parallel and sharded training:

- `wrap(model)`: the module training runs through, made before the optimizer (a sharding strategy
  replaces the parameters);
- `no_sync()`: the context of an accumulation micro-batch that does not synchronise gradients yet;
- `clip_grad_norm(model, max_norm)`;
- `writes_checkpoints`: whether this rank writes (rank 0 of a replicated model; every rank of a sharded
  one, its own shard);
- `save` / `load`: a checkpoint of the model and the train state, and reading one back;
- `optimizer_state` / `load_optimizer_state`, `load_model_state`: the states in the form this strategy
  saves them (a sharded strategy gathers or scatters them through `torch.distributed.checkpoint`);
- `reshards`: whether a checkpoint resumes on another number of processes;
- `name`, for the run's summary.

`none` (one process) and `ddp` (DistributedDataParallel, every rank a full replica) are here;
`select_strategy` picks one from the process group.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..interop.safe_load import check_fits
from ..model.flat_names import flat_state_dict, load_flat_state_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistInfo

Loaded = tuple[dict[str, Tensor], dict[str, Any], Path, list[str]]  # weights, train state, its path, notes


class Strategy:
    """Single-process training: the model as it is, a full checkpoint written by the one process."""

    name = "none"
    reshards = False

    def __init__(self, dist: DistInfo, device: torch.device):
        self.dist, self.device = dist, device

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> Tensor:
        return nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    @property
    def writes_checkpoints(self) -> bool:
        return self.dist.is_main

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def save(self, run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any], keep: int) -> Path:
        return save_checkpoint(run_dir, name, model, train_state, keep)

    def load(self, path: str | Path) -> Loaded:
        return load_checkpoint(path)

    def load_model_state(self, model: nn.Module, weights: dict[str, Tensor], where: str) -> None:
        check_fits(where, weights, flat_state_dict(model))  # a checkpoint's weights have the flat names
        load_flat_state_dict(model, weights)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)


class DDPStrategy(Strategy):
    """Data parallel: every rank holds the whole model; gradients are averaged in backward (except in
    `no_sync`); rank 0 writes the full checkpoint, which every rank reads back."""

    name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        self.wrapped = DistributedDataParallel(model, device_ids=[self.device.index]
                                               if self.device.type == "cuda" else None)
        return self.wrapped

    def no_sync(self) -> contextlib.AbstractContextManager:
        return self.wrapped.no_sync()


def select_strategy(dist: DistInfo, device: torch.device) -> Strategy:
    """`ddp` when the run has several processes, `none` otherwise."""
    return DDPStrategy(dist, device) if dist.enabled else Strategy(dist, device)

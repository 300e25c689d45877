"""Where a model runs: the device and the precision, resolved once, and the autocast that goes with them.

The engine holds one (`Trainer.runtime`); a task that only runs a model forward (evaluation, features,
predictions) makes its own from the same options. Whatever runs a model takes a Runtime, so an evaluation
inside a training run and the same evaluation from `vitmae evaluate` run alike.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..data import Batch
from ..errors import ConfigError
from .config import PRECISIONS
from .distributed import DistInfo


def resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
        return torch.device("cuda", dist_info.local_rank)
    if name != "cpu":
        raise ConfigError(f"unknown --device {name!r}; choose from: auto, cpu, cuda")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for a resolved precision (fp32: a no-op context)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block and in its own mode again after it: an evaluation in the
    middle of training leaves the model training."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Runtime:
    """A resolved device (this process's GPU under torchrun) and precision."""

    def __init__(self, device: str | torch.device = "auto", precision: str = "auto",
                 dist: DistInfo | None = None):
        self.device = device if isinstance(device, torch.device) else resolve_device(device, dist or DistInfo())
        self.precision = resolve_precision(precision, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def forward_each(self, model: nn.Module, loader: Iterable[Batch], forward: Callable[[Batch], Any],
                     skipped: list[tuple[str, str]]) -> Iterator[tuple[Batch, Any]]:
        """(batch, `forward(batch)`) of every batch of `loader` with a readable image, `model` in eval mode
        (its mode restored afterwards) and the forward under autocast; the unreadable images' (path,
        reason) go to `skipped`."""
        with eval_mode(model):
            for batch in loader:
                skipped.extend(batch.skipped)
                if len(batch) == 0:
                    continue
                with torch.no_grad(), self.autocast():
                    output = forward(batch)
                yield batch, output

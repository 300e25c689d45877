"""Atomic training checkpoints: weights (safetensors + config) beside the state that resumes a run.

Layout: RUN/checkpoints/step-000123/{model.safetensors, config.json, train_state.pt} and
RUN/checkpoints/latest naming the newest. A checkpoint is written into a hidden temporary directory and
renamed into place, then `latest` is replaced atomically: a process killed at any moment leaves the
previous checkpoint intact and `latest` pointing at a complete one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..interop.vitmae_format import atomic_write, fsync_dir, resolve_checkpoint, save_vitmae

TRAIN_STATE = "train_state.pt"


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_checkpoint(run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any],
                    keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_vitmae(model, tmp)
    with open(tmp / TRAIN_STATE, "wb") as f:
        torch.save(train_state, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. an end save right after a step save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / "latest", name + "\n")
    fsync_dir(root)
    _prune(root, keep, protect=name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """(weights, train state, checkpoint dir) of a run dir or a checkpoint dir. The train state is loaded
    with `weights_only=True`: tensors, numbers, strings and containers only, never code."""
    ckpt = resolve_checkpoint(path)
    state_file = ckpt / TRAIN_STATE
    if not state_file.exists():
        raise FileNotFoundError(f"{ckpt} has no {TRAIN_STATE}: it holds weights only and cannot resume a run")
    train_state = torch.load(state_file, map_location="cpu", weights_only=True)
    return load_file(ckpt / "model.safetensors"), train_state, ckpt

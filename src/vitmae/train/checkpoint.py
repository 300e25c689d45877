"""Atomic, verifiable training checkpoints: weights (safetensors + config) beside the state that resumes a
run, and a manifest of both.

Layout: RUN/checkpoints/step-000123/{model.safetensors, config.json, train_state.pt, manifest.json} and
RUN/checkpoints/latest naming the newest. A checkpoint is written into a hidden temporary directory, its
manifest (each file's size and SHA-256) last, and renamed into place; then `latest` is replaced atomically.
A process killed at any moment leaves the previous checkpoint intact and `latest` pointing at a complete
one. A resume verifies the manifest and falls back to the newest intact checkpoint, saying why.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..interop.safe_load import CheckpointError, load_torch_file
from ..interop.vitmae_format import (LATEST, WEIGHTS, atomic_write, fsync_dir, load_safetensors, natural_key,
                                     resolve_checkpoint, save_vitmae, verify_manifest, write_manifest)

TRAIN_STATE = "train_state.pt"
TRAIN_STATE_KEYS = ("progress", "optimizer", "scaler", "rng_cpu", "extra", "skipped", "config")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(RuntimeError):
    """The device of the run directory has no room for the next checkpoint (nothing of it is left behind)."""


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_weights(model: nn.Module, path: Path) -> Path:
    """Weights and config (vitmae format, no train state) into the directory `path`, replaced whole: a
    run's best checkpoint, a linear probe's classifier."""
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_vitmae(model, tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def save_checkpoint(run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any],
                    keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    needed = _state_bytes(model.state_dict()) + _state_bytes(train_state)
    try:
        if shutil.disk_usage(root).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tmp.mkdir()
        save_vitmae(model, tmp, manifest=False)
        with open(tmp / TRAIN_STATE, "wb") as f:
            torch.save(train_state, f)
            f.flush()
            os.fsync(f.fileno())
        write_manifest(tmp)  # last: a checkpoint with a manifest is complete
        fsync_dir(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(err):
            free, previous = shutil.disk_usage(root).free, _latest_name(root)
            kept = f"the previous checkpoint ({previous}) is intact" if previous else "there is no earlier checkpoint"
            raise DiskFullError(
                f"no space left to save checkpoint {name} in {root}: it needs about {needed / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB are free; the partial copy was removed and {kept}") from None
        raise
    if final.exists():  # the same step saved again (e.g. an end save right after a step save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST, name + "\n")
    fsync_dir(root)
    _prune(root, keep, protect=name)
    return final


def _is_disk_full(err: BaseException | None) -> bool:
    # safetensors reports a full disk as its own error type, with the OS's text in it; torch.save's zip
    # writer fails in its own clean-up, with the OSError as the context
    while err is not None:
        if (isinstance(err, OSError) and err.errno in DISK_FULL) or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _state_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def _latest_name(root: Path) -> str | None:
    latest = root / LATEST
    return latest.read_text().strip() if latest.is_file() else None


def _prune(root: Path, keep: int, protect: str) -> None:
    steps = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: natural_key(p.name))
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def resume_candidates(path: str | Path) -> list[Path]:
    """The checkpoints a resume from `path` may use, best first: a run directory gives the one `latest`
    names, then its other step checkpoints, newest first; a checkpoint directory gives itself."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if root.name != "checkpoints":
        return [path]
    steps = sorted((d for d in root.glob("step-*") if d.is_dir()), key=lambda d: natural_key(d.name), reverse=True)
    named = _latest_name(root) if (root / LATEST).is_file() else None
    first = [root / named] if named and (root / named).is_dir() else []
    return first + [d for d in steps if d not in first]


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path, list[str]]:
    """(weights, train state, checkpoint dir, notes) of the newest intact checkpoint of a run dir (or of one
    checkpoint dir). Each candidate's manifest is verified; a damaged one is passed over and named in
    `notes`. The train state is read with `weights_only=True`: tensors, numbers, strings and containers only,
    never code."""
    candidates = resume_candidates(path)
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint to resume from (no step-* directory in it)")
    damaged: list[str] = []
    for ckpt in candidates:
        try:
            weights, state = _read_checkpoint(ckpt)
        except CheckpointError as err:
            damaged.append(str(err))
            continue
        notes = [f"skipped a damaged checkpoint: {reason}" for reason in damaged]
        if damaged:
            notes.append(f"resuming from {ckpt.name}, the newest intact checkpoint")
        return weights, state, ckpt, notes
    if len(candidates) == 1:
        raise CheckpointError(damaged[0])
    raise CheckpointError(f"no intact checkpoint in {path}: {'; '.join(damaged)}")


def _read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_file = ckpt / TRAIN_STATE
    if not (ckpt / WEIGHTS).is_file():
        raise CheckpointError(f"{ckpt}: no {WEIGHTS} in it")
    if not state_file.is_file():
        raise CheckpointError(f"{ckpt} has no {TRAIN_STATE}: it holds weights only and cannot resume a run")
    verify_manifest(ckpt)
    state = load_torch_file(state_file)
    if not isinstance(state, dict) or any(k not in state for k in TRAIN_STATE_KEYS):
        raise CheckpointError(f"{state_file}: not a vitmae training state (it lacks "
                              f"{', '.join(k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state)})")
    return load_safetensors(ckpt / WEIGHTS), state


__all__ = ["DiskFullError", "TRAIN_STATE", "load_checkpoint", "resolve_checkpoint", "resume_candidates",
           "save_checkpoint", "write_text_atomic"]

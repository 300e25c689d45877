"""Atomic, verifiable training checkpoints: weights (safetensors + config) beside the state that resumes a
run, and a manifest of both.

Layout: RUN/checkpoints/step-000123/{model.safetensors, config.json, train_state.pt, manifest.json} and
RUN/checkpoints/latest naming the newest. A checkpoint is written into a hidden temporary directory, its
manifest (each file's size and SHA-256) last, and renamed into place; then `latest` is replaced atomically.
A process killed at any moment leaves the previous checkpoint intact and `latest` pointing at a complete
one. A resume verifies the manifest and falls back to the newest intact checkpoint, saying why.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..interop.safe_load import CheckpointError, load_torch_file
from ..interop.vitmae_format import (LATEST, WEIGHTS, atomic_write, fsync_dir, load_safetensors, natural_key,
                                     resolve_checkpoint, save_vitmae, verify_manifest, write_manifest)
from ..interop.sharded import is_sharded, read_sharded

TRAIN_STATE = "train_state.pt"
TRAIN_STATE_KEYS = ("progress", "optimizer", "scaler", "rng_cpu", "extra", "skipped", "config")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(RuntimeError):
    """The device of the run directory has no room for the next checkpoint (nothing of it is left behind)."""


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_weights(model: nn.Module, path: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Weights and config (vitmae format, no train state) into the directory `path`, replaced whole: a
    run's best checkpoint, a linear probe's classifier. `state`: the whole weights in flat names, where
    the model's own are sharded."""
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_vitmae(model, tmp, state=state)
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
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    needed = state_bytes(model.state_dict()) + state_bytes(train_state)
    with cleaned_up_on_failure(root, tmp, name, needed):
        if shutil.disk_usage(root).free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tmp.mkdir()
        save_vitmae(model, tmp, manifest=False)
        write_train_state(tmp, train_state)
        write_manifest(tmp)  # last: a checkpoint with a manifest is complete
    return publish_checkpoint(root, tmp, name, keep)


def write_train_state(checkpoint: Path, train_state: dict[str, Any]) -> None:
    with open(checkpoint / TRAIN_STATE, "wb") as f:
        torch.save(train_state, f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def cleaned_up_on_failure(root: Path, tmp: Path, name: str, needed: int) -> Iterator[None]:
    """Writing checkpoint `name` into `tmp`: on any failure the partial copy is removed; a full disk is
    a DiskFullError that says how much was needed and that the previous checkpoint is intact."""
    try:
        yield
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(err):
            free, previous = shutil.disk_usage(root).free, _latest_name(root)
            kept = f"the previous checkpoint ({previous}) is intact" if previous else "there is no earlier checkpoint"
            raise DiskFullError(
                f"no space left to save checkpoint {name} in {root}: it needs about {needed / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB are free; the partial copy was removed and {kept}") from None
        raise


def publish_checkpoint(root: Path, tmp: Path, name: str, keep: int) -> Path:
    """Move the complete checkpoint `tmp` (its manifest written) into place as ROOT/NAME, point `latest`
    at it and prune the step checkpoints beyond the newest `keep`."""
    fsync_dir(tmp)
    final = root / name
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


def state_bytes(obj: Any) -> int:
    """Bytes of the tensors in `obj` (nested dicts, lists and tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
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


def load_checkpoint(path: str | Path, read: Callable[[Path], tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path, list[str]]:
    """(weights, train state, checkpoint dir, notes) of the newest intact checkpoint of a run dir (or of one
    checkpoint dir). Each candidate's manifest is verified; a damaged one is passed over and named in
    `notes`. The train state is read with `weights_only=True`: tensors, numbers, strings and containers only,
    never code. `read` reads one checkpoint (a sharding strategy reads its shards itself)."""
    read = read or _read_checkpoint
    candidates = resume_candidates(path)
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint to resume from (no step-* directory in it)")
    damaged: list[str] = []
    for ckpt in candidates:
        try:
            weights, state = read(ckpt)
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
    """(weights, train state) of one checkpoint; a sharded one's weights and optimizer state are read
    whole, the optimizer state as `{"sharded": its hyperparameters, "tensors": its tensors}`."""
    sharded = is_sharded(ckpt)
    if not sharded and not (ckpt / WEIGHTS).is_file():
        raise CheckpointError(f"{ckpt}: no {WEIGHTS} in it")
    state = read_train_state(ckpt)
    if sharded:
        state["optimizer"] = {**state["optimizer"], "tensors": read_sharded(ckpt, "optimizer")}
        return read_sharded(ckpt, "model"), state
    return load_safetensors(ckpt / WEIGHTS), state


def read_train_state(ckpt: Path) -> dict[str, Any]:
    """The verified train state of the checkpoint `ckpt` (its manifest checked first), read with
    `weights_only=True`: tensors, numbers, strings and containers only, never code."""
    state_file = ckpt / TRAIN_STATE
    if not state_file.is_file():
        raise CheckpointError(f"{ckpt} has no {TRAIN_STATE}: it holds weights only and cannot resume a run")
    verify_manifest(ckpt)
    state = load_torch_file(state_file)
    if not isinstance(state, dict) or any(k not in state for k in TRAIN_STATE_KEYS):
        raise CheckpointError(f"{state_file}: not a vitmae training state (it lacks "
                              f"{', '.join(k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state)})")
    return state


__all__ = ["DiskFullError", "TRAIN_STATE", "cleaned_up_on_failure", "load_checkpoint", "publish_checkpoint",
           "read_train_state", "state_bytes", "write_train_state", "resolve_checkpoint", "resume_candidates",
           "save_checkpoint", "write_text_atomic"]

"""What a checkpoint is, judged by its content: `vitmae`, `official`, `hf` or `timm`, and the reader of
each (see checkpoint.Checkpoint for what it returns).

Extensions only pick the reader; keys decide the format. A path that does not exist may name a Hugging
Face model in the local cache (see hub); a run directory stands for its latest checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint, from_state_dict
from .hf import read_hf_dir
from .hub import resolve_hub_name
from .official import read_torch_checkpoint
from .safe_load import CheckpointError
from .sharded import is_sharded
from .vitmae_format import (WEIGHTS, is_safetensors, is_vitmae_file, load_safetensors, read_metadata, read_vitmae,
                            record_from_metadata, resolve_checkpoint)

def detect_format(path: str | Path) -> str:
    return read_checkpoint(path).format


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path) if Path(path).exists() else resolve_hub_name(str(path))
    path = resolve_checkpoint(path)
    if not (path.is_dir() or path.is_file()):  # a device or a pipe could be read forever
        raise CheckpointError(f"{path}: not a regular file or a directory")
    if path.is_dir():
        if ((path / WEIGHTS).is_file() and is_vitmae_file(path / WEIGHTS)) or is_sharded(path):
            return read_vitmae(path)
        return read_hf_dir(path)
    if is_safetensors(path):
        if is_vitmae_file(path):
            return read_vitmae(path)
        ckpt = from_state_dict(path, load_safetensors(path))
        return ckpt.take_record(record_from_metadata(path, read_metadata(path)))  # our timm exports'
    return read_torch_checkpoint(path)

"""Sharded weights: what `--strategy fsdp` training writes, every process its own shard, through
torch.distributed.checkpoint (DCP), and how one process reads them back whole.

A checkpoint directory of a sharded run holds `sharded/`, DCP's files: `.metadata` and one
`__R_0.distcp` per process. Its tensors are named `model.<flat name>` (the names of every vitmae file)
and `optimizer.<key>` (torch's flattened optimizer state: `state.<module path>.exp_avg`, ...).

Only tensors go into DCP. DCP stores any other value as a pickle and unpickles it on load with code
execution, so the callers keep non-tensor state in files read with `weights_only=True`. DCP's own
`.metadata` is a pickle too: it is read here with an unpickler that admits only DCP's metadata classes,
torch's dtypes and sizes, and paths, so a crafted checkpoint cannot run code on load.
"""
from __future__ import annotations

import contextlib
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from .safe_load import CheckpointError

SHARDED = "sharded"
METADATA = ".metadata"

# Globals a DCP metadata pickle refers to, beyond the classes of torch.distributed.checkpoint.metadata.
_ALLOWED_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch.serialization", "_get_layout"),
                    ("torch", "Size"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
                    ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict")}
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if not _admitted(module, name):
            raise CheckpointError(f"{self.path}: refers to {module}.{name}, which DCP metadata never holds; "
                                  "not read (a crafted file could run code)")
        return super().find_class(module, name)


def _admitted(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if module == "torch":
        return isinstance(getattr(torch, name, None), torch.dtype)
    if module == _METADATA_MODULE:  # a class defined there (not a name it imports)
        import importlib

        value = getattr(importlib.import_module(module), name, None)
        return isinstance(value, type) and value.__module__ == module
    return False


def _reader(directory: Path):
    """DCP's file reader of `directory`, reading `.metadata` with the restricted unpickler."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            path = Path(self.path) / METADATA
            try:
                with open(path, "rb") as f:
                    metadata = _MetadataUnpickler(f, path).load()
            except CheckpointError:
                raise
            except Exception as err:  # noqa: BLE001 - any damage of the pickle is the same to the user
                raise CheckpointError(f"{path}: unreadable DCP metadata ({type(err).__name__}: {err})") from None
            if not isinstance(metadata, Metadata):
                raise CheckpointError(f"{path}: not DCP metadata")
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = getattr(self, "load_id", None)
            return metadata

    return SafeReader(str(directory))


@contextlib.contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: here that is what is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def is_sharded(checkpoint: Path) -> bool:
    """Whether the checkpoint directory `checkpoint` holds sharded (DCP) weights."""
    return (Path(checkpoint) / SHARDED / METADATA).is_file()


def save_sharded(checkpoint: Path, state: dict[str, dict[str, Tensor]]) -> None:
    """Every process writes its shards of `state` ({"model": ..., "optimizer": ...}, tensors and DTensors
    only) into CHECKPOINT/sharded; a collective when a process group is up."""
    import torch.distributed.checkpoint as dcp

    for group, tensors in state.items():
        for key, value in tensors.items():
            if not isinstance(value, Tensor):  # DCP would pickle it, and unpickle it with code on load
                raise TypeError(f"{group}.{key}: only tensors go into a sharded checkpoint, not {type(value).__name__}")
    with _one_process_is_meant():
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(Path(checkpoint) / SHARDED), sync_files=True))


def load_sharded_into(checkpoint: Path, state: dict[str, dict[str, Tensor]]) -> None:
    """Read CHECKPOINT/sharded into the tensors (or DTensor shards) of `state`, in place, whatever number
    of processes wrote it; a collective when a process group is up."""
    import torch.distributed.checkpoint as dcp

    try:
        with _one_process_is_meant():
            dcp.load(state, storage_reader=_reader(Path(checkpoint) / SHARDED))
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{checkpoint}: its sharded weights do not fit this model "
                              f"({str(err).strip().splitlines()[0][:300]})") from None


def read_sharded(checkpoint: Path, group: str) -> dict[str, Tensor]:
    """The whole tensors of `group` ("model" or "optimizer") of a sharded checkpoint, in this process
    alone (no process group needed), by their names in the group."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    directory = Path(checkpoint) / SHARDED
    metadata = _reader(directory).read_metadata()
    prefix = f"{group}."
    state = {key: torch.empty(entry.size, dtype=entry.properties.dtype)
             for key, entry in metadata.state_dict_metadata.items()
             if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)}
    try:
        with _one_process_is_meant():
            dcp.load(state, storage_reader=_reader(directory), no_dist=True)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable sharded weights "
                              f"({str(err).strip().splitlines()[0][:300]})") from None
    return {key[len(prefix):]: value for key, value in state.items()}


__all__ = ["SHARDED", "is_sharded", "load_sharded_into", "read_sharded", "save_sharded"]

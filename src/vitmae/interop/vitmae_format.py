"""Our own checkpoint format: safetensors weights (official key names) with the ModelConfig inside.

- `NAME.safetensors`: one self-contained file; the config is JSON in the safetensors metadata
  (`format: vitmae`, `vitmae_config: {...}`).
- a directory: `model.safetensors` (the same file) plus `config.json`, for people and tools that look there.
- a training run: `RUN/checkpoints/<name>/` directories as above, and `RUN/checkpoints/latest`, a text
  file naming the newest one.
- a checkpoint of a sharded run (`--strategy fsdp`): `sharded/` (interop/sharded.py) in place of
  `model.safetensors`, and `record.json` holding what that file's metadata would (`format`, `vitmae_config`,
  ...). It reads back as the same weights, whole.

A directory also holds `manifest.json`: the size and SHA-256 of each of its files, written last. Loading
verifies it, so a truncated file or bytes flipped inside tensor data are reported, not read.

Beside the config, a classifier records its class names (`vitmae_class_names`) and the normalisation its
inputs had (`vitmae_normalization`), when it knows them (`model.class_names`, `model.normalization`);
`model_record` is that record, which the timm and official exports carry too.

Every file is written atomically (a temp file in the same directory, fsync, `os.replace`): a reader sees
the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..model.config import ModelConfig
from ..model.flat_names import flat_state_dict
from .checkpoint import Checkpoint
from .keymaps import is_decoder_key
from .safe_load import CheckpointError
from .sharded import SHARDED, is_sharded, read_sharded

WEIGHTS = "model.safetensors"
RECORD = "record.json"
CONFIG = "config.json"
MANIFEST = "manifest.json"
LATEST = "latest"
FORMAT_TAG = "vitmae"
# What a file records besides its weights (model_record's keys), as safetensors metadata keys.
RECORD_KEYS = {"config": "vitmae_config", "class_names": "vitmae_class_names",
               "normalization": "vitmae_normalization"}


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Create or replace `path` with what `write(temp_path)` writes, all at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a written file gets the permissions of any other the user creates
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # makes the rename itself durable
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_safetensors(state_dict: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None
                     ) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def export_file(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """The file an export writes: `model{suffixes[0]}` inside a directory; a name without one of
    `suffixes` gets the first."""
    path = Path(path)
    if path.is_dir():
        return path / f"model{suffixes[0]}"
    return path if path.suffix in suffixes else path.with_name(path.name + suffixes[0])


def model_record(model: nn.Module) -> dict[str, Any]:
    """What rebuilds `model` exactly besides its weights: its ModelConfig (heads and eps are not in the
    weights), and a classifier's class names and input normalisation when it knows them."""
    record = {"config": model.config.to_dict()}
    names = getattr(model, "class_names", None)
    if names:
        record["class_names"] = list(names)
    config = model.config
    normalization = getattr(model, "normalization", None) or (
        {"mean": config.mean, "std": config.std} if config.mean is not None and config.std is not None else None)
    if normalization:
        record["normalization"] = {k: [float(x) for x in normalization[k]] for k in ("mean", "std")}
    return record


def normalization_of(model: nn.Module) -> dict[str, list[float]]:
    """The input normalisation `model`'s record states, else the data's default (ImageNet for RGB)."""
    # imported here: reading and writing checkpoints does not need the data stack loaded otherwise
    from ..data.transforms import default_normalization

    recorded = model_record(model).get("normalization")
    if recorded:
        return recorded
    mean, std = default_normalization(model.config.in_chans)
    return {"mean": list(mean), "std": list(std)}


def record_metadata(record: dict[str, Any]) -> dict[str, str]:
    """`model_record` as safetensors metadata (string values)."""
    return {RECORD_KEYS[k]: json.dumps(v) for k, v in record.items()}


def record_from_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    try:
        return {k: json.loads(metadata[key]) for k, key in RECORD_KEYS.items() if key in metadata}
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable vitmae metadata ({err})") from None


def save_vitmae(model: nn.Module, path: str | Path, *, encoder_only: bool = False, manifest: bool = True,
                state: dict[str, Tensor] | None = None) -> Path:
    """Write `model` (a MaskedAutoencoder or ViTClassifier) to `path`: a `.safetensors` file, or a
    directory (with its manifest, unless the caller adds files and writes it). Returns the weights file.
    `encoder_only` leaves out the decoder (`mask_token`, `decoder_*`). `state`: the weights in flat names,
    when the model's own are sharded (gathered by the caller); the model's state dict by default."""
    path = Path(path)
    state = flat_state_dict(model) if state is None else state
    state = {k: v for k, v in state.items() if not (encoder_only and is_decoder_key(k))}
    config_json = json.dumps(model.config.to_dict())
    metadata = {"format": FORMAT_TAG, **record_metadata(model_record(model))}
    if path.suffix == ".safetensors":
        return save_safetensors(state, path, metadata)
    weights = save_safetensors(state, path / WEIGHTS, metadata)
    atomic_write(path / CONFIG, lambda tmp: tmp.write_text(config_json + "\n"))
    if manifest:
        write_manifest(path)
    return weights


def save_sharded_record(model: nn.Module, path: Path) -> None:
    """config.json and record.json of a sharded checkpoint directory: what `save_vitmae` puts beside and
    into model.safetensors, for the weights that `sharded/` holds."""
    record = {"format": FORMAT_TAG, **record_metadata(model_record(model))}
    atomic_write(path / CONFIG, lambda tmp: tmp.write_text(json.dumps(model.config.to_dict()) + "\n"))
    atomic_write(path / RECORD, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Record the size and SHA-256 of every file of `directory` in its manifest.json (atomically), and of
    every file of its `sharded/` (DCP's `.metadata` included)."""
    directory = Path(directory)
    paths = [p for p in sorted(directory.iterdir())
             if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")]
    if (directory / SHARDED).is_dir():
        paths += sorted(p for p in (directory / SHARDED).iterdir() if p.is_file())
    files = {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in paths}
    text = json.dumps({"format": FORMAT_TAG, "files": files}, indent=1) + "\n"
    atomic_write(Path(directory) / MANIFEST, lambda tmp: tmp.write_text(text))


def verify_manifest(directory: Path) -> None:
    """Raise a CheckpointError if a file of `directory` differs from its manifest.json (size or SHA-256)
    or is missing. A directory without a manifest (written before vitmae kept one) passes unchecked."""
    manifest = Path(directory) / MANIFEST
    if not manifest.is_file():
        return
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {str(name): (int(e["bytes"]), str(e["sha256"])) for name, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{manifest}: unreadable manifest ({one_line(err)})") from None
    for name, (size, sha256) in expected.items():
        path = Path(directory) / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing (its manifest lists it)")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path}: {actual} bytes, its manifest says {size} (truncated or replaced)")
        if _sha256(path) != sha256:
            raise CheckpointError(f"{path}: its SHA-256 differs from its manifest's (the file is damaged)")


def one_line(err: Exception) -> str:
    """An error's text, quoted when it holds a line break or other control character (a key of a damaged
    file's own, quoted back by the error), so that the message stays one line."""
    text = str(err)
    return text if text.isprintable() else repr(text)


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(err)})") from None


def load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(err)})") from None


def is_safetensors(path: Path) -> bool:
    """A safetensors file starts with the 8-byte length of its JSON header, which opens with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def is_vitmae_file(path: Path) -> bool:
    return read_metadata(path).get("format") == FORMAT_TAG


def load_vitmae(path: str | Path) -> tuple[dict[str, Tensor], ModelConfig]:
    """(state dict, config) of a vitmae file, checkpoint directory (sharded ones too) or training run
    directory."""
    state, metadata, source = _weights_and_metadata(resolve_checkpoint(path))
    return state, _config_of(metadata, source)


def _config_of(metadata: dict[str, str], source: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(json.loads(metadata["vitmae_config"]))
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as err:  # missing, not JSON, wrong values
        raise CheckpointError(f"{source}: unreadable vitmae_config metadata ({one_line(err)})") from None


def _weights_and_metadata(path: Path) -> tuple[dict[str, Tensor], dict[str, str], Path]:
    """(weights, record metadata, the file that holds the record) of a vitmae file or checkpoint
    directory, its manifest verified first."""
    if path.is_dir() and not (path / WEIGHTS).is_file() and is_sharded(path):
        verify_manifest(path)
        try:
            metadata = json.loads((path / RECORD).read_text())
            metadata = {str(k): str(v) for k, v in metadata.items()}
        except (OSError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{path / RECORD}: unreadable ({one_line(err)})") from None
        if metadata.get("format") != FORMAT_TAG:
            raise CheckpointError(f"{path / RECORD}: not a vitmae record (no format: vitmae)")
        return read_sharded(path, "model"), metadata, path / RECORD
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS} here")
    if path.is_dir():
        verify_manifest(path)
    metadata = read_metadata(weights)
    if metadata.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{weights}: not a vitmae file (its safetensors metadata has no format: vitmae)")
    return load_safetensors(weights), metadata, weights


def read_vitmae(path: Path) -> Checkpoint:
    """A vitmae file or checkpoint directory as a Checkpoint: its weights, config and record."""
    state, metadata, source = _weights_and_metadata(resolve_checkpoint(path))
    ckpt = Checkpoint(path, "vitmae", "vitmae", state, _config_of(metadata, source).to_dict())
    return ckpt.take_record({k: v for k, v in record_from_metadata(source, metadata).items() if k != "config"})


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory a run directory (or its `checkpoints/`) stands for: the one `latest`
    names, else the last complete one in natural name order. Any other path is returned as it is."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not (root.name == "checkpoints" or (root / LATEST).is_file()):
        return path
    latest = root / LATEST
    if latest.is_file():
        name = latest.read_text().strip()
        if not has_weights(root / name):
            raise CheckpointError(f"{latest} names {name!r}, but {root / name / WEIGHTS} does not exist")
        return root / name
    complete = [d for d in root.iterdir() if not d.name.startswith(".") and has_weights(d)]
    if not complete:
        raise CheckpointError(f"{root}: no checkpoint in it (no {LATEST} file, no sub-directory with {WEIGHTS})")
    return max(complete, key=lambda d: natural_key(d.name))


def has_weights(checkpoint: Path) -> bool:
    """Whether the directory `checkpoint` holds weights: model.safetensors, or sharded ones."""
    return (checkpoint / WEIGHTS).is_file() or is_sharded(checkpoint)


def natural_key(name: str) -> list:
    """`step-9` before `step-10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

"""What a checkpoint is, judged by its content: `vitmae`, `official`, `hf` or `timm`.

`read_checkpoint` returns the weights as stored, their key layout (see keymaps.LAYOUTS) and the
ModelConfig values the file states (all of them for vitmae and Hugging Face files and for our timm and
official exports, which record them; a few for an official training checkpoint's `args`; none for plain
weights). Extensions only pick the reader; keys decide the format. A path that does not exist may name a
Hugging Face model in the local cache (see hub).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..model.config import to_2tuple

from .hub import resolve_hub_name
from .keymaps import OFFICIAL_ARGS, add_vit_prefix, config_from_hf, hf_layout, is_decoder_key
from .safe_load import CheckpointError, load_torch_file, name_list
from .vitmae_format import (CONFIG, one_line, WEIGHTS, is_vitmae_file, load_safetensors, load_vitmae, read_metadata,
                            record_from_metadata, resolve_checkpoint)

FORMATS = ("vitmae", "official", "hf", "timm")
HF_MODEL_TYPES = ("vit_mae", "vit")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Large models are saved in shards, with an index mapping each weight to its file.
HF_SHARD_INDEXES = tuple(f"{name}.index.json" for name in HF_WEIGHTS)
WRAPPERS = ("model", "state_dict")  # official training scripts save {'model': ...}; timm's {'state_dict': ...}
OFFICIAL_RECORD = "vitmae"  # our official exports: {'model': ..., 'vitmae': vitmae_format.model_record(...)}
HF_PREPROCESSOR = "preprocessor_config.json"
MAX_JSON_BYTES = 16 * 2**20  # a config is a few KB; a shard index of a huge model a few MB


@dataclass
class Checkpoint:
    path: Path  # the weights file
    format: str  # one of FORMATS
    layout: str  # a key of keymaps.LAYOUTS
    state_dict: dict[str, Tensor]
    stated: dict[str, Any] = field(default_factory=dict)  # ModelConfig values the file states
    class_names: list[str] | None = None  # a classifier's, when the file records them
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} of its inputs
    assumed: dict[str, str] = field(default_factory=dict)  # values by convention, not from the file: why

    def take_record(self, record: dict[str, Any]) -> "Checkpoint":
        """Use what a vitmae_format.model_record says about the model."""
        if "config" in record:
            self.stated = {**record["config"], "img_size": to_2tuple(record["config"]["img_size"])}
        self.class_names = record.get("class_names") or self.class_names
        self.normalization = record.get("normalization") or self.normalization
        return self


def detect_format(path: str | Path) -> str:
    return read_checkpoint(path).format


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path) if Path(path).exists() else resolve_hub_name(str(path))
    path = resolve_checkpoint(path)
    if not (path.is_dir() or path.is_file()):  # a device or a pipe could be read forever
        raise CheckpointError(f"{path}: not a regular file or a directory")
    if path.is_dir():
        return _read_dir(path)
    if _is_safetensors(path):
        if is_vitmae_file(path):
            return _read_vitmae(path)
        ckpt = _from_state_dict(path, load_safetensors(path))
        return ckpt.take_record(record_from_metadata(path, read_metadata(path)))  # our timm exports'
    return _read_torch(path)


def _read_vitmae(path: Path) -> Checkpoint:
    state, config = load_vitmae(path)
    ckpt = Checkpoint(path, "vitmae", "vitmae", state, config.to_dict())
    weights = path / WEIGHTS if path.is_dir() else path
    return ckpt.take_record({k: v for k, v in record_from_metadata(weights, read_metadata(weights)).items()
                             if k != "config"})


def _read_dir(path: Path) -> Checkpoint:
    if (path / WEIGHTS).is_file() and is_vitmae_file(path / WEIGHTS):
        return _read_vitmae(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a directory with neither vitmae weights nor a {CONFIG} "
                              f"(saw: {_listing(path)})")
    config = _read_json(config_file)
    if config.get("model_type") not in HF_MODEL_TYPES:
        raise CheckpointError(f"{config_file}: model_type {config.get('model_type')!r} is not one we read "
                              f"({' or '.join(HF_MODEL_TYPES)})")
    weights = next((path / name for name in HF_WEIGHTS + HF_SHARD_INDEXES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no {' or '.join(HF_WEIGHTS + HF_SHARD_INDEXES)} beside {CONFIG} "
                              f"(saw: {_listing(path)})")
    state = _read_shards(weights) if weights.name in HF_SHARD_INDEXES else _read_weights_file(weights)
    ckpt = _from_state_dict(weights, state)
    if ckpt.format != "hf":
        raise CheckpointError(f"{weights}: {CONFIG} says {config['model_type']} but the keys are {ckpt.format}'s")
    try:
        ckpt.stated = config_from_hf(config)
    except CheckpointError as err:
        raise CheckpointError(f"{config_file}: {err}") from None
    ckpt.class_names = _hf_class_names(config)
    if (path / HF_PREPROCESSOR).is_file():
        processor = _read_json(path / HF_PREPROCESSOR)
        if processor.get("do_normalize") and "image_mean" in processor and "image_std" in processor:
            ckpt.normalization = {"mean": processor["image_mean"], "std": processor["image_std"]}
    return ckpt


def _hf_class_names(config: dict[str, Any]) -> list[str] | None:
    """id2label of a Hugging Face config.json (None when absent or generic)."""
    id2label = config.get("id2label") or {}
    names = [id2label.get(str(i)) for i in range(len(id2label))]
    if not names or any(n is None for n in names) or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def _read_weights_file(path: Path) -> dict[str, Tensor]:
    if _is_safetensors(path):
        return load_safetensors(path)
    return _state_dict_in(path, load_torch_file(path))


def _read_shards(index_file: Path) -> dict[str, Tensor]:
    """The weights of a sharded checkpoint: every file its index names, checked against the index."""
    weight_map = _read_json(index_file).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_file}: no weight_map")
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_file.parent / shard
        if Path(shard).name != shard or not shard_path.is_file():  # a name, not a path out of the folder
            raise CheckpointError(f"{index_file}: shard {shard!r} is not a file beside it")
        state.update(_read_weights_file(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_file}: {len(missing)} weights it lists are in no shard: {name_list(missing)}")
    return state


def _read_torch(path: Path) -> Checkpoint:
    obj = load_torch_file(path)
    ckpt = _from_state_dict(path, _state_dict_in(path, obj))
    if ckpt.format == "timm" and isinstance(obj.get("model"), dict):
        ckpt.format = ckpt.layout = "official"  # encoder-only official files, e.g. mae_pretrain_vit_base.pth
    args = obj.get("args")
    if ckpt.format == "official" and isinstance(args, argparse.Namespace):  # a training checkpoint-N.pth
        ckpt.stated = {ours: getattr(args, theirs) for ours, theirs in OFFICIAL_ARGS if hasattr(args, theirs)}
    if isinstance(obj.get(OFFICIAL_RECORD), dict):
        ckpt.take_record(obj[OFFICIAL_RECORD])
    return ckpt


def _state_dict_in(path: Path, obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), obj)
        if inner and all(isinstance(v, Tensor) for v in inner.values()):
            return inner
    seen = f"a dict with keys {name_list(list(obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise CheckpointError(f"{path}: holds {seen}, not a state dict (nor one under {' or '.join(WRAPPERS)})")


def _from_state_dict(path: Path, state: dict[str, Tensor]) -> Checkpoint:
    """Official / timm names or Hugging Face ones; a plain state dict is official with a decoder (timm
    models have none), timm without. Hugging Face weights without config.json get its default eps."""
    if any(k.startswith(("vit.", "embeddings.", "decoder.decoder_")) for k in state):
        state = add_vit_prefix(state)
        return Checkpoint(path, "hf", hf_layout(state), state, config_from_hf({}))
    if "patch_embed.proj.weight" in state:
        fmt = "official" if any(is_decoder_key(k) for k in state) else "timm"
        return Checkpoint(path, fmt, fmt, state)
    raise CheckpointError(f"{path}: no ViT weights found (no patch_embed.proj.weight, no vit.*; "
                          f"{len(state)} keys: {name_list(list(state))})")


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with the 8-byte length of its JSON header, which opens with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object (a config, a preprocessor config) of at most MAX_JSON_BYTES."""
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes is too large for a config file")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({one_line(err)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: a JSON {type(value).__name__}, where a config file holds an object "
                              "of key: value")
    return value


def _listing(path: Path) -> str:
    return name_list(sorted(p.name for p in path.iterdir())) or "nothing"

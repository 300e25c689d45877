"""Hugging Face model directories (`config.json` beside the weights), read and written.

Reading takes a `ViTMAEForPreTraining`, `ViTForImageClassification` or `ViTModel` directory, or a
`VideoMAEForPreTraining`, `VideoMAEForVideoClassification` or `VideoMAEModel` one, in any of the key
layouts of keymaps, whole or in shards (`*.index.json`), with its config.json's architecture, its class
names (`id2label`) and its preprocessor's normalisation. Writing makes the hub layout, which every
transformers version reads: an MAE as `ViTMAEForPreTraining`, a cls-token classifier as
`ViTForImageClassification`, each with the preprocessor_config.json of a `ViTImageProcessor` that
prepares images as the model's were; a video MAE as `VideoMAEForPreTraining`, a video classifier as
`VideoMAEForVideoClassification`, each with a `VideoMAEImageProcessor`'s. transformers' VideoMAE takes
clips as (B, T, C, H, W), ours (N, C, T, H, W): only the weights cross this boundary, the layout is the
caller's to transpose.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..model.config import ModelConfig
from .checkpoint import Checkpoint, from_state_dict
from .keymaps import (HF_CLASSIFIER_HEAD, HF_CONFIG, VIDEOMAE_FIXED, config_from_hf, config_from_videomae, config_to_hf,
                      config_to_videomae, from_ours)
from .official import state_dict_in
from .safe_load import CheckpointError, load_torch_file, name_list
from .vitmae_format import (CONFIG, WEIGHTS, atomic_write, is_safetensors, load_safetensors, normalization_of,
                            one_line, save_safetensors)

HF_MODEL_TYPES = ("vit_mae", "vit", "videomae")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Large models are saved in shards, with an index mapping each weight to its file.
HF_SHARD_INDEXES = tuple(f"{name}.index.json" for name in HF_WEIGHTS)
HF_PREPROCESSOR = "preprocessor_config.json"
MAX_JSON_BYTES = 16 * 2**20  # a config is a few KB; a shard index of a huge model a few MB
# ModelConfig fields a ViTConfig holds (the encoder half of HF_CONFIG).
HF_ENCODER_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "qkv_bias",
                     "norm_eps")
HF_BICUBIC = 3  # PIL.Image.BICUBIC, as transformers' `resample` names it
HF_BILINEAR = 2  # PIL.Image.BILINEAR: VideoMAE's frames are resized so


class InexactExportWarning(UserWarning):
    """transformers will compute something of the exported model differently from vitmae."""


# -- reading ---------------------------------------------------------------------------------------

def read_hf_dir(path: Path) -> Checkpoint:
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
    ckpt = from_state_dict(weights, state)
    if ckpt.format != "hf":
        raise CheckpointError(f"{weights}: {CONFIG} says {config['model_type']} but the keys are {ckpt.format}'s")
    try:
        ckpt.stated = (config_from_videomae if config["model_type"] == "videomae" else config_from_hf)(config)
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
    if is_safetensors(path):
        return load_safetensors(path)
    return state_dict_in(path, load_torch_file(path))


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


def rename_head(state: dict[str, Tensor], to_theirs: bool) -> dict[str, Tensor]:
    """A classifier's head between our name (`head.*`) and `ViTForImageClassification`'s (`classifier.*`)."""
    out = {}
    for key, value in state.items():
        for ours, theirs in HF_CLASSIFIER_HEAD:
            old, new = (ours, theirs) if to_theirs else (theirs, ours)
            if key.startswith(old + "."):
                key = new + key[len(old):]
        out[key] = value
    return out


# -- writing ---------------------------------------------------------------------------------------

def write_hf_mae(model: nn.Module, state: dict[str, Tensor], path: Path) -> Path:
    """A `ViTMAEForPreTraining` (a video model: `VideoMAEForPreTraining`) directory of the MaskedAutoencoder
    `model` (`state`: its weights, our names)."""
    if model.config.is_video:
        check_videomae_exportable(model.config, "VideoMAEForPreTraining", ("decoder_norm_eps",))
        config = config_to_videomae(model.config, "VideoMAEForPreTraining", not model.config.encoder_norm)
        return write_hf_dir(from_ours(state, "videomae_hub"), config, model, path)
    return write_hf_dir(from_ours(state, "hf_hub"), config_to_hf(model.config), model, path)


def write_hf_classifier(model: nn.Module, state: dict[str, Tensor], path: Path) -> Path:
    """A `ViTForImageClassification` directory of the ViTClassifier `model`, class names included. It
    classifies from the cls token after the final norm: an average-pooling classifier is refused. A video
    classifier is a `VideoMAEForVideoClassification`, which pools either way (`use_mean_pooling`)."""
    names = getattr(model, "class_names", None)
    if model.config.is_video:
        check_videomae_exportable(model.config, "VideoMAEForVideoClassification",
                                  ("fc_norm_eps",) if model.global_pool == "avg" else ())
        config = config_to_videomae(model.config, "VideoMAEForVideoClassification", model.global_pool == "avg")
        hub = rename_head(from_ours(state, "videomae_hub"), to_theirs=True)
        return write_hf_dir(hub, {**config, **hf_labels(model, names)}, model, path)
    if model.global_pool != "token":
        raise CheckpointError(
            "Hugging Face's ViTForImageClassification classifies from the cls token, but this model "
            "averages the patch tokens (global_pool avg, fc_norm): export it to timm, or fine-tune with "
            "--pool cls to get a model Hugging Face can run")
    hub = rename_head(from_ours(state, "hf_hub"), to_theirs=True)
    return write_hf_dir(hub, hf_classifier_config(model, names), model, path)


def check_videomae_exportable(config: ModelConfig, architecture: str, fixed_eps: tuple[str, ...]) -> None:
    """Refuse what transformers' VideoMAE cannot hold; warn where it will compute differently: the
    LayerNorms `fixed_eps` names, whose eps transformers fixes, and an MAE's target."""
    refused = [f"{name}={getattr(config, name)!r}" for name in ("cls_token", "decoder_embed_bias", "pos_embed_type")
               if getattr(config, name) != VIDEOMAE_FIXED[name]]
    if config.qkv_bias and config.k_bias:
        refused.append("a key bias (k_bias=True)")
    if refused:
        raise CheckpointError(f"transformers' {architecture} cannot hold this model ({', '.join(refused)}): "
                              "export it as vitmae or official")
    differs = [f"{name} {getattr(config, name) or config.norm_eps:g} (transformers: {VIDEOMAE_FIXED[name]:g})"
               for name in fixed_eps if (getattr(config, name) or config.norm_eps) != VIDEOMAE_FIXED[name]]
    if architecture == "VideoMAEForPreTraining" and config.pixel_target != "videomae":
        differs.append("the loss's target (this model's is the image MAE's, transformers' VideoMAE's)")
    if differs:
        warnings.warn(f"transformers' {architecture} will differ from this model in: {'; '.join(differs)}",
                      InexactExportWarning, stacklevel=4)


def write_hf_dir(hub_state: dict[str, Tensor], config: dict[str, Any], model: nn.Module, path: Path) -> Path:
    """A Hugging Face model directory: model.safetensors, config.json and the preprocessor_config.json
    that prepares inputs as `model`'s were (hf_processor_config)."""
    save_safetensors(hub_state, path / WEIGHTS, metadata={"format": "pt"})
    for name, content in ((CONFIG, config), (HF_PREPROCESSOR, hf_processor_config(model))):
        text = json.dumps(content, indent=2) + "\n"
        atomic_write(path / name, lambda tmp: tmp.write_text(text))
    return path


def hf_processor_config(model: nn.Module) -> dict[str, Any]:
    """A `ViTImageProcessor` that resizes (bicubic) and normalises images as `model`'s inputs were; for a
    video model a `VideoMAEImageProcessor` that resizes each frame's short side (bilinear), crops the
    centre to the model's size and normalises."""
    c = model.config
    normalization = normalization_of(model)
    height, width = c.img_size
    scale = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
             "image_mean": normalization["mean"], "image_std": normalization["std"]}
    if c.is_video:
        return {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True,
                "size": {"shortest_edge": min(height, width)}, "resample": HF_BILINEAR, "do_center_crop": True,
                "crop_size": {"height": height, "width": width}, **scale}
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": height, "width": width}, "resample": HF_BICUBIC, **scale}


def hf_classifier_config(model: nn.Module, class_names: list[str] | None = None) -> dict[str, Any]:
    """config.json of a transformers `ViTForImageClassification` equal to the ViTClassifier `model`."""
    c = model.config
    values = {**c.to_dict()}
    h, w = c.img_size
    values["img_size"] = h if h == w else [h, w]
    out: dict[str, Any] = {"architectures": ["ViTForImageClassification"], "model_type": "vit"}
    out.update((theirs, values[ours]) for ours, theirs in HF_CONFIG if ours in HF_ENCODER_FIELDS)
    out.update(intermediate_size=int(c.embed_dim * c.mlp_ratio), hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, initializer_range=0.02, encoder_stride=c.patch_size)
    return {**out, **hf_labels(model, class_names)}


def hf_labels(model: nn.Module, class_names: list[str] | None) -> dict[str, Any]:
    """`id2label` and `label2id` of a classifier's config.json (LABEL_i where a name is not known)."""
    names = list(class_names or [])[: model.num_classes]
    names += [f"LABEL_{i}" for i in range(len(names), model.num_classes)]
    return {"id2label": {str(i): name for i, name in enumerate(names)},
            "label2id": {name: i for i, name in enumerate(names)}}

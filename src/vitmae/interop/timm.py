"""timm's files: the safetensors state dict its `VisionTransformer` loads (our names are timm's), with the
arguments that build that model in its metadata, so that `timm.create_model(**timm_create_kwargs(path))`
opens it exactly. Plain timm files (no metadata) are read as bare state dicts (see formats)."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .architecture import CONVENTION_EPS
from .safe_load import CheckpointError
from .vitmae_format import (export_file, model_record, normalization_of, read_metadata, record_metadata,
                            save_safetensors)


def write_timm(model: nn.Module, state: dict[str, Tensor], path: Path) -> Path:
    """`state` as a safetensors file of `model` (a MaskedAutoencoder's encoder or a ViTClassifier), with
    its record and timm's model arguments (`timm_args`) in the metadata."""
    metadata = {"format": "pt", **record_metadata(model_record(model)),
                **{k: json.dumps(v) for k, v in timm_args(model).items()}}
    return save_safetensors(state, export_file(path, (".safetensors",)), metadata)


def timm_args(model: nn.Module) -> dict[str, Any]:
    """What timm needs to build `model`'s VisionTransformer, as the timm export's metadata holds them:
    `timm_model_name`, `timm_model_args` (keyword arguments of `timm.create_model`), `timm_pretrained_cfg`
    (for `pretrained_cfg_overlay`: classes and normalisation) and `norm_eps` (timm builds LayerNorm with
    1e-6; another eps needs `norm_layer=partial(nn.LayerNorm, eps=norm_eps)`, which `timm_create_kwargs`
    adds)."""
    c = model.config
    num_classes = getattr(model, "num_classes", 0)
    pool = getattr(model, "global_pool", "token")
    args = {"img_size": list(c.img_size), "patch_size": c.patch_size, "in_chans": c.in_chans,
            "embed_dim": c.embed_dim, "depth": c.depth, "num_heads": c.num_heads, "mlp_ratio": c.mlp_ratio,
            "qkv_bias": c.qkv_bias, "class_token": True, "num_classes": num_classes, "global_pool": pool,
            "fc_norm": pool == "avg"}
    normalization = normalization_of(model)
    pretrained_cfg = {"num_classes": num_classes, "input_size": [c.in_chans, *c.img_size],
                      "mean": normalization["mean"], "std": normalization["std"]}
    # any registered ViT name serves: the arguments replace every architecture value the name implies
    return {"timm_model_name": "vit_base_patch16_224", "timm_model_args": args,
            "timm_pretrained_cfg": pretrained_cfg, "norm_eps": c.norm_eps}


def timm_create_kwargs(path: str | Path) -> dict[str, Any]:
    """Keyword arguments of `timm.create_model` that open our timm export `path` exactly:
    `timm.create_model(**timm_create_kwargs(path))`."""
    path = Path(path)
    meta = read_metadata(path)
    if "timm_model_args" not in meta:
        raise CheckpointError(f"{path}: no timm_model_args in its metadata (not a timm export of vitmae)")
    kwargs = {"model_name": json.loads(meta["timm_model_name"]), "pretrained": True,
              "pretrained_cfg_overlay": {"file": str(path), **json.loads(meta["timm_pretrained_cfg"])},
              **json.loads(meta["timm_model_args"])}
    eps = json.loads(meta["norm_eps"])
    if eps != CONVENTION_EPS:
        kwargs["norm_layer"] = partial(torch.nn.LayerNorm, eps=eps)
    return kwargs

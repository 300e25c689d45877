"""The architecture a checkpoint was made with: its ModelConfig, from the weights, the file and the caller.

Nothing is guessed. The weights give the shapes; what they cannot tell (attention heads, LayerNorm eps)
comes from the file (vitmae, Hugging Face and every export of ours record it), from the caller
(`num_heads=`, `decoder_num_heads=`, `norm_eps=`) or, for the standard ViT shapes only, from the official
/ timm convention, which the checkpoint notes under `assumed`. Any other shape without a record is a
CheckpointError that names the option to pass.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from torch import Tensor

from ..model.config import ModelConfig, to_2tuple
from .checkpoint import Checkpoint
from .keymaps import mlp_ratio
from .safe_load import CheckpointError

FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
# What the weights determine; a stated value or an override that disagrees with them is an error.
SHAPE_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "qkv_bias",
                "decoder_embed_dim", "decoder_depth", "decoder_mlp_ratio")
# A ratio matters only through the hidden width it gives: int(width * ratio).
RATIO_WIDTH = {"mlp_ratio": "embed_dim", "decoder_mlp_ratio": "decoder_embed_dim"}
# Attention heads are not in the weights. The standard ViT encoders, (width, depth) -> heads (64-wide
# heads, except ViT-H/14), and the official MAE decoder are known by convention; no other shape is.
STANDARD_ENCODER_HEADS = {(192, 12): 3, (384, 12): 6, (768, 12): 12, (1024, 24): 16, (1280, 32): 16}
STANDARD_DECODER_HEADS = {(512, 8): 16}
# The LayerNorm eps of the official MAE and timm models, which their files do not record.
CONVENTION_EPS = 1e-6
HEAD_OPTIONS = {"num_heads": "--num-heads", "decoder_num_heads": "--decoder-num-heads"}


def infer_config(ckpt: Checkpoint, state: dict[str, Tensor], overrides: dict[str, Any], decoder_unused: bool = False
                 ) -> tuple[ModelConfig, tuple[int, int]]:
    """The config `ckpt` was made with (`state`: its weights in our names), and the image size asked for.
    `overrides` are ModelConfig fields; with `decoder_unused`, unknown decoder heads are not an error
    (see _known_by_convention)."""
    unknown = sorted(set(overrides) - FIELDS)
    if unknown:
        raise CheckpointError(f"unknown model option(s): {', '.join(unknown)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    requested = overrides.pop("img_size", None)
    weights = _shapes_from_weights(ckpt.path, state)
    _check_agrees(ckpt.path, f"the {ckpt.format} config", ckpt.stated, weights)
    _check_agrees(ckpt.path, "the overrides", overrides, weights)
    values = {**{k: v for k, v in weights.items() if k in FIELDS}, **ckpt.stated, **overrides}
    values["img_size"] = _native_img_size(ckpt.path, values, requested, weights["num_patches"])
    _known_by_convention(ckpt, values, decoder_unused)
    try:
        config = ModelConfig(**values)
    except (ValueError, TypeError, ZeroDivisionError) as err:  # a stated value of the wrong type, or 0 heads
        raise CheckpointError(f"{ckpt.path}: {err}") from None
    return config, to_2tuple(requested) if requested else config.img_size


def _shapes_from_weights(path: Path, state: dict[str, Tensor]) -> dict[str, Any]:
    try:
        patch = state["patch_embed.proj.weight"]  # (D, C, p, p)
        values = {"patch_size": patch.shape[-1], "in_chans": patch.shape[1], "embed_dim": patch.shape[0],
                  "depth": _count_blocks(state, "blocks"),
                  "qkv_bias": any(k.startswith("blocks.") and k.endswith(".attn.qkv.bias") for k in state),
                  "num_patches": state["pos_embed"].shape[-2] - 1}
        values["mlp_ratio"] = mlp_ratio(state["blocks.0.mlp.fc1.weight"].shape[0], values["embed_dim"])
        if "decoder_embed.weight" in state:
            width = state["decoder_embed.weight"].shape[0]
            values.update(decoder_embed_dim=width, decoder_depth=_count_blocks(state, "decoder_blocks"),
                          decoder_mlp_ratio=mlp_ratio(state["decoder_blocks.0.mlp.fc1.weight"].shape[0], width))
    except KeyError as err:
        raise CheckpointError(f"{path}: no {err.args[0]}, so the architecture cannot be read from the weights"
                              ) from None
    return values


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    return len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})


def _check_agrees(path: Path, source: str, values: dict[str, Any], weights: dict[str, Any]) -> None:
    conflicts = [f"{k}={values[k]} (weights: {weights[k]})" for k in SHAPE_FIELDS
                 if k in values and k in weights and _differs(k, values[k], weights)]
    if "img_size" in values:
        h, w = to_2tuple(values["img_size"])
        patches = (h // weights["patch_size"]) * (w // weights["patch_size"])
        if patches != weights["num_patches"]:
            conflicts.append(f"img_size={h}x{w} ({patches} patches; weights: {weights['num_patches']})")
    if conflicts:
        raise CheckpointError(f"{path}: {source} disagrees with the weights: {'; '.join(conflicts)}")


def _differs(field: str, value: Any, weights: dict[str, Any]) -> bool:
    if field in RATIO_WIDTH:
        width = weights[RATIO_WIDTH[field]]
        if not isinstance(value, (int, float)) or not math.isfinite(width * value):  # null, nan, 1e308
            return True
        return int(width * value) != int(width * weights[field])
    return value != weights[field]


def _native_img_size(path: Path, values: dict[str, Any], requested, num_patches: int) -> tuple[int, int]:
    """The stated image size; else the requested one if it has as many patches as the checkpoint (which
    is how a non-square checkpoint without a config says its shape); else the square one."""
    if "img_size" in values:
        return to_2tuple(values["img_size"])
    p = values["patch_size"]
    if requested is not None:
        h, w = to_2tuple(requested)
        if (h // p) * (w // p) == num_patches:
            return h, w
    side = round(num_patches**0.5)
    if side * side != num_patches:
        raise CheckpointError(f"{path}: {num_patches} patches are not a square grid; pass img_size=(H, W)")
    return side * p, side * p


def _known_by_convention(ckpt: Checkpoint, values: dict[str, Any], decoder_unused: bool) -> None:
    """Fill in what the weights cannot tell and the file did not state (LayerNorm eps, attention heads)
    from the official / timm convention where it is defined, and note it in `ckpt.assumed`; else refuse,
    naming the option that sets it. With `decoder_unused`, unknown decoder heads get 1: the decoder is not
    run, and its heads do not change the encoder."""
    if "norm_eps" not in values:
        values["norm_eps"] = CONVENTION_EPS
        ckpt.assumed["norm_eps"] = f"{CONVENTION_EPS:g}: the official / timm convention (not recorded in the file)"
    default = ModelConfig()
    decoder = (values.get("decoder_embed_dim", default.decoder_embed_dim),
               values.get("decoder_depth", default.decoder_depth))
    for name, shape, standard in (("num_heads", (values["embed_dim"], values["depth"]), STANDARD_ENCODER_HEADS),
                                  ("decoder_num_heads", decoder, STANDARD_DECODER_HEADS)):
        if name in values:
            continue
        if shape in standard:
            values[name] = standard[shape]
            ckpt.assumed[name] = f"{standard[shape]}: the convention for width {shape[0]}, depth {shape[1]}"
        elif name == "decoder_num_heads" and decoder_unused:
            values[name] = 1
            ckpt.assumed[name] = "1: not recorded in the file, and the decoder is not used here"
        else:
            raise CheckpointError(
                f"{ckpt.path}: the file does not record {name}, and width {shape[0]}, depth {shape[1]} is not "
                f"a standard ViT shape: pass {HEAD_OPTIONS[name]} N (Python: {name}=N)")

"""The architecture a checkpoint was made with: its ModelConfig, from the weights, the file and the caller.

Nothing is guessed. The weights give the shapes; what they cannot tell (attention heads, LayerNorm eps)
comes from the file (vitmae, Hugging Face and every export of ours record it), from the caller
(`num_heads=`, `decoder_num_heads=`, `norm_eps=`) or, for the standard ViT shapes only, from the official
/ timm convention, which the checkpoint notes under `assumed`. Any other shape without a record is a
CheckpointError that names the option to pass.

A video checkpoint (a Conv3d patch embedding) says more in its weights: the tubelet, a key bias or
VideoMAE's query and value biases, a cls token, a final norm, a bias in the decoder projection, and
MAE-ST's separable tables. VideoMAE's table is not stored, so an official VideoMAE file does not say its
clip size: it gets VideoMAE's 16 frames of 224 px (noted under `assumed`), and any other size is only a
`num_frames=` / `img_size=` away, since its table is recomputed for any grid.
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
                "decoder_embed_dim", "decoder_depth", "decoder_mlp_ratio", "tubelet_size", "k_bias", "cls_token",
                "encoder_norm", "decoder_embed_bias", "pos_embed_type")
# A ratio matters only through the hidden width it gives: int(width * ratio).
RATIO_WIDTH = {"mlp_ratio": "embed_dim", "decoder_mlp_ratio": "decoder_embed_dim"}
# Attention heads are not in the weights. The standard ViT encoders, (width, depth) -> heads (64-wide
# heads, except ViT-H/14), and the official MAE decoder are known by convention; no other shape is.
STANDARD_ENCODER_HEADS = {(192, 12): 3, (384, 12): 6, (768, 12): 12, (1024, 24): 16, (1280, 32): 16}
STANDARD_DECODER_HEADS = {(512, 8): 16}
# The official VideoMAE decoders, width -> heads (S 192 / 3, B 384 / 6, L 512 / 8, H 640 / 8).
VIDEOMAE_DECODER_HEADS = {192: 3, 384: 6, 512: 8, 640: 8}
# What an official VideoMAE file does not record: its clip (the presets'), its masking and its target.
VIDEOMAE_CONVENTION = {"num_frames": 16, "img_size": (224, 224), "mask_ratio": 0.9, "norm_pix_loss": True,
                       "pixel_target": "videomae"}
# The input size fields a caller may ask to change (the position tables follow).
SIZE_FIELDS = ("img_size", "num_frames")
# The LayerNorm eps of the official MAE and timm models, which their files do not record.
CONVENTION_EPS = 1e-6
HEAD_OPTIONS = {"num_heads": "--num-heads", "decoder_num_heads": "--decoder-num-heads"}


def infer_config(ckpt: Checkpoint, state: dict[str, Tensor], overrides: dict[str, Any], decoder_unused: bool = False
                 ) -> tuple[ModelConfig, dict[str, Any]]:
    """The config `ckpt` was made with (`state`: its weights in our names), and the input size asked for
    where it differs from it ({"img_size": (H, W), "num_frames": T}: the position tables are resized).
    `overrides` are ModelConfig fields; with `decoder_unused`, unknown decoder heads are not an error
    (see _known_by_convention)."""
    unknown = sorted(set(overrides) - FIELDS)
    if unknown:
        raise CheckpointError(f"unknown model option(s): {', '.join(unknown)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    requested = {k: overrides.pop(k) for k in SIZE_FIELDS if k in overrides}
    if "img_size" in requested:
        requested["img_size"] = to_2tuple(requested["img_size"])
    weights = _shapes_from_weights(ckpt.path, state)
    _check_agrees(ckpt.path, f"the {ckpt.format} config", ckpt.stated, weights)
    _check_agrees(ckpt.path, "the overrides", overrides, weights)
    values = {**{k: v for k, v in weights.items() if k in FIELDS}, **ckpt.stated, **overrides}
    if weights["video"]:
        _native_clip_size(ckpt, values, requested, weights)
    elif "num_frames" in requested:
        raise CheckpointError(f"{ckpt.path}: num_frames={requested['num_frames']}, but this is an image model")
    else:
        values["img_size"] = _native_img_size(ckpt.path, values, requested.get("img_size"), weights["num_patches"])
    _known_by_convention(ckpt, values, decoder_unused, weights["video"])
    try:
        config = ModelConfig(**values)
    except (ValueError, TypeError, ZeroDivisionError) as err:  # a stated value of the wrong type, or 0 heads
        raise CheckpointError(f"{ckpt.path}: {err}") from None
    return config, {k: v for k, v in requested.items() if v != getattr(config, k)}


def _shapes_from_weights(path: Path, state: dict[str, Tensor]) -> dict[str, Any]:
    try:
        patch = state["patch_embed.proj.weight"]  # (D, C, p, p), or (D, C, t, p, p) for video
        values = {"patch_size": patch.shape[-1], "in_chans": patch.shape[1], "embed_dim": patch.shape[0],
                  "depth": _count_blocks(state, "blocks"),
                  "qkv_bias": any(k.startswith("blocks.") and k.endswith(".attn.qkv.bias") for k in state),
                  "video": patch.dim() == 5}
        values["mlp_ratio"] = mlp_ratio(state["blocks.0.mlp.fc1.weight"].shape[0], values["embed_dim"])
        if values["video"]:
            values.update(_video_shapes(path, state, patch))
        else:
            values["num_patches"] = state["pos_embed"].shape[-2] - 1
        if "decoder_embed.weight" in state:
            width = state["decoder_embed.weight"].shape[0]
            values.update(decoder_embed_dim=width, decoder_depth=_count_blocks(state, "decoder_blocks"),
                          decoder_mlp_ratio=mlp_ratio(state["decoder_blocks.0.mlp.fc1.weight"].shape[0], width))
    except KeyError as err:
        raise CheckpointError(f"{path}: no {err.args[0]}, so the architecture cannot be read from the weights"
                              ) from None
    return values


def _video_shapes(path: Path, state: dict[str, Tensor], patch: Tensor) -> dict[str, Any]:
    """What a video model's weights say beyond an image model's."""
    if patch.shape[-1] != patch.shape[-2]:
        raise CheckpointError(f"{path}: {patch.shape[-2]}x{patch.shape[-1]} patches: only square ones are supported")
    if "pos_embed" in state:
        raise CheckpointError(f"{path}: a video model with a stored pos_embed (a learned table over all tokens) is "
                              "not supported: VideoMAE's table is the fixed sin-cos one, MAE-ST's the separable "
                              "pos_embed_spatial / pos_embed_temporal")
    q_bias = any(k.startswith("blocks.") and k.endswith(".attn.q_bias") for k in state)
    k_bias = any(k.startswith("blocks.") and k.endswith(".attn.qkv.bias") for k in state)
    values = {"tubelet_size": patch.shape[2], "qkv_bias": q_bias or k_bias, "cls_token": "cls_token" in state,
              "pos_embed_type": "separable" if "pos_embed_spatial" in state else "sincos"}
    if q_bias or k_bias:
        values["k_bias"] = k_bias
    if "fc_norm.weight" not in state:  # a mean-pooling classifier has no final norm, whatever its config says
        values["encoder_norm"] = "norm.weight" in state
    if "decoder_embed.weight" in state:
        values["decoder_embed_bias"] = "decoder_embed.bias" in state
    if values["pos_embed_type"] == "separable":
        values["spatial_tokens"] = state["pos_embed_spatial"].shape[-2]
        values["num_frames"] = state["pos_embed_temporal"].shape[-2] * patch.shape[2]
    return values


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    return len({k.split(".")[1] for k in state if k.startswith(prefix + ".")})


def _check_agrees(path: Path, source: str, values: dict[str, Any], weights: dict[str, Any]) -> None:
    conflicts = [f"{k}={values[k]} (weights: {weights[k]})" for k in SHAPE_FIELDS
                 if k in values and k in weights and _differs(k, values[k], weights)]
    if "num_frames" in values and "num_frames" in weights and values["num_frames"] != weights["num_frames"]:
        conflicts.append(f"num_frames={values['num_frames']} (weights: {weights['num_frames']})")
    if "img_size" in values and "spatial_tokens" in weights:
        h, w = to_2tuple(values["img_size"])
        if (h // weights["patch_size"]) * (w // weights["patch_size"]) != weights["spatial_tokens"]:
            conflicts.append(f"img_size={h}x{w} (weights: {weights['spatial_tokens']} patches per frame)")
    if "img_size" in values and "num_patches" in weights:
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


def _native_clip_size(ckpt: Checkpoint, values: dict[str, Any], requested: dict[str, Any],
                      weights: dict[str, Any]) -> None:
    """A video checkpoint's clip size: stated; else what MAE-ST's tables were made for; else, since
    VideoMAE's table fits any grid, the size asked for, or VideoMAE's convention (noted)."""
    if "spatial_tokens" in weights:
        values["img_size"] = _native_img_size(ckpt.path, values, requested.get("img_size"), weights["spatial_tokens"])
    for name in SIZE_FIELDS:
        if name not in values:
            values[name] = requested.get(name, VIDEOMAE_CONVENTION[name])
            if name not in requested:
                ckpt.assumed[name] = f"{values[name]}: VideoMAE's clip (the file does not record it)"


def _known_by_convention(ckpt: Checkpoint, values: dict[str, Any], decoder_unused: bool, video: bool) -> None:
    """Fill in what the weights cannot tell and the file did not state (LayerNorm eps, attention heads;
    for a video model VideoMAE's masking and target) from the official / timm / VideoMAE convention where
    it is defined, and note it in `ckpt.assumed`; else refuse, naming the option that sets it. With
    `decoder_unused`, unknown decoder heads get 1: the decoder is not run, and its heads do not change the
    encoder."""
    if "norm_eps" not in values:
        values["norm_eps"] = CONVENTION_EPS
        ckpt.assumed["norm_eps"] = f"{CONVENTION_EPS:g}: the official / timm convention (not recorded in the file)"
    for name, value in VIDEOMAE_CONVENTION.items() if video else ():
        if name not in values:
            values[name] = value
            ckpt.assumed[name] = f"{value}: VideoMAE's (not recorded in the file)"
    default = ModelConfig()
    decoder = (values.get("decoder_embed_dim", default.decoder_embed_dim),
               values.get("decoder_depth", default.decoder_depth))
    for name, shape, standard in (("num_heads", (values["embed_dim"], values["depth"]), STANDARD_ENCODER_HEADS),
                                  ("decoder_num_heads", decoder, STANDARD_DECODER_HEADS)):
        if name in values:
            continue
        if video and name == "decoder_num_heads" and shape[0] in VIDEOMAE_DECODER_HEADS:
            values[name] = VIDEOMAE_DECODER_HEADS[shape[0]]
            ckpt.assumed[name] = f"{values[name]}: VideoMAE's convention for a decoder {shape[0]} wide"
        elif shape in standard:
            values[name] = standard[shape]
            ckpt.assumed[name] = f"{standard[shape]}: the convention for width {shape[0]}, depth {shape[1]}"
        elif name == "decoder_num_heads" and decoder_unused:
            values[name] = 1
            ckpt.assumed[name] = "1: not recorded in the file, and the decoder is not used here"
        else:
            raise CheckpointError(
                f"{ckpt.path}: the file does not record {name}, and width {shape[0]}, depth {shape[1]} is not "
                f"a standard ViT shape: pass {HEAD_OPTIONS[name]} N (Python: {name}=N)")

"""Checkpoint interop: load official, Hugging Face, timm and our own checkpoints into a MaskedAutoencoder,
and export one to any of them.

    model = load_pretrained("mae_pretrain_vit_base.pth")      # encoder only: warns, decoder fresh
    model = load_pretrained("hf-dir/", img_size=448)          # position tables resized
    export(model, "out-dir/", "hf")                           # loads in every transformers version

Loading never drops a key silently: a missing decoder is one MissingDecoderWarning (classification heads
of fine-tuned models are left out and named in it); any other missing, unexpected or mis-shaped key is a
CheckpointError that names them.

Nor does it guess: what the weights cannot tell (attention heads, LayerNorm eps) comes from the file
(vitmae, Hugging Face and every export of ours record it), from the caller (`num_heads=`,
`decoder_num_heads=`, `norm_eps=`) or, for the standard ViT shapes only, from the official / timm
convention, which `describe` lists under `assumed`. Any other shape without a record is a CheckpointError
that names the option to pass.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..model.config import ModelConfig, to_2tuple
from ..model import MaskedAutoencoder, sincos_pos_embed
from ..model.grid import position_table
from ..model.vit import flat_named_parameters
from .formats import FORMATS, Checkpoint, detect_format, read_checkpoint
from .keymaps import config_to_hf, from_ours, is_decoder_key, is_head_key, mlp_ratio, to_ours
from .safe_load import CheckpointError, UnsafeCheckpointError, check_fits, load_torch_file, name_list
from .vitmae_format import (atomic_write, export_file, load_vitmae, model_record, record_metadata,
                            resolve_checkpoint, save_safetensors, save_vitmae)

__all__ = ["CheckpointError", "FORMATS", "MissingDecoderWarning", "UnsafeCheckpointError", "convert",
           "describe", "detect_format", "export", "load_classifier", "load_pretrained", "load_torch_file",
           "load_vitmae", "resolve_checkpoint", "save_vitmae", "timm_create_kwargs"]

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


class MissingDecoderWarning(UserWarning):
    """The checkpoint holds an encoder only; the decoder was initialised fresh."""


@dataclass
class _Loaded:
    model: MaskedAutoencoder
    checkpoint: Checkpoint
    decoder_present: bool
    left_out: list[str]  # classifier keys not loaded


def load_pretrained(path: str | Path, **overrides: Any) -> MaskedAutoencoder:
    """A MaskedAutoencoder from a vitmae, official, Hugging Face or timm checkpoint (file, directory, run
    directory, or a Hugging Face model id in the local cache). `overrides` are ModelConfig fields:
    `num_heads`, `decoder_num_heads` and `norm_eps` for a file that does not record them; `img_size` may
    differ from the checkpoint's (the position tables are resized); the shape fields may not differ from
    the weights."""
    loaded = _load(read_checkpoint(path), overrides)
    if not loaded.decoder_present:
        _warn_no_decoder(loaded, "loaded the encoder and initialised the decoder fresh")
    return loaded.model


def convert(src: str | Path, dst: str | Path, to: str, **overrides: Any) -> Path:
    """load_pretrained + export. A checkpoint without a decoder converts to one without a decoder; a
    fine-tuned classifier converts as a classifier (`export_classifier`), head included."""
    ckpt = read_checkpoint(src)
    if _is_fine_tuned(ckpt):
        from .classifier import classifier_from_checkpoint, export_classifier

        return export_classifier(classifier_from_checkpoint(ckpt, overrides), dst, to)
    loaded = _load(ckpt, overrides)
    if not loaded.decoder_present:
        _warn_no_decoder(loaded, "wrote the encoder only")
    return export(loaded.model, dst, to, encoder_only=not loaded.decoder_present)


def describe(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """What `vitmae info` prints: format, architecture (LayerNorm eps and heads included), what of it is
    assumed by convention rather than recorded in the file, parameter counts, whether the decoder is there
    (for a fine-tuned classifier: its classes, pooling and input normalisation instead)."""
    ckpt = read_checkpoint(path)
    if _is_fine_tuned(ckpt):
        from .classifier import classifier_from_checkpoint

        classifier = classifier_from_checkpoint(ckpt, overrides)
        return {
            "path": str(ckpt.path), "format": ckpt.format, "layout": ckpt.layout, "kind": "classifier",
            "architecture": classifier.config.to_dict(), "norm_eps": classifier.config.norm_eps,
            "assumed": ckpt.assumed, "num_classes": classifier.num_classes,
            "class_names": classifier.class_names, "normalization": ckpt.normalization,
            "global_pool": classifier.global_pool,
            "parameters": {"total": sum(p.numel() for p in classifier.parameters())},
        }
    loaded = _load(ckpt, overrides)
    model = loaded.model
    named = flat_named_parameters(model)
    encoder = sum(p.numel() for name, p in named if not is_decoder_key(name))
    decoder = sum(p.numel() for name, p in named if is_decoder_key(name))
    decoder = decoder if loaded.decoder_present else 0
    return {
        "path": str(loaded.checkpoint.path),
        "format": loaded.checkpoint.format,
        "kind": "masked autoencoder",
        "layout": loaded.checkpoint.layout,
        "architecture": model.config.to_dict(),
        "norm_eps": model.config.norm_eps,
        "assumed": ckpt.assumed,
        "parameters": {"encoder": encoder, "decoder": decoder, "total": encoder + decoder},
        "decoder_present": loaded.decoder_present,
        "learned_position_tables": [name for name, owner in _position_tables(model).items()
                                    if owner.pos_embed_kind == "learned"],
        "left_out": loaded.left_out,
    }


def export(model: MaskedAutoencoder, path: str | Path, format: str, *, encoder_only: bool = False) -> Path:
    """Write `model` as `format`:
    - `vitmae`: our format (see save_vitmae);
    - `hf`: a directory a `ViTMAEForPreTraining` loads: config.json + model.safetensors in the hub layout;
    - `timm`: encoder-only safetensors for timm's VisionTransformer (timm reads a `mask_token` as DINOv2's
      and stumbles on `decoder_*` keys), with timm's model arguments in its metadata (see `timm_args`);
    - `official`: `{'model': state_dict, 'vitmae': {...}}`: the official scripts read 'model', we read
      the config recorded under 'vitmae' (see vitmae_format.model_record).
    A directory given for `timm` or `official` gets `model.safetensors` / `model.pth` inside; a file name
    without that extension gets it."""
    path = Path(path)
    encoder_only = encoder_only or format == "timm"
    state = {k: v for k, v in model.state_dict().items() if not (encoder_only and is_decoder_key(k))}
    if format == "vitmae":
        return save_vitmae(model, path, encoder_only=encoder_only)
    if format == "hf":
        from .classifier import write_hf_dir

        return write_hf_dir(from_ours(state, "hf_hub"), config_to_hf(model.config), model, path)
    return export_weights(model, state, path, format, FORMATS)


def export_weights(model, state: dict[str, Tensor], path: Path, format: str, formats: tuple[str, ...]) -> Path:
    """`state` as a `timm` or `official` file of `model` (a MaskedAutoencoder or a ViTClassifier), with
    what rebuilds it recorded."""
    record = model_record(model)
    if format == "timm":
        metadata = {"format": "pt", **record_metadata(record),
                    **{k: json.dumps(v) for k, v in timm_args(model).items()}}
        return save_safetensors(state, export_file(path, (".safetensors",)), metadata)
    if format == "official":
        state = {k: v.detach().cpu() for k, v in state.items()}
        return atomic_write(export_file(path, (".pth", ".pt")),
                            lambda tmp: torch.save({"model": state, "vitmae": record}, tmp))
    raise CheckpointError(f"unknown format {format!r}; choose from: {', '.join(formats)}")


def timm_args(model) -> dict[str, Any]:
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
    normalization = model_record(model).get("normalization") or _default_normalization(c.in_chans)
    pretrained_cfg = {"num_classes": num_classes, "input_size": [c.in_chans, *c.img_size],
                      "mean": normalization["mean"], "std": normalization["std"]}
    # any registered ViT name serves: the arguments replace every architecture value the name implies
    return {"timm_model_name": "vit_base_patch16_224", "timm_model_args": args,
            "timm_pretrained_cfg": pretrained_cfg, "norm_eps": c.norm_eps}


def timm_create_kwargs(path: str | Path) -> dict[str, Any]:
    """Keyword arguments of `timm.create_model` that open our timm export `path` exactly:
    `timm.create_model(**timm_create_kwargs(path))`."""
    from functools import partial

    from .vitmae_format import read_metadata

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


def _default_normalization(in_chans: int) -> dict[str, list[float]]:
    """The data's default (ImageNet for RGB) for a model that does not record its normalisation."""
    from ..data.transforms import default_normalization

    mean, std = default_normalization(in_chans)
    return {"mean": list(mean), "std": list(std)}


# -- loading -----------------------------------------------------------------------------------------

def _is_fine_tuned(ckpt: Checkpoint) -> bool:
    """A classifier's weights (a head, no decoder), which belong in a ViTClassifier, not an MAE."""
    keys = ckpt.state_dict
    return any(k.startswith(("head.", "classifier.")) for k in keys) and not any("decoder" in k for k in keys)


def _load(ckpt: Checkpoint, overrides: dict[str, Any], decoder_unused: bool = False) -> _Loaded:
    state = to_ours(ckpt.state_dict, ckpt.layout)
    decoder_present = any(is_decoder_key(k) for k in state)
    left_out = [] if decoder_present else sorted(k for k in state if is_head_key(k))
    state = {k: v for k, v in state.items() if k not in left_out}
    config, img_size = _config(ckpt, state, overrides, decoder_unused)
    model = MaskedAutoencoder(config)
    check_fits(f"{ckpt.path}: does not fit the model", state, model.state_dict(),
               optional=lambda key: not decoder_present and is_decoder_key(key))
    model.load_state_dict(state, strict=False)  # strictness is check_fits' job: it allows a missing decoder
    for name, owner in _position_tables(model).items():
        if name in state and not _is_sincos(state[name], config.grid_size):
            owner.learn_pos_embed()  # a stored table that is not the sin-cos one was learned
    if img_size != config.img_size:
        model = _resized(model, img_size)
    return _Loaded(model, ckpt, decoder_present, left_out)


def _warn_no_decoder(loaded: _Loaded, consequence: str) -> None:
    message = f"{loaded.checkpoint.path} has no decoder (mask_token, decoder_*): {consequence}"
    if loaded.left_out:
        message += f"; left out the classifier keys {name_list(loaded.left_out)}"
    warnings.warn(message, MissingDecoderWarning, stacklevel=3)


def _config(ckpt: Checkpoint, state: dict[str, Tensor], overrides: dict[str, Any], decoder_unused: bool = False
            ) -> tuple[ModelConfig, tuple[int, int]]:
    """The config the checkpoint was made with, and the image size asked for (see _known_by_convention)."""
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


def _is_sincos(table: Tensor, grid: tuple[int, int]) -> bool:
    """Whether a stored table is the fixed sin-cos one, compared in its own dtype (a half-precision copy
    of the sin-cos table still is one)."""
    expected = sincos_pos_embed(table.shape[-1], grid)[None].to(table.dtype)
    return bool((table.float() - expected.float()).abs().max() <= 1e-5)


def _position_tables(model: MaskedAutoencoder) -> dict[str, Any]:
    """Each position table's flat name -> the component that holds it (and knows its kind)."""
    return {"pos_embed": model.encoder, "decoder_pos_embed": model.decoder}


def _resized(model: MaskedAutoencoder, img_size: tuple[int, int]) -> MaskedAutoencoder:
    """The model for another image size, its position tables resized as the encoder would resize them
    (`ModelConfig.pos_embed_resize`); a learned table stays learned."""
    resized = MaskedAutoencoder(model.config.replace(img_size=img_size))
    state = model.state_dict()
    old, new = _position_tables(model), _position_tables(resized)
    for name, owner in old.items():
        table = getattr(owner, name)
        state[name] = position_table(table, owner.pos_embed_kind, model.config.pos_embed_resize,
                                     model.encoder.grid_size, resized.encoder.grid_size).detach()
        if owner.pos_embed_kind == "learned":
            new[name].learn_pos_embed()
    resized.load_state_dict(state)
    return resized


from .classifier import load_classifier  # noqa: E402  (it builds on the loaders above)

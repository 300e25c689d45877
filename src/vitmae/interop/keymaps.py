"""Key names of every layout we read or write, as tables.

Our parameter names are the official MAE ones, which timm uses too: official and timm files need no
renaming. Hugging Face names differ, in three layouts:
- `hf_hub`: the files published on the hub (written by transformers 4.x); every version reads it, so we
  write it;
- `hf_v5_saved`: what transformers 5.23's `save_pretrained` writes: hub names except the decoder blocks,
  `decoder.decoder_encoder.layer.N` (an artefact of its renaming rules);
- `hf_v5_memory`: transformers 5's in-memory `state_dict()` (`vit.layers.N.attention.q_proj`, ...).

A rule maps one of our module (or parameter) names to theirs and covers its `.weight` / `.bias`; `{i}`
stands for a block index. A tuple of three names is the official fused qkv projection split along its
output rows, rows [:D] query, [D:2D] key, [2D:] value, as Hugging Face stores it.

Video models (VideoMAE) have layouts of their own:
- `videomae_hub`: transformers' VideoMAE files, as published and as transformers 5 still saves them
  (query and value biases as `attention.attention.q_bias` / `v_bias`, the encoder under `videomae.`);
- `videomae_v5_memory`: transformers 5's in-memory `state_dict()`, where those biases are `query.bias`
  and `value.bias`;
- `videomae_official`: the official VideoMAE pre-training files (`encoder.blocks.N...`,
  `encoder_to_decoder`, `decoder.blocks.N...`, `decoder.head`). Its fine-tuned files use our names.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

import torch
from torch import Tensor

from ..model.config import ModelConfig, to_2tuple
from .safe_load import CheckpointError

Rule = tuple[str, "str | tuple[str, ...]"]

# One transformer block (encoder and decoder alike), ours -> Hugging Face.
HUB_BLOCK: tuple[Rule, ...] = (
    ("norm1", "layernorm_before"),
    ("attn.qkv", ("attention.attention.query", "attention.attention.key", "attention.attention.value")),
    ("attn.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
V5_BLOCK: tuple[Rule, ...] = (
    ("norm1", "layernorm_before"),
    ("attn.qkv", ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    ("attn.proj", "attention.o_proj"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
)
HF_EMBED_AND_NORM: tuple[Rule, ...] = (
    ("cls_token", "vit.embeddings.cls_token"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("patch_embed.proj", "vit.embeddings.patch_embeddings.projection"),
    ("norm", "vit.layernorm"),
)
HF_DECODER: tuple[Rule, ...] = (
    ("mask_token", "decoder.mask_token"),
    ("decoder_pos_embed", "decoder.decoder_pos_embed"),
    ("decoder_embed", "decoder.decoder_embed"),
    ("decoder_norm", "decoder.decoder_norm"),
    ("decoder_pred", "decoder.decoder_pred"),
)


# VideoMAE's blocks (no key bias): the query and value biases are their own tensors, `q_bias` / `v_bias` in
# the hub files, the biases of `query` / `value` in transformers 5's memory; the fused qkv has a weight only.
VIDEOMAE_QKV: Rule = ("attn.qkv.weight", tuple(f"attention.attention.{n}.weight" for n in ("query", "key", "value")))
_HUB_BLOCK_BUT_QKV = tuple(rule for rule in HUB_BLOCK if rule[0] != "attn.qkv")
VIDEOMAE_HUB_BLOCK: tuple[Rule, ...] = (("attn.q_bias", "attention.attention.q_bias"),
                                        ("attn.v_bias", "attention.attention.v_bias"), VIDEOMAE_QKV) + _HUB_BLOCK_BUT_QKV
VIDEOMAE_V5_BLOCK: tuple[Rule, ...] = (("attn.q_bias", "attention.attention.query.bias"),
                                       ("attn.v_bias", "attention.attention.value.bias"), VIDEOMAE_QKV) + _HUB_BLOCK_BUT_QKV
VIDEOMAE_HF_EMBED_DECODER: tuple[Rule, ...] = (
    ("patch_embed.proj", "videomae.embeddings.patch_embeddings.projection"),
    ("norm", "videomae.layernorm"),
    ("decoder_embed", "encoder_to_decoder"),
    ("mask_token", "mask_token"),
    ("decoder_norm", "decoder.norm"),
    ("decoder_pred", "decoder.head"),
)
# The official VideoMAE pre-training model holds `encoder` and `decoder`; inside a block its names are ours.
OFFICIAL_BLOCK: tuple[Rule, ...] = tuple((name, name) for name in (
    "norm1", "attn.q_bias", "attn.v_bias", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"))
VIDEOMAE_OFFICIAL_EMBED_DECODER: tuple[Rule, ...] = (
    ("patch_embed.proj", "encoder.patch_embed.proj"),
    ("norm", "encoder.norm"),
    ("decoder_embed", "encoder_to_decoder"),
    ("decoder_norm", "decoder.norm"),
    ("decoder_pred", "decoder.head"),
)


def _blocks(ours: str, theirs: str, block: tuple[Rule, ...]) -> tuple[Rule, ...]:
    def prefixed(name):
        return f"{theirs}.{{i}}.{name}" if isinstance(name, str) else tuple(prefixed(n) for n in name)

    return tuple((f"{ours}.{{i}}.{a}", prefixed(b)) for a, b in block)


LAYOUTS: dict[str, tuple[Rule, ...]] = {
    "official": (),  # identity: our names are the official ones
    "timm": (),  # timm's VisionTransformer uses the official encoder names
    "vitmae": (),
    "hf_hub": HF_EMBED_AND_NORM + _blocks("blocks", "vit.encoder.layer", HUB_BLOCK)
    + HF_DECODER + _blocks("decoder_blocks", "decoder.decoder_layers", HUB_BLOCK),
    "hf_v5_saved": HF_EMBED_AND_NORM + _blocks("blocks", "vit.encoder.layer", HUB_BLOCK)
    + HF_DECODER + _blocks("decoder_blocks", "decoder.decoder_encoder.layer", HUB_BLOCK),
    "hf_v5_memory": HF_EMBED_AND_NORM + _blocks("blocks", "vit.layers", V5_BLOCK)
    + HF_DECODER + _blocks("decoder_blocks", "decoder.decoder_layers", V5_BLOCK),
    "videomae_hub": VIDEOMAE_HF_EMBED_DECODER + _blocks("blocks", "videomae.encoder.layer", VIDEOMAE_HUB_BLOCK)
    + _blocks("decoder_blocks", "decoder.decoder_layers", VIDEOMAE_HUB_BLOCK),
    "videomae_v5_memory": VIDEOMAE_HF_EMBED_DECODER + _blocks("blocks", "videomae.encoder.layer", VIDEOMAE_V5_BLOCK)
    + _blocks("decoder_blocks", "decoder.decoder_layers", VIDEOMAE_V5_BLOCK),
    "videomae_official": VIDEOMAE_OFFICIAL_EMBED_DECODER + _blocks("blocks", "encoder.blocks", OFFICIAL_BLOCK)
    + _blocks("decoder_blocks", "decoder.blocks", OFFICIAL_BLOCK),
}
VIDEOMAE_HF_LAYOUTS = ("videomae_hub", "videomae_v5_memory")
HF_LAYOUTS = ("hf_hub", "hf_v5_saved", "hf_v5_memory") + VIDEOMAE_HF_LAYOUTS
VIDEO_LAYOUTS = VIDEOMAE_HF_LAYOUTS + ("videomae_official",)
# The linear head of transformers' ViTForImageClassification (same name in every transformers version),
# ours (= timm's and the official fine-tuned) -> theirs. hf.rename_head applies it on top of an HF layout
# for classifiers; it is not in LAYOUTS, so the MAE loaders name `classifier.*` as it is in what they leave out.
HF_CLASSIFIER_HEAD: tuple[Rule, ...] = (("head", "classifier"),)

# Classification heads of fine-tuned models (official/timm, transformers' ViTForImageClassification and
# ViTModel's pooler): not part of an MAE. A loader drops them and says so.
HEAD_PREFIXES = ("head.", "fc_norm.", "classifier.", "pooler.", "vit.pooler.")

# ModelConfig field <- Hugging Face config.json key (ViTMAEConfig; ViTConfig has the encoder half).
HF_CONFIG: tuple[tuple[str, str], ...] = (
    ("img_size", "image_size"),
    ("patch_size", "patch_size"),
    ("in_chans", "num_channels"),
    ("embed_dim", "hidden_size"),
    ("depth", "num_hidden_layers"),
    ("num_heads", "num_attention_heads"),
    ("qkv_bias", "qkv_bias"),
    ("norm_eps", "layer_norm_eps"),
    ("decoder_embed_dim", "decoder_hidden_size"),
    ("decoder_depth", "decoder_num_hidden_layers"),
    ("decoder_num_heads", "decoder_num_attention_heads"),
    ("norm_pix_loss", "norm_pix_loss"),
    ("mask_ratio", "mask_ratio"),
)
# ViTMAEConfig's defaults for the values its weights cannot tell (a config.json may omit them).
HF_DEFAULTS = {"layer_norm_eps": 1e-12, "norm_pix_loss": False, "mask_ratio": 0.75}
HF_MLP = (("mlp_ratio", "intermediate_size", "hidden_size"),
          ("decoder_mlp_ratio", "decoder_intermediate_size", "decoder_hidden_size"))

# ModelConfig field <- transformers' VideoMAEConfig key (VideoMAEForPreTraining, VideoMAEForVideoClassification).
VIDEOMAE_CONFIG: tuple[tuple[str, str], ...] = (
    ("img_size", "image_size"),
    ("patch_size", "patch_size"),
    ("in_chans", "num_channels"),
    ("num_frames", "num_frames"),
    ("tubelet_size", "tubelet_size"),
    ("embed_dim", "hidden_size"),
    ("depth", "num_hidden_layers"),
    ("num_heads", "num_attention_heads"),
    ("qkv_bias", "qv_bias"),
    ("norm_eps", "layer_norm_eps"),
    ("decoder_embed_dim", "decoder_hidden_size"),
    ("decoder_depth", "decoder_num_hidden_layers"),
    ("decoder_num_heads", "decoder_num_attention_heads"),
    ("norm_pix_loss", "norm_pix_loss"),
    ("mask_ratio", "mask_ratio"),  # not VideoMAEConfig's: our exports add it, transformers keeps it as it is
)
# VideoMAEConfig's defaults, which transformers uses for what a config.json omits (and VideoMAE's mask ratio).
# `use_mean_pooling` (default true: no final norm) is read when stated; else the weights say.
VIDEOMAE_DEFAULTS = {"image_size": 224, "patch_size": 16, "num_channels": 3, "num_frames": 16, "tubelet_size": 2,
                     "num_attention_heads": 12, "layer_norm_eps": 1e-12, "qv_bias": True,
                     "decoder_num_attention_heads": 6, "norm_pix_loss": True, "mask_ratio": 0.9}
# What transformers' VideoMAE is, whatever its config says: no cls token, no key bias, a bias-free
# encoder_to_decoder, the fixed 1-D sin-cos tables, tube masking, VideoMAE's target, and PyTorch's default
# eps (1e-5) in decoder.norm and fc_norm.
VIDEOMAE_FIXED = {"cls_token": False, "k_bias": False, "decoder_embed_bias": False, "pos_embed_type": "sincos",
                  "mask_type": "tube", "pixel_target": "videomae", "decoder_norm_eps": 1e-5, "fc_norm_eps": 1e-5}


def mlp_ratio(hidden: int, width: int) -> float:
    """The ratio our Mlp turns back into `hidden`: it sizes its layer as int(width * ratio), and
    hidden / width can land a hair below (61 / 28 * 28 < 61)."""
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else math.nextafter(ratio, math.inf)


def is_decoder_key(key: str) -> bool:
    return key == "mask_token" or key.startswith("decoder_")


def is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


@functools.lru_cache(maxsize=None)
def _pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)") + r"(?P<suffix>\.weight|\.bias)?")


def _names(side: str | tuple[str, ...]) -> tuple[str, ...]:
    return (side,) if isinstance(side, str) else side


def _find(key: str, rules: tuple[Rule, ...], side: int) -> tuple[Rule, int, str, str] | None:
    """The rule whose `side` (0 ours, 1 theirs) names `key`: (rule, which of its names, block index, suffix)."""
    for rule in rules:
        for j, name in enumerate(_names(rule[side])):
            m = _pattern(name).fullmatch(key)
            if m:
                return rule, j, m.groupdict().get("i", ""), m.group("suffix") or ""
    return None


def _fill(name: str, i: str, suffix: str) -> str:
    return name.replace("{i}", i) + suffix


def from_ours(state_dict: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Our state dict in `layout`'s names, qkv split in three."""
    out = {}
    for key, value in state_dict.items():
        hit = _find(key, LAYOUTS[layout], side=0)
        if hit is None:
            out[key] = value
            continue
        (_, theirs), _, i, suffix = hit
        names = [_fill(n, i, suffix) for n in _names(theirs)]
        parts = [p.clone() for p in value.chunk(len(names))] if len(names) > 1 else [value]
        out.update(zip(names, parts))
    return out


def to_ours(state_dict: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    """`layout`'s state dict in our names, q, k and v fused. Keys no rule knows are kept as they are, and
    so are the pieces of an incomplete q/k/v triple: the loader reports them as unexpected."""
    out, pieces = {}, {}
    for key, value in state_dict.items():
        hit = _find(key, LAYOUTS[layout], side=1)
        if hit is None:
            out[key] = value
            continue
        (ours, theirs), j, i, suffix = hit
        pieces.setdefault((_fill(ours, i, suffix), len(_names(theirs))), {})[j] = (key, value)
    for (name, count), got in pieces.items():
        if len(got) == count:
            out[name] = torch.cat([got[j][1] for j in range(count)]) if count > 1 else got[0][1]
        else:
            out.update(got.values())
    return out


def hf_layout(keys) -> str:
    """The Hugging Face layout whose names cover the most of `keys`."""
    keys = list(keys)

    def covered(layout: str) -> int:
        return sum(_find(k, LAYOUTS[layout], side=1) is not None for k in keys)

    return max(HF_LAYOUTS, key=covered)


def is_videomae(state_dict: dict[str, Tensor]) -> bool:
    """Whether a state dict is transformers' VideoMAE: under `videomae.`, or a bare `VideoMAEModel` (a
    Conv3d projection)."""
    projection = state_dict.get("embeddings.patch_embeddings.projection.weight")
    return any(k.startswith("videomae.") for k in state_dict) or (projection is not None and projection.dim() == 5)


def add_vit_prefix(state_dict: dict[str, Tensor], prefix: str = "vit") -> dict[str, Tensor]:
    """A bare `ViTModel` (`VideoMAEModel`) names its modules `embeddings.*`, `encoder.layer.N.*` (or
    `layers.N.*`) and `layernorm.*`; inside the MAE and the classifier they sit under `vit.` (`videomae.`)."""
    if any(k.startswith(prefix + ".") for k in state_dict):
        return state_dict
    return {f"{prefix}.{k}": v for k, v in state_dict.items()}


def config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig values a Hugging Face config.json states (with ViTMAEConfig's defaults)."""
    return _config_values({**HF_DEFAULTS, **config}, HF_CONFIG)


def config_from_videomae(config: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig values a transformers VideoMAE config.json states, with VideoMAEConfig's defaults (as
    transformers reads it) and what every VideoMAE is (VIDEOMAE_FIXED). `use_mean_pooling` removes the
    encoder's final norm."""
    if "qkv_bias" in config and "qv_bias" not in config:  # the hub's older name, which transformers still reads
        config = {**config, "qv_bias": config["qkv_bias"]}
    config = {**VIDEOMAE_DEFAULTS, **config}
    patch = config["patch_size"]
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise CheckpointError(f"patch_size {patch}: only square patches are supported")
        config["patch_size"] = patch[0]
    values = {**_config_values(config, VIDEOMAE_CONFIG), **VIDEOMAE_FIXED}
    if "use_mean_pooling" in config:
        values["encoder_norm"] = not config["use_mean_pooling"]
    return values


def _config_values(config: dict[str, Any], table: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {config['hidden_act']!r} is not supported (the MAE uses exact GELU)")
    values = {ours: config[theirs] for ours, theirs in table if theirs in config}
    try:
        if "img_size" in values:
            values["img_size"] = to_2tuple(values["img_size"])
        for ratio, inner, width in HF_MLP:
            if inner in config and width in config:
                values[ratio] = mlp_ratio(config[inner], config[width])
    except (TypeError, ValueError, ZeroDivisionError) as err:  # e.g. "image_size": null, "hidden_size": 0
        raise CheckpointError(f"image_size, hidden_size or intermediate_size is not a size ({err})") from None
    return values


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """config.json of a `ViTMAEForPreTraining`. Its decoder assumes a square patch grid."""
    h, w = config.img_size
    if h != w:
        raise CheckpointError(f"img_size {h}x{w}: Hugging Face's ViTMAE supports square images only")
    out = {"architectures": ["ViTMAEForPreTraining"], "model_type": "vit_mae"}
    return {**out, **_config_keys(config, HF_CONFIG, h)}


def config_to_videomae(config: ModelConfig, architecture: str, use_mean_pooling: bool) -> dict[str, Any]:
    """config.json of a transformers `architecture` (VideoMAEForPreTraining, VideoMAEForVideoClassification)
    equal to a model of `config`. `use_mean_pooling`: no final norm in the encoder (and, in a classifier,
    the mean token through fc_norm)."""
    h, w = config.img_size
    out = {"architectures": [architecture], "model_type": "videomae", "use_mean_pooling": use_mean_pooling}
    return {**out, **_config_keys(config, VIDEOMAE_CONFIG, h if h == w else [h, w])}


def _config_keys(config: ModelConfig, table: tuple[tuple[str, str], ...], image_size: Any) -> dict[str, Any]:
    values = {**config.to_dict(), "img_size": image_size}
    out = {theirs: values[ours] for ours, theirs in table}
    for ratio, inner, width in HF_MLP:
        out[inner] = int(out[width] * values[ratio])  # as our Mlp sizes its hidden layer
    out.update(hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
               initializer_range=0.02)
    return out

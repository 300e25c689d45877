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
}
HF_LAYOUTS = ("hf_hub", "hf_v5_saved", "hf_v5_memory")
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


def add_vit_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A bare `ViTModel` names its modules `embeddings.*`, `encoder.layer.N.*` (or `layers.N.*`) and
    `layernorm.*`; inside the MAE and the classifier they sit under `vit.`."""
    if any(k.startswith("vit.") for k in state_dict):
        return state_dict
    return {f"vit.{k}": v for k, v in state_dict.items()}


def config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig values a Hugging Face config.json states (with ViTMAEConfig's defaults)."""
    config = {**HF_DEFAULTS, **config}
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {config['hidden_act']!r} is not supported (the MAE uses exact GELU)")
    values = {ours: config[theirs] for ours, theirs in HF_CONFIG if theirs in config}
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
    values = {**config.to_dict(), "img_size": h}
    out = {"architectures": ["ViTMAEForPreTraining"], "model_type": "vit_mae"}
    out.update((theirs, values[ours]) for ours, theirs in HF_CONFIG)
    for ratio, inner, width in HF_MLP:
        out[inner] = int(out[width] * values[ratio])  # as our Mlp sizes its hidden layer
    out.update(hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
               initializer_range=0.02)
    return out

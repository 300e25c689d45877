"""Models from checkpoints of any format: a MaskedAutoencoder, a fine-tuned ViTClassifier, or whichever
of them holds a checkpoint's encoder.

    model = load_pretrained("mae_pretrain_vit_base.pth")      # encoder only: warns, decoder fresh
    model = load_pretrained("hf-dir/", img_size=448)          # position tables resized
    model = load_classifier("runs/finetune")                  # ours, official, timm or HF fine-tuned
    model = load_classifier("runs/pretrain", num_classes=10)  # an MAE's encoder with a new head

Loading never drops a key silently: a missing decoder is one MissingDecoderWarning (classification heads
of fine-tuned models are left out and named in it); any other missing, unexpected or mis-shaped key is a
CheckpointError that names them. The architecture comes from architecture.infer_config.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..model import MaskedAutoencoder, sincos_pos_embed
from ..model.classifier import ViTClassifier, from_pretrained_encoder
from ..model.flat_names import flat_state_dict, load_flat_state_dict
from .architecture import infer_config
from .checkpoint import Checkpoint
from .formats import read_checkpoint
from .hf import rename_head
from .keymaps import is_decoder_key, is_head_key, to_ours
from .safe_load import CheckpointError, check_fits, name_list

# The linear head of a fine-tuned checkpoint, as each format names it (Hugging Face: `classifier.*`).
HEAD_PREFIX = {"hf": "classifier."}


class MissingDecoderWarning(UserWarning):
    """The checkpoint holds an encoder only; the decoder was initialised fresh."""


@dataclass
class LoadedMAE:
    model: MaskedAutoencoder
    checkpoint: Checkpoint
    decoder_present: bool
    left_out: list[str]  # classifier keys not loaded


def is_fine_tuned(ckpt: Checkpoint) -> bool:
    """Whether `ckpt` is a fine-tuned classifier, whose weights belong in a ViTClassifier, not an MAE: a
    linear head and no decoder."""
    head = HEAD_PREFIX.get(ckpt.format, "head.")
    keys = ckpt.state_dict
    return any(k.startswith(head) for k in keys) and not any("decoder" in k for k in keys)


def load_pretrained(path: str | Path, **overrides: Any) -> MaskedAutoencoder:
    """A MaskedAutoencoder from a vitmae, official, Hugging Face or timm checkpoint (file, directory, run
    directory, or a Hugging Face model id in the local cache). `overrides` are ModelConfig fields:
    `num_heads`, `decoder_num_heads` and `norm_eps` for a file that does not record them; `img_size` may
    differ from the checkpoint's (the position tables are resized); the shape fields may not differ from
    the weights."""
    loaded = mae_from_checkpoint(read_checkpoint(path), overrides)
    if not loaded.decoder_present:
        warn_no_decoder(loaded, "loaded the encoder and initialised the decoder fresh")
    return loaded.model


def load_encoder(path: str | Path, **overrides: Any) -> MaskedAutoencoder | ViTClassifier:
    """The model holding the encoder of any checkpoint, for transfer (its `.encoder`): a MaskedAutoencoder
    (`load_pretrained`; a missing decoder is expected here and not warned about) or, for a fine-tuned
    file, its ViTClassifier."""
    ckpt = read_checkpoint(path)
    if is_fine_tuned(ckpt):
        return classifier_from_checkpoint(ckpt, overrides)
    return mae_from_checkpoint(ckpt, dict(overrides), decoder_unused=True).model


def load_classifier(path: str | Path, num_classes: int | None = None, global_pool: str | None = None,
                    drop_path_rate: float = 0.0, **overrides: Any) -> ViTClassifier:
    """A ViTClassifier from a vitmae fine-tuning run or checkpoint, an official fine-tuned `.pth`, a timm
    classifier or a Hugging Face `ViTForImageClassification` directory; or, with `num_classes`, from any
    checkpoint: a classifier with that many classes (and `global_pool`, when given) keeps its head, any
    other checkpoint gives its encoder a new head (`from_pretrained_encoder`: `global_pool` "avg" unless
    given, head at trunc_normal(2e-5)). `overrides` are ModelConfig fields (e.g. `img_size`: a learned
    position table is interpolated to it; `num_heads` for a file that does not record them)."""
    ckpt = read_checkpoint(path)
    if num_classes is None:
        return classifier_from_checkpoint(ckpt, overrides)
    if is_fine_tuned(ckpt):
        encoder = classifier_from_checkpoint(ckpt, overrides)
        if encoder.num_classes == num_classes and global_pool in (None, encoder.global_pool):
            return encoder.train()
    else:
        encoder = mae_from_checkpoint(ckpt, dict(overrides), decoder_unused=True).model
    return from_pretrained_encoder(encoder, num_classes, global_pool or "avg", drop_path_rate)


def mae_from_checkpoint(ckpt: Checkpoint, overrides: dict[str, Any], decoder_unused: bool = False) -> LoadedMAE:
    """The MaskedAutoencoder of `ckpt`, the decoder fresh if the file has none (and any classification
    head left out); `decoder_unused`: see architecture.infer_config."""
    state = to_ours(ckpt.state_dict, ckpt.layout)
    decoder_present = any(is_decoder_key(k) for k in state)
    left_out = [] if decoder_present else sorted(k for k in state if is_head_key(k))
    state = {k: v for k, v in state.items() if k not in left_out}
    config, resize = infer_config(ckpt, state, overrides, decoder_unused)
    model = MaskedAutoencoder(config)
    check_fits(f"{ckpt.path}: does not fit the model", state, flat_state_dict(model),
               optional=lambda key: not decoder_present and is_decoder_key(key))
    load_flat_state_dict(model, state, strict=False)  # strictness is check_fits' job: it allows a missing decoder
    for name, owner in position_tables(model).items():
        if name in state and not _is_sincos(state[name], config.grid_size):
            owner.learn_pos_embed()  # a stored table that is not the sin-cos one was learned
    if resize:
        model = _resized(model, resize)
    return LoadedMAE(model, ckpt, decoder_present, left_out)


def classifier_from_checkpoint(ckpt: Checkpoint, overrides: dict[str, Any]) -> ViTClassifier:
    """The ViTClassifier of a fine-tuned `ckpt`, with its class names and input normalisation."""
    state = _classifier_state(ckpt)
    if not any(k.startswith("head.") for k in state):
        raise CheckpointError(f"{ckpt.path}: not a classifier (no head.* or classifier.* weights); "
                              "fine-tune it first with `vitmae finetune`")
    state = {k: v for k, v in state.items() if not is_decoder_key(k)}
    global_pool = "avg" if "fc_norm.weight" in state else "token"
    config, resize = infer_config(ckpt, {k: v for k, v in state.items() if not k.startswith("head.")},
                                  dict(overrides))
    model = ViTClassifier(config, state["head.weight"].shape[0], global_pool)
    check_fits(f"{ckpt.path}: does not fit a {global_pool}-pool classifier", state, flat_state_dict(model))
    if resize:
        load_flat_state_dict(model, state)
        resized = ViTClassifier(config.replace(**resize), model.num_classes, global_pool)
        state = {**state, **_tables_for(model.encoder, resized.encoder)}
        model = resized
    load_flat_state_dict(model, state)
    model.class_names, model.normalization = ckpt.class_names, ckpt.normalization
    return model.eval()


def warn_no_decoder(loaded: LoadedMAE, consequence: str) -> None:
    """One MissingDecoderWarning, at the caller of the public function that called this one."""
    message = f"{loaded.checkpoint.path} has no decoder (mask_token, decoder_*): {consequence}"
    if loaded.left_out:
        message += f"; left out the classifier keys {name_list(loaded.left_out)}"
    warnings.warn(message, MissingDecoderWarning, stacklevel=3)


def _classifier_state(ckpt: Checkpoint) -> dict[str, Tensor]:
    """The weights in our names, a Hugging Face classifier's head included."""
    state = to_ours(ckpt.state_dict, ckpt.layout)
    return rename_head(state, to_theirs=False) if ckpt.format == "hf" else state


def _is_sincos(table: Tensor, grid: tuple[int, int]) -> bool:
    """Whether a stored table is the fixed sin-cos one, compared in its own dtype (a half-precision copy
    of the sin-cos table still is one)."""
    expected = sincos_pos_embed(table.shape[-1], grid)[None].to(table.dtype)
    return bool((table.float() - expected.float()).abs().max() <= 1e-5)


def position_tables(model: MaskedAutoencoder) -> dict[str, nn.Module]:
    """Each position table's flat name -> the component that holds it (and knows its kind)."""
    return {"pos_embed": model.encoder, "decoder_pos_embed": model.decoder}


def _resized(model: MaskedAutoencoder, resize: dict[str, Any]) -> MaskedAutoencoder:
    """The model for another input size (`img_size`, `num_frames`), its position tables resized as the
    encoder would resize them (`ModelConfig.pos_embed_resize`); a learned table stays learned."""
    resized = MaskedAutoencoder(model.config.replace(**resize))
    state = flat_state_dict(model)
    for name, owner in position_tables(model).items():
        new = position_tables(resized)[name]
        state.update(_tables_for(owner, new))
        if owner.pos_embed_kind == "learned":
            new.learn_pos_embed()
    load_flat_state_dict(resized, state)
    return resized


def _tables_for(owner: nn.Module, new: nn.Module) -> dict[str, Tensor]:
    """The stored position tables of the component `owner`, resized for the component `new` of a model
    of another input size."""
    return {name: table.detach() for name, table in owner.stored_tables_for(new.built_grid).items()}

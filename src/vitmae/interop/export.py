"""Writing a model in any format: an MAE (`export`), a fine-tuned classifier (`export_classifier`), and a
checkpoint of any format converted to another (`convert`).

    export(model, "out-dir/", "hf")                              # loads in every transformers version
    export_classifier(model, "clf.safetensors", "timm")          # timm VisionTransformer, strict load
    export_classifier(model, "hf-clf/", "hf")                    # ViTForImageClassification (cls token)

A directory given for `timm` or `official` gets `model.safetensors` / `model.pth` inside; a file name
without that extension gets it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..model import MaskedAutoencoder
from ..model.classifier import ViTClassifier
from ..model.flat_names import flat_state_dict
from .checkpoint import FORMATS
from .formats import read_checkpoint
from .hf import write_hf_classifier, write_hf_mae
from .keymaps import from_ours, is_decoder_key
from .loading import classifier_from_checkpoint, is_fine_tuned, mae_from_checkpoint, warn_no_decoder
from .official import write_official
from .safe_load import CheckpointError
from .timm import write_timm
from .vitmae_format import save_vitmae

CLASSIFIER_FORMATS = ("vitmae", "timm", "official", "hf")


def export(model: MaskedAutoencoder, path: str | Path, format: str, *, encoder_only: bool = False) -> Path:
    """Write `model` as `format`:
    - `vitmae`: our format (see save_vitmae);
    - `hf`: a directory a `ViTMAEForPreTraining` loads: config.json + model.safetensors in the hub layout;
    - `timm`: encoder-only safetensors for timm's VisionTransformer (timm reads a `mask_token` as DINOv2's
      and stumbles on `decoder_*` keys), with timm's model arguments in its metadata (see timm.timm_args);
    - `official`: `{'model': state_dict, 'vitmae': {...}}`: the official scripts read 'model', we read
      the config recorded under 'vitmae' (see vitmae_format.model_record); a video model in the official
      VideoMAE pre-training names (`encoder.*`, `decoder.*`, `encoder_to_decoder`).
    A video model goes to `hf` as a `VideoMAEForPreTraining`; timm has no video ViT."""
    path = Path(path)
    encoder_only = encoder_only or format == "timm"
    state = {k: v for k, v in flat_state_dict(model).items() if not (encoder_only and is_decoder_key(k))}
    if format == "vitmae":
        return save_vitmae(model, path, encoder_only=encoder_only)
    if format == "hf":
        return write_hf_mae(model, state, path)
    if format == "official" and model.config.is_video:
        state = from_ours(state, "videomae_official")  # VideoMAE's pre-training model: encoder.*, decoder.*
    return export_weights(model, state, path, format, FORMATS)


def export_classifier(model: ViTClassifier, path: str | Path, format: str,
                      class_names: list[str] | None = None) -> Path:
    """Write a classifier as `format`:
    - `timm`: a safetensors state dict that timm's `VisionTransformer(global_pool='avg', fc_norm=True)`
      (or `global_pool='token'` for a cls-token classifier) loads with strict=True; its metadata holds
      timm's model arguments (see timm.timm_args);
    - `official`: `{'model': state_dict, 'vitmae': {...}}`, as official fine-tuning saves it plus our record;
    - `hf`: a `ViTForImageClassification` directory (config.json with the class names, model.safetensors in
      the hub layout, preprocessor_config.json), for a cls-token classifier only;
    - `vitmae`: our format (the weights name the pooling: `fc_norm.*` means average pooling)."""
    path = Path(path)
    if class_names:
        model.class_names = list(class_names)
    state = {k: v.detach().cpu() for k, v in flat_state_dict(model).items()}
    if format == "vitmae":
        return save_vitmae(model, path)
    if format == "hf":
        return write_hf_classifier(model, state, path)
    return export_weights(model, state, path, format, CLASSIFIER_FORMATS)


def convert(src: str | Path, dst: str | Path, to: str, **overrides: Any) -> Path:
    """Read any checkpoint and export it as `to`. A checkpoint without a decoder converts to one without a
    decoder; a fine-tuned classifier converts as a classifier (`export_classifier`), head included."""
    ckpt = read_checkpoint(src)
    if is_fine_tuned(ckpt):
        return export_classifier(classifier_from_checkpoint(ckpt, overrides), dst, to)
    loaded = mae_from_checkpoint(ckpt, overrides)
    if not loaded.decoder_present:
        warn_no_decoder(loaded, "wrote the encoder only")
    return export(loaded.model, dst, to, encoder_only=not loaded.decoder_present)


def export_weights(model: nn.Module, state: dict[str, Tensor], path: Path, format: str,
                   formats: tuple[str, ...]) -> Path:
    """`state` as a `timm` or `official` file of `model`, with what rebuilds it recorded."""
    if format == "timm" and model.config.is_video:
        raise CheckpointError("timm has no video ViT: export a video model as vitmae, hf or official")
    if format == "timm":
        return write_timm(model, state, path)
    if format == "official":
        return write_official(model, state, path)
    raise CheckpointError(f"unknown format {format!r}; choose from: {', '.join(formats)}")

"""Fine-tuned classifiers: load them from any format, export them to timm and Hugging Face.

    model = load_classifier("runs/finetune")                     # ours, official, timm or HF fine-tuned
    model = load_classifier("runs/pretrain", num_classes=10)     # an MAE's encoder with a new head
    export_classifier(model, "clf.safetensors", "timm")          # timm VisionTransformer, strict load
    export_classifier(model, "hf-clf/", "hf")                    # ViTForImageClassification (cls token)

Official fine-tuned files (`fc_norm.*`, `head.*`, no `norm.*`) and timm classifiers use our names; Hugging
Face's `ViTForImageClassification` uses the ViT names of keymaps plus `classifier.*` for the head. It
classifies from the cls token after the final norm, so only a `global_pool="token"` classifier (fine-tuned
with `--pool cls`) can be written for it; an average-pooling one is refused with a clear error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from ..model.classifier import ViTClassifier, from_pretrained_encoder
from ..model.mae import MaskedAutoencoder
from ..model.grid import resize_pos_embed
from .formats import HF_PREPROCESSOR, Checkpoint, read_checkpoint
from .keymaps import HF_CLASSIFIER_HEAD, HF_CONFIG, from_ours, is_decoder_key, to_ours
from .safe_load import CheckpointError, check_fits
from .vitmae_format import CONFIG, WEIGHTS, atomic_write, model_record, save_safetensors, save_vitmae

CLASSIFIER_FORMATS = ("vitmae", "timm", "official", "hf")
# ModelConfig fields a ViTConfig holds (the encoder half of HF_CONFIG).
HF_ENCODER_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "qkv_bias",
                     "norm_eps")
HF_BICUBIC = 3  # PIL.Image.BICUBIC, as transformers' `resample` names it


def is_classifier(state: dict[str, Tensor]) -> bool:
    return any(k.startswith(("head.", "classifier.")) for k in state)


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
    if is_classifier(_our_names(ckpt)):
        encoder = classifier_from_checkpoint(ckpt, overrides)
        if encoder.num_classes == num_classes and global_pool in (None, encoder.global_pool):
            return encoder.train()
    else:
        encoder = _load_encoder(ckpt, overrides)
    return from_pretrained_encoder(encoder, num_classes, global_pool or "avg", drop_path_rate)


def classifier_from_checkpoint(ckpt: Checkpoint, overrides: dict[str, Any]) -> ViTClassifier:
    from . import _config  # the architecture from weights + stated config + overrides, as load_pretrained

    state = _our_names(ckpt)
    if not any(k.startswith("head.") for k in state):
        raise CheckpointError(f"{ckpt.path}: not a classifier (no head.* or classifier.* weights); "
                              "fine-tune it first with `vitmae finetune`")
    state = {k: v for k, v in state.items() if not is_decoder_key(k)}
    global_pool = "avg" if "fc_norm.weight" in state else "token"
    encoder = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    config, img_size = _config(ckpt, encoder, dict(overrides))
    model = ViTClassifier(config, state["head.weight"].shape[0], global_pool)
    expected = model.state_dict()
    check_fits(f"{ckpt.path}: does not fit a {global_pool}-pool classifier", state, expected)
    if img_size != config.img_size:
        resized = ViTClassifier(config.replace(img_size=img_size), model.num_classes, global_pool)
        state = {**state, "pos_embed": resize_pos_embed(state["pos_embed"], model.encoder.grid_size,
                                                            resized.encoder.grid_size)}
        model = resized
    model.load_state_dict(state)
    model.class_names, model.normalization = ckpt.class_names, ckpt.normalization
    return model.eval()


def load_encoder(path: str | Path, **overrides: Any) -> MaskedAutoencoder | ViTClassifier:
    """The model holding the encoder of any checkpoint, for transfer (its `.encoder`): a MaskedAutoencoder
    (`load_pretrained`; a missing decoder is expected here and not warned about) or, for a fine-tuned
    file, its ViTClassifier."""
    ckpt = read_checkpoint(path)
    if is_classifier(_our_names(ckpt)):
        return classifier_from_checkpoint(ckpt, overrides)
    return _load_encoder(ckpt, overrides)


def _load_encoder(ckpt: Checkpoint, overrides: dict[str, Any]) -> MaskedAutoencoder:
    from . import _load

    return _load(ckpt, dict(overrides), decoder_unused=True).model


def export_classifier(model: ViTClassifier, path: str | Path, format: str,
                      class_names: list[str] | None = None) -> Path:
    """Write a classifier as `format`:
    - `timm`: a safetensors state dict that timm's `VisionTransformer(global_pool='avg', fc_norm=True)`
      (or `global_pool='token'` for a cls-token classifier) loads with strict=True; its metadata holds
      timm's model arguments (see interop.timm_args);
    - `official`: `{'model': state_dict, 'vitmae': {...}}`, as official fine-tuning saves it plus our record;
    - `hf`: a `ViTForImageClassification` directory (config.json with the class names, model.safetensors in
      the hub layout, preprocessor_config.json), for a cls-token classifier only;
    - `vitmae`: our format (the weights name the pooling: `fc_norm.*` means average pooling).
    A directory given for `timm` or `official` gets `model.safetensors` / `model.pth` inside; a file name
    without that extension gets it."""
    from . import export_weights

    path = Path(path)
    if class_names:
        model.class_names = list(class_names)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if format == "vitmae":
        return save_vitmae(model, path)
    if format == "hf":
        if model.global_pool != "token":
            raise CheckpointError(
                "Hugging Face's ViTForImageClassification classifies from the cls token, but this model "
                "averages the patch tokens (global_pool avg, fc_norm): export it to timm, or fine-tune with "
                "--pool cls to get a model Hugging Face can run")
        hub = _rename_head(from_ours(state, "hf_hub"), to_theirs=True)
        return write_hf_dir(hub, hf_classifier_config(model, getattr(model, "class_names", None)), model, path)
    return export_weights(model, state, path, format, CLASSIFIER_FORMATS)


def write_hf_dir(hub_state: dict[str, Tensor], config: dict[str, Any], model, path: Path) -> Path:
    """A Hugging Face model directory: model.safetensors, config.json and the preprocessor_config.json of
    a `ViTImageProcessor` that resizes (bicubic) and normalises as `model`'s inputs were."""
    from . import _default_normalization

    c = model.config
    normalization = model_record(model).get("normalization") or _default_normalization(c.in_chans)
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": c.img_size[0], "width": c.img_size[1]}, "resample": HF_BICUBIC,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": normalization["mean"], "image_std": normalization["std"]}
    save_safetensors(hub_state, path / WEIGHTS, metadata={"format": "pt"})
    for name, content in ((CONFIG, config), (HF_PREPROCESSOR, processor)):
        text = json.dumps(content, indent=2) + "\n"
        atomic_write(path / name, lambda tmp: tmp.write_text(text))
    return path


def hf_classifier_config(model: ViTClassifier, class_names: list[str] | None = None) -> dict[str, Any]:
    """config.json of a transformers `ViTForImageClassification` equal to `model`."""
    c = model.config
    values = {**c.to_dict()}
    h, w = c.img_size
    values["img_size"] = h if h == w else [h, w]
    out: dict[str, Any] = {"architectures": ["ViTForImageClassification"], "model_type": "vit"}
    out.update((theirs, values[ours]) for ours, theirs in HF_CONFIG if ours in HF_ENCODER_FIELDS)
    out.update(intermediate_size=int(c.embed_dim * c.mlp_ratio), hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, initializer_range=0.02, encoder_stride=c.patch_size)
    names = list(class_names or [])[: model.num_classes]
    names += [f"LABEL_{i}" for i in range(len(names), model.num_classes)]
    out["id2label"] = {str(i): name for i, name in enumerate(names)}
    out["label2id"] = {name: i for i, name in enumerate(names)}
    return out


def _our_names(ckpt: Checkpoint) -> dict[str, Tensor]:
    state = to_ours(ckpt.state_dict, ckpt.layout)
    return _rename_head(state, to_theirs=False) if ckpt.format == "hf" else state


def _rename_head(state: dict[str, Tensor], to_theirs: bool) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for ours, theirs in HF_CLASSIFIER_HEAD:
            old, new = (ours, theirs) if to_theirs else (theirs, ours)
            if key.startswith(old + "."):
                key = new + key[len(old):]
        out[key] = value
    return out

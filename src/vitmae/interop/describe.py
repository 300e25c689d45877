"""What `vitmae info` prints about a checkpoint of any format."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model.flat_names import flat_named_parameters
from .formats import read_checkpoint
from .keymaps import is_decoder_key
from .loading import classifier_from_checkpoint, is_fine_tuned, mae_from_checkpoint, position_tables


def describe(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """Format, architecture (LayerNorm eps and heads included), what of it is assumed by convention rather
    than recorded in the file, parameter counts, whether the decoder is there (for a fine-tuned
    classifier: its classes, pooling and input normalisation instead)."""
    ckpt = read_checkpoint(path)
    if is_fine_tuned(ckpt):
        classifier = classifier_from_checkpoint(ckpt, overrides)
        return {
            "path": str(ckpt.path), "format": ckpt.format, "layout": ckpt.layout, "kind": "classifier",
            "architecture": classifier.config.to_dict(), "norm_eps": classifier.config.norm_eps,
            "assumed": ckpt.assumed, "num_classes": classifier.num_classes,
            "class_names": classifier.class_names, "normalization": ckpt.normalization,
            "global_pool": classifier.global_pool,
            "parameters": {"total": sum(p.numel() for p in classifier.parameters())},
        }
    loaded = mae_from_checkpoint(ckpt, overrides)
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
        "learned_position_tables": [name for owner in position_tables(model).values()
                                    if owner.pos_embed_kind == "learned" for name in owner.stored_tables()],
        "left_out": loaded.left_out,
    }

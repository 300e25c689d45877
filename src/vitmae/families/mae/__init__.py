"""The masked-autoencoder family (pre-training): a fresh MAE recording its input normalisation, the
masked-patch objective, the held-out loss and kNN monitors, the pre-training data, the presets, and the
demo that masks an image and shows the reconstruction."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...model.vit import param_groups
from ..masked import MAEObjective, build_mae, mae_shard_units
from ..spec import FamilySpec, register_family
from .data import heldout_images, heldout_source, pretrain_data
from .monitors import HeldoutMonitor, KnnMonitor
from .presets import preset_lines, presets

__all__ = ["FAMILY", "HeldoutMonitor", "KnnMonitor", "MAEObjective", "build_model", "heldout_images",
           "heldout_source", "preset_lines", "presets", "pretrain_data", "shard_units"]


build_model, shard_units = build_mae, mae_shard_units  # shared with the video family (families/masked.py)


def serve(checkpoint: str | Path, port: int | None, host: str, overrides: dict[str, Any]) -> tuple[Any, str]:
    from ...demo import serve as serve_mae  # gradio: only for the demo

    return serve_mae(checkpoint, port, host, **overrides)


FAMILY = register_family(FamilySpec(
    "mae", "masked-autoencoder pre-training", build_model=build_model, shard_units=shard_units,
    param_groups=lambda model, weight_decay, layer_decay: param_groups(model, weight_decay),
    objective=MAEObjective, evaluators=(HeldoutMonitor, KnnMonitor), serve=serve))

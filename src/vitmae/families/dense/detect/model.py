"""The detector of a run: ViTDet (torchvision's Faster / Mask R-CNN on the ViTDet backbone) on the encoder,
rebuilt from a run's record and checkpoint afterwards, and what FSDP shards of it."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ....interop import CheckpointError
from ....model import ViTEncoder
from ....model.detection import vitdet
from ....options import check_block_indices
from ...run import Run, find_record, rebuild_run
from ..record import DetectRecord


def build_model(encoder: ViTEncoder, num_classes: int, masks: bool, img_size: tuple[int, int], window_size: int,
                global_blocks: tuple[int, ...] | None, pyramid_channels: int, proposals: int,
                detections_per_image: int, rois_per_image: int, drop_path: float, seed: int) -> nn.Module:
    """The detector on `encoder`, its heads initialised from `seed`."""
    check_block_indices("global_blocks", global_blocks, len(encoder.blocks))
    torch.manual_seed(seed)
    return vitdet(encoder, num_classes, masks, img_size, window_size, list(global_blocks) if global_blocks else None,
                  pyramid_channels, proposals, detections_per_image, rois_per_image, drop_path)


def model_from_record(encoder: ViTEncoder, record: DetectRecord) -> nn.Module:
    return vitdet(encoder, len(record.classes), record.masks, tuple(record.img_size), record.window_size,
                  record.global_blocks, record.pyramid_channels, record.proposals, record.detections_per_image)


def load_run(checkpoint: str | Path, record: DetectRecord | None = None) -> Run[DetectRecord]:
    """The trained detector of a `vitmae detect` run (`checkpoint`: the run or one of its checkpoints)."""
    record = record or find_record(checkpoint, (DetectRecord,))
    if record is None:
        raise CheckpointError(f"{checkpoint}: not a `vitmae detect` run (no {DetectRecord.FILE})")
    return rebuild_run(checkpoint, record, model_from_record)


def shard_units(model: nn.Module) -> list[nn.Module]:
    return list(model.backbone.encoder.blocks)

"""The segmentation model of a run: built on a copy of the encoder for training, rebuilt from a run's record
and checkpoint afterwards, and what FSDP shards of it."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ....interop import CheckpointError
from ....model import ViTEncoder
from ....model.segmentation import Segmenter
from ....options import check_block_indices
from ...encoder import trainable_copy
from ...run import Run, find_record, rebuild_run
from ..record import SegmentRecord


def build_model(encoder: ViTEncoder, num_classes: int, head: str, out_indices: tuple[int, ...] | None,
                drop_path: float, seed: int, channels: int | None = None, aux_channels: int | None = None) -> Segmenter:
    """The segmenter on a copy of `encoder` with drop path `drop_path` (the linear probe: frozen, none),
    its heads `channels` and `aux_channels` wide (None: sized from the encoder) and initialised from `seed`."""
    torch.manual_seed(seed)
    linear = head == "linear"
    own = trainable_copy(encoder, 0.0 if linear else drop_path, frozen=linear)
    check_block_indices("out_indices", out_indices, len(own.blocks), count=4)
    return Segmenter(own, num_classes, head, list(out_indices) if out_indices else None, channels, aux_channels)


def model_from_record(encoder: ViTEncoder, record: SegmentRecord) -> Segmenter:
    return Segmenter(encoder, record.num_classes, record.head, record.out_indices, record.head_channels,
                     record.aux_channels)


def load_run(checkpoint: str | Path, record: SegmentRecord | None = None) -> Run[SegmentRecord]:
    """The trained segmenter of a `vitmae segment` run (`checkpoint`: the run or one of its checkpoints)."""
    record = record or find_record(checkpoint, (SegmentRecord,))
    if record is None:
        raise CheckpointError(f"{checkpoint}: not a `vitmae segment` run (no {SegmentRecord.FILE})")
    return rebuild_run(checkpoint, record, model_from_record)


def shard_units(model: Segmenter) -> list[nn.Module]:
    return list(model.encoder.blocks)

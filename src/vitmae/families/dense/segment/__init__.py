"""The semantic-segmentation family (`vitmae segment`): the segmenter on a copy of the encoder (its heads
registered in `model.segmentation.HEADS`), its objective and metrics, its evaluation with pictures, sliding-
window inference, the run's record (RUN/segmenter.json), and the demo's segmentation view."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ....train.run_dir import run_checkpoint
from ....viz.dense import segmentation_result
from ...spec import FamilySpec, register_family
from ..record import SegmentRecord
from .evaluation import (EVAL_BATCH, PICTURED, SegmentationEvaluator, evaluate_segmentation, evaluation_lines,
                         scores_line, segmentation_loader, segmentation_scores)
from .inference import (TTA_SCALES, predict_masks, predicted_mask, prediction_lines, segment_image,
                        sliding_window_logits, tta_probabilities)
from .metrics import SegmentationMetrics
from .model import build_model, load_run, model_from_record, shard_units
from .objective import SegmentationObjective

__all__ = ["EVAL_BATCH", "FAMILY", "PICTURED", "SegmentRecord", "SegmentationEvaluator", "SegmentationMetrics",
           "SegmentationObjective", "build_model", "evaluate_segmentation", "load_run", "model_from_record",
           "predicted_mask", "scores_line", "segment_image", "segmentation_loader", "segmentation_scores",
           "shard_units", "sliding_window_logits", "TTA_SCALES", "tta_probabilities"]


def serve(checkpoint: str | Path, port: int | None, host: str, overrides: dict[str, Any]) -> tuple[Any, str]:
    """The demo's segmentation view of a run (its best checkpoint, as `vitmae predict` takes it)."""
    from ....demo import run_examples, serve_segmentation  # gradio: only for the demo

    run = load_run(run_checkpoint(checkpoint, "best"))
    record, config = run.record, run.model.config
    segment = partial(segment_image, run.model, record.class_names, record.crop_size, record.stride)
    examples = run_examples(record.data, record.scene_size, record.seed, config.in_chans)
    return serve_segmentation(segment, config, record.crop_size, examples, port, host)


FAMILY = register_family(FamilySpec(
    "segment", "semantic segmentation on the encoder (UperNet or a linear probe)", build_model=build_model,
    shard_units=shard_units,
    param_groups=lambda model, weight_decay, layer_decay: model.param_groups(weight_decay, layer_decay),
    objective=SegmentationObjective, evaluators=(SegmentationEvaluator,), record=SegmentRecord,
    load_run=load_run, evaluate=evaluate_segmentation, predict=predict_masks, serve=serve,
    draw=segmentation_result, tta_scales=TTA_SCALES, evaluation_lines=evaluation_lines, prediction_lines=prediction_lines))

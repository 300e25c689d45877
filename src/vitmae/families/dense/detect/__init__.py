"""The detection family (`vitmae detect`): ViTDet on the encoder (torchvision's Faster / Mask R-CNN), its
objective, COCO evaluation, inference and drawing, the run's record (RUN/detector.json), and the demo's
detection view."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ....model.detection import detector_param_groups
from ....train.run_dir import run_checkpoint
from ....viz.dense import draw_detections
from ...spec import FamilySpec, register_family
from ..record import DetectRecord
from .evaluation import EVAL_BATCH, CocoEvaluator, ap_lines, coco_scores, evaluate_detection, evaluation_lines
from .inference import detect_image, detection_loader, predict_detections, prediction_lines, run_detector
from .model import build_model, load_run, model_from_record, shard_units
from .objective import DetectionObjective

__all__ = ["CocoEvaluator", "DetectRecord", "DetectionObjective", "EVAL_BATCH", "FAMILY", "ap_lines",
           "build_model", "coco_scores", "detect_image", "detection_loader", "evaluate_detection", "load_run",
           "model_from_record", "run_detector", "shard_units"]


def serve(checkpoint: str | Path, port: int | None, host: str, overrides: dict[str, Any]) -> tuple[Any, str]:
    """The demo's detection view of a run (its last checkpoint: a detection run keeps no best)."""
    from ....demo import run_examples, serve_detection  # gradio: only for the demo

    run = load_run(run_checkpoint(checkpoint, "best"))
    record, config = run.record, run.model.config
    detect = partial(detect_image, run.model, record.category_names)
    examples = run_examples(record.data, record.scene_size, record.seed, config.in_chans)
    return serve_detection(detect, config, record.category_names, examples, port, host)


FAMILY = register_family(FamilySpec(
    "detect", "object detection / instance segmentation on the encoder (ViTDet, Faster / Mask R-CNN)",
    build_model=build_model, shard_units=shard_units, param_groups=detector_param_groups,
    objective=DetectionObjective, evaluators=(CocoEvaluator,), record=DetectRecord, load_run=load_run,
    evaluate=evaluate_detection, predict=predict_detections, serve=serve, draw=draw_detections,
    evaluation_lines=evaluation_lines, prediction_lines=prediction_lines))

"""`vitmae evaluate`: a trained model on labeled images, into a JSON report (OUTPUT/metrics.json).

- A fine-tuned classifier: top-1 / top-5, per-class precision, recall and F1, a confusion matrix (PNG).
  Top-5 is left out (None) with 5 classes or fewer, where it is 100% whatever the model.
- A `vitmae segment` run: mIoU, mAcc, aAcc and per-class IoU / Acc, as the run measures them (sliding
  windows of its crop and stride, its ignore index), on the run's own validation data unless `--data`.
- A `vitmae detect` run: COCO AP, AP50, AP75, APs/m/l of the boxes (and masks) and AP per class, on the
  run's own validation data unless `--data`.

The run's record (segmenter.json, detector.json) tells a dense run from a classifier. A run directory
stands for its best checkpoint (`--which last`: its last; a detection run keeps no best).

`predict` and `topk_accuracy` (in tasks.common) are also what fine-tuning and linear probing evaluate
with every epoch; the segmentation and COCO scores are those of the segment and detect runs' evaluations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import DataError
from ..data.coco import build_detection_source
from ..data.segmentation import build_segmentation_source
from ..errors import ConfigError
from ..families import EvaluationRequest, classify
from ..interop.vitmae_format import resolve_checkpoint
from ..options import opt
from ..train import write_json
from ..train.run_dir import WHICH, run_checkpoint
from ..train.runtime import Runtime
from .common import (DenseRun, coco_scores, detection_loader, load_dense_run, segmentation_loader,
                     segmentation_scores)
from .options import InferenceOptions, Task

__all__ = ["EvaluateConfig", "evaluate"]


CLASSIFY_BATCH, DETECT_BATCH = 256, 8  # a detector takes images at their size: fewer at a time


@dataclass
class EvaluateConfig(InferenceOptions):
    """`vitmae evaluate`: a classifier's accuracy, a segmentation run's mIoU or a detection run's COCO AP."""

    output: str = opt("runs/evaluate", "directory of the report (metrics.json, a classifier's confusion_matrix.png)")
    checkpoint: str | None = opt(None, "a fine-tuned classifier (a finetune run directory or a checkpoint), or a "
                                 "`vitmae segment` or `vitmae detect` run (or one of its checkpoints)")
    data: str | None = opt(None, "a classifier's labeled images: fashion-mnist (the default) | a folder of class "
                           "sub-folders | a .csv; a segment or detect run's: fashion-scenes | a folder of its kind "
                           "(default: the run's own data)")
    split: str = opt("val", "which split: val (fashion-mnist: the test split) | train")
    which: str = opt("best", "of a run directory: best (its best validation score, as it reported; a detection "
                     "run keeps its last) | last", choices=WHICH)
    batch_size: int | None = opt(None, f"images per forward pass (default: {CLASSIFY_BATCH}; "
                                 f"{DETECT_BATCH} for a detection run)", min=1)
    num_heads: int | None = opt(None, "attention heads of a checkpoint that does not record them", min=1)
    norm_eps: float | None = opt(None, "LayerNorm epsilon of a checkpoint that does not record it", above=0)


def evaluate_segmentation(run: DenseRun, cfg: EvaluateConfig, runtime: Runtime) -> dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU / Acc of a segmentation run, measured as the run measures them."""
    info, model = run.info, run.model.to(runtime.device)
    config = model.config
    source = build_segmentation_source(cfg.data or info["data"], cfg.split, info["num_classes"], info["ignore_index"],
                                       info["reduce_zero_label"], config.in_chans, info["seed"], info["scene_size"],
                                       info["scenes"], info.get("val_scenes"))
    loader = segmentation_loader(source, info["crop_size"], config.mean, config.std, cfg.batch_size or CLASSIFY_BATCH,
                                 cfg.num_workers)
    scores, skipped = segmentation_scores(model, loader, info["num_classes"], info["ignore_index"], info["crop_size"],
                                          info["stride"], runtime, info["classes"])
    return {**scores, "images": len(source) - len(skipped), "data": cfg.data or info["data"],
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped.items()]}


def evaluate_detection(run: DenseRun, cfg: EvaluateConfig, runtime: Runtime) -> dict[str, Any]:
    """COCO AP, AP50, AP75, APs/m/l of a detection run's boxes (and masks), and AP per class."""
    info = run.info
    if "files" not in info:
        raise ConfigError(f"{run.checkpoint}: the run's detector.json is from an older vitmae, which did not record "
                          "the run's data: train it again")
    files = info["files"][cfg.split] if info["files"] and cfg.data is None else None
    source = build_detection_source(cfg.data or info["data"], cfg.split, run.model.config.in_chans, info["scenes"],
                                    info["scene_size"], info["seed"], files, info.get("val_scenes"))
    if source.category_ids != info["category_ids"]:
        raise DataError(f"the categories of {source.description} ({source.category_ids}) are not the run's "
                        f"({info['category_ids']})")
    loader = detection_loader(source, cfg.batch_size or DETECT_BATCH, cfg.num_workers)
    scores, skipped = coco_scores(run.model, loader, source, source.ground_truth(), info["masks"], runtime)
    return {**scores, "images": len(source) - len(skipped), "data": source.description,
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    if not cfg.checkpoint:
        raise ConfigError("give --checkpoint: a fine-tuned classifier (a finetune run directory or a file), or a "
                          "segment or detect run")
    checkpoint = run_checkpoint(cfg.checkpoint, cfg.which)
    run = load_dense_run(checkpoint)
    start, runtime = time.perf_counter(), Runtime(cfg.device, cfg.precision)
    if run is None:
        overrides = {k: v for k, v in (("num_heads", cfg.num_heads), ("norm_eps", cfg.norm_eps)) if v is not None}
        request = EvaluationRequest(checkpoint, cfg.checkpoint, cfg.data, cfg.split, cfg.batch_size, cfg.num_workers,
                                    Path(cfg.output), runtime, overrides)
        report = {"run": "classify", **classify.evaluate_classifier(request), "split": cfg.split,
                  "checkpoint": cfg.checkpoint, "checkpoint_evaluated": str(resolve_checkpoint(checkpoint)),
                  "time_s": round(time.perf_counter() - start, 2)}
        write_json(Path(cfg.output) / "metrics.json", report)
        return report
    kind = evaluate_segmentation if run.kind == "segment" else evaluate_detection
    report = {"run": run.kind, **kind(run, cfg, runtime), "split": cfg.split, "checkpoint": cfg.checkpoint,
              "checkpoint_evaluated": str(run.checkpoint), "time_s": round(time.perf_counter() - start, 2)}
    write_json(Path(cfg.output) / "metrics.json", report)
    return report


def report(s: dict[str, Any], cfg: EvaluateConfig) -> list[str]:
    where = f"on {s['images']} images of {s['data']} ({s['split']}), {s['checkpoint_evaluated']}"
    if s.get("run") == "segment":
        return [f"mIoU {s['mIoU']}  mAcc {s['mAcc']}  aAcc {s['aAcc']} {where}"]
    if s.get("run") == "detect":
        return [f"{kind} AP {s[kind]['AP']:.2f}  AP50 {s[kind]['AP50']:.2f}  AP75 {s[kind]['AP75']:.2f}"
                for kind in ("box", "mask") if kind in s] + [where]
    return classify.evaluation_lines(s)


TASK = Task("evaluate", "a classifier's top-1/5, per-class P/R/F1 and confusion matrix; a segmentation run's "
            "mIoU; a detection run's COCO AP", EvaluateConfig, evaluate, report)

"""`vitmae evaluate`: a trained model on labeled images, into a JSON report (OUTPUT/metrics.json).

- A fine-tuned classifier: top-1 / top-5, per-class precision, recall and F1, a confusion matrix (PNG).
  Top-5 is left out (None) with 5 classes or fewer, where it is 100% whatever the model.
- A `vitmae segment` run: mIoU, mAcc, aAcc and per-class IoU / Acc, as the run measures them (sliding
  windows of its crop and stride, its ignore index), on the run's own validation data unless `--data`;
  with `--tta` also with test-time augmentation (mmseg's flips and scales), under the key `tta`.
- A `vitmae detect` run: COCO AP, AP50, AP75, APs/m/l of the boxes (and masks) and AP per class, on the
  run's own validation data unless `--data`.

The run's family says how: a run's record (segmenter.json, detector.json) names it (`families.run_family`),
any other checkpoint is a classifier's. A run directory stands for its best checkpoint (`--which last`: its
last; a detection run keeps no best). The scores are those the runs measure themselves with while they
train (the families' evaluators).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..families import EvaluationRequest, family, run_family
from ..families.classify import EVAL_BATCH as CLASSIFY_BATCH
from ..families.dense.detect import EVAL_BATCH as DETECT_BATCH
from ..interop.vitmae_format import resolve_checkpoint
from ..options import opt
from ..train import write_json
from ..train.run_dir import WHICH, run_checkpoint
from ..train.runtime import Runtime
from .options import ClipViewOptions, InferenceOptions, Task, clip_view_options

__all__ = ["EvaluateOptions", "evaluate"]


@dataclass
class EvaluateOptions(ClipViewOptions, InferenceOptions):
    """`vitmae evaluate`: a classifier's accuracy, a segmentation run's mIoU or a detection run's COCO AP."""

    output: str = opt("runs/evaluate", "directory of the report (metrics.json, a classifier's confusion_matrix.png)")
    checkpoint: str | None = opt(None, "a fine-tuned classifier (a finetune run directory or a checkpoint), or a "
                                 "`vitmae segment` or `vitmae detect` run (or one of its checkpoints)")
    data: str | None = opt(None, "a classifier's labeled images: fashion-mnist (the default) | a folder of class "
                           "sub-folders | a .csv; a video classifier's clips: moving-fashion-mnist (the default) | "
                           "a folder | a list; a segment or detect run's: fashion-scenes | a folder of its kind "
                           "(default: the run's own data)")
    split: str = opt("val", "which split: val (fashion-mnist: the test split) | train")
    which: str = opt("best", "of a run directory: best (its best validation score, as it reported; a detection "
                     "run keeps its last) | last", choices=WHICH)
    batch_size: int | None = opt(None, f"images per forward pass (default: {CLASSIFY_BATCH}; "
                                 f"{DETECT_BATCH} for a detection run)", min=1)
    num_heads: int | None = opt(None, "attention heads of a checkpoint that does not record them", min=1)
    norm_eps: float | None = opt(None, "LayerNorm epsilon of a checkpoint that does not record it", above=0)
    tta: bool = opt(False, "a segmentation run: also with test-time augmentation (mmseg's left-right flips and "
                    "scales 0.5-1.75, averaged probabilities), its scores beside the single-scale ones")


def evaluate(cfg: EvaluateOptions) -> dict[str, Any]:
    if not cfg.checkpoint:
        raise ConfigError("give --checkpoint: a fine-tuned classifier (a finetune run directory or a file), or a "
                          "segment or detect run")
    checkpoint = run_checkpoint(cfg.checkpoint, cfg.which)
    found = run_family(checkpoint)
    spec = found[0] if found else family("classify")
    if cfg.tta:
        spec.slot("tta_scales", "--tta")
    start, output = time.perf_counter(), Path(cfg.output)
    overrides = {k: v for k, v in (("num_heads", cfg.num_heads), ("norm_eps", cfg.norm_eps)) if v is not None}
    request = EvaluationRequest(checkpoint, cfg.checkpoint, cfg.data, cfg.split, cfg.batch_size, cfg.num_workers,
                                output, Runtime(cfg.device, cfg.precision), overrides, cfg.tta,
                                clip_view_options(cfg))
    report = {"run": spec.name, **spec.slot("evaluate", "evaluate")(request), "split": cfg.split,
              "checkpoint": cfg.checkpoint, "checkpoint_evaluated": str(resolve_checkpoint(checkpoint)),
              "time_s": round(time.perf_counter() - start, 2)}
    write_json(output / "metrics.json", report)
    return report


def report(s: dict[str, Any], cfg: EvaluateOptions) -> list[str]:
    return family(s["run"]).slot("evaluation_lines", "evaluate")(s)


TASK = Task("evaluate", "a classifier's top-1/5, per-class P/R/F1 and confusion matrix; a segmentation run's "
            "mIoU; a detection run's COCO AP", EvaluateOptions, evaluate, report)

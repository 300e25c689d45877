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

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import DataError, build_dataset, build_loader, build_source
from ..data.coco import build_detection_source
from ..data.labels import class_names, num_classes_of
from ..data.segmentation import build_segmentation_source
from ..data.sources import ShardSource
from ..errors import ConfigError
from ..interop.vitmae_format import resolve_checkpoint
from ..options import opt
from ..train import write_json
from ..train.run_dir import WHICH, run_checkpoint
from ..train.runtime import Runtime
from .common import (DenseRun, coco_scores, detection_loader, eval_transform, load_dense_run, predict,
                     segmentation_loader, segmentation_scores, topk_accuracy)
from .options import InferenceOptions, Task

__all__ = ["EvaluateConfig", "classification_report", "confusion_matrix", "evaluate", "per_class_metrics",
           "predict", "topk_accuracy"]


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


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(confusion: Tensor, names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall and F1 (percent) and support of each class; 0 where undefined (no predictions
    or no samples of the class)."""
    rows = []
    for c, name in enumerate(names):
        tp = confusion[c, c].item()
        predicted, actual = confusion[:, c].sum().item(), confusion[c].sum().item()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1,
                     "support": actual})
    return rows


def classification_report(logits: Tensor, labels: Tensor, names: list[str]) -> dict[str, Any]:
    """Top-1 / top-5 (None with 5 classes or fewer, where every label is in the top 5), loss, macro and
    per-class precision / recall / F1, and the confusion matrix."""
    num_classes = len(names)
    confusion = confusion_matrix(logits.argmax(dim=1), labels, num_classes)
    classes = per_class_metrics(confusion, names)
    present = [c for c in classes if c["support"]]
    accuracy = topk_accuracy(logits, labels)
    if num_classes <= 5:
        accuracy["top5"] = None
    return {
        **accuracy,
        "loss": F.cross_entropy(logits, labels).item(),
        "images": len(labels),
        "macro_precision": sum(c["precision"] for c in present) / max(1, len(present)),
        "macro_recall": sum(c["recall"] for c in present) / max(1, len(present)),
        "macro_f1": sum(c["f1"] for c in present) / max(1, len(present)),
        "per_class": classes,
        "confusion_matrix": confusion.tolist(),
    }


def save_confusion_png(confusion: list[list[int]] | Tensor, names: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = torch.as_tensor(confusion).float()
    normalised = cm / cm.sum(dim=1, keepdim=True).clamp_min(1)
    k = len(names)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_line(report: dict[str, Any]) -> str:
    """'top-1 X%  top-5 Y%', without top-5 where the report has none (5 classes or fewer)."""
    top5 = "" if report.get("top5") is None else f"  top-5 {report['top5']:.2f}%"
    return f"top-1 {report['top1']:.2f}%{top5}"


def evaluate_classifier(cfg: EvaluateConfig, checkpoint: Path) -> dict[str, Any]:
    """Top-1 / top-5, per-class precision / recall / F1 and the confusion matrix of a classifier."""
    from ..interop.classifier import load_classifier

    model = load_classifier(checkpoint, num_heads=cfg.num_heads, norm_eps=cfg.norm_eps)
    data = cfg.data or "fashion-mnist"
    source = build_source(data, cfg.split, labeled=True, in_chans=model.config.in_chans)
    if isinstance(source, ShardSource):
        raise ConfigError("evaluate reads folders, CSV files and fashion-mnist, not streamed shards")
    num_classes = max(model.num_classes, num_classes_of(source))
    if num_classes_of(source) > model.num_classes:
        raise ConfigError(f"{data} has {num_classes_of(source)} classes, the classifier {model.num_classes}")
    names = getattr(model, "class_names", None) or class_names(source, num_classes)
    runtime = Runtime(cfg.device, cfg.precision)
    model.to(runtime.device)
    loader = build_loader(build_dataset(source, eval_transform(model, data)), cfg.batch_size or CLASSIFY_BATCH, None,
                          cfg.num_workers, drop_last=False, persistent_workers=False)
    start = time.perf_counter()
    logits, labels, skipped = predict(model, loader, runtime)
    keep = labels >= 0
    if not keep.any():
        raise ConfigError(f"{data}: no labeled images to evaluate on")
    report = classification_report(logits[keep], labels[keep], names)
    output = Path(cfg.output)
    png = save_confusion_png(report["confusion_matrix"], names, output / "confusion_matrix.png",
                             f"{Path(cfg.checkpoint).name} on {data} ({cfg.split}): "
                             f"top-1 {report['top1']:.2f}%")
    report.update(checkpoint=cfg.checkpoint, checkpoint_evaluated=str(resolve_checkpoint(checkpoint)),
                  data=data, split=cfg.split, global_pool=model.global_pool,
                  unlabeled_images=int((~keep).sum()), confusion_png=str(png),
                  time_s=round(time.perf_counter() - start, 2),
                  skipped_files=[{"path": p, "reason": r} for p, r in skipped])
    write_json(output / "metrics.json", report)
    return report


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
    if run is None:
        return evaluate_classifier(cfg, checkpoint)
    start, runtime = time.perf_counter(), Runtime(cfg.device, cfg.precision)
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
    return [f"{accuracy_line(s)}  macro F1 {s['macro_f1']:.2f}% on {s['images']} images, "
            f"{s['checkpoint_evaluated']}; confusion matrix {s['confusion_png']}"]


TASK = Task("evaluate", "a classifier's top-1/5, per-class P/R/F1 and confusion matrix; a segmentation run's "
            "mIoU; a detection run's COCO AP", EvaluateConfig, evaluate, report)

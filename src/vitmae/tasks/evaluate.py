"""`vitmae evaluate`: a fine-tuned classifier on labeled images: top-1 / top-5, per-class precision,
recall and F1, a confusion matrix (PNG) and a JSON report (metrics.json). A fine-tuning run directory
stands for its best checkpoint (`--which last`: its last); top-5 is left out (None) with 5 classes or
fewer, where it is 100% whatever the model.

`predict` and `topk_accuracy` (in tasks.common) are also what fine-tuning and linear probing evaluate
with every epoch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import build_dataset, build_loader, build_source
from ..data.labels import class_names, num_classes_of
from ..data.sources import ShardSource
from ..errors import ConfigError
from ..interop.vitmae_format import WEIGHTS, resolve_checkpoint
from ..options import opt
from ..train import write_json
from .common import Task, InferenceOptions, Runtime, eval_transform, predict, topk_accuracy

__all__ = ["EvaluateConfig", "classification_report", "confusion_matrix", "evaluate", "per_class_metrics",
           "predict", "topk_accuracy"]


@dataclass
class EvaluateConfig(InferenceOptions):
    """`vitmae evaluate`: accuracy, per-class precision / recall / F1 and a confusion matrix."""

    output: str = opt("runs/evaluate", "directory of the report (metrics.json, confusion_matrix.png)")
    checkpoint: str | None = opt(None, "a fine-tuned classifier: a finetune run directory or a checkpoint")
    data: str = opt("fashion-mnist", "labeled images: fashion-mnist | a folder of class sub-folders | a .csv")
    split: str = opt("val", "which split: val (fashion-mnist: the test split) | train")
    which: str = opt("best", "of a fine-tuning run directory: best (its best validation top-1, as it reported) "
                     "| last", choices=("best", "last"))
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


WHICH = ("best", "last")


def run_checkpoint(checkpoint: str, which: str) -> Path:
    """The classifier to evaluate: of a fine-tuning run directory its best checkpoint (RUN/checkpoints/best,
    the weights of the best validation top-1 the run reported) or its last one; any other path as given."""
    if which not in WHICH:
        raise ConfigError(f"unknown --which {which!r}; choose from: {', '.join(WHICH)}")
    path = Path(checkpoint)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if which == "best" and root.name == "checkpoints" and (root / "best" / WEIGHTS).is_file():
        return root / "best"
    return path


def accuracy_line(report: dict[str, Any]) -> str:
    """'top-1 X%  top-5 Y%', without top-5 where the report has none (5 classes or fewer)."""
    top5 = "" if report.get("top5") is None else f"  top-5 {report['top5']:.2f}%"
    return f"top-1 {report['top1']:.2f}%{top5}"


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    from ..interop.classifier import load_classifier

    if not cfg.checkpoint:
        raise ConfigError("give --checkpoint: a fine-tuned classifier (a finetune run directory or a file)")
    checkpoint = run_checkpoint(cfg.checkpoint, cfg.which)
    model = load_classifier(checkpoint, num_heads=cfg.num_heads, norm_eps=cfg.norm_eps)
    source = build_source(cfg.data, cfg.split, labeled=True, in_chans=model.config.in_chans)
    if isinstance(source, ShardSource):
        raise ConfigError("evaluate reads folders, CSV files and fashion-mnist, not streamed shards")
    num_classes = max(model.num_classes, num_classes_of(source))
    if num_classes_of(source) > model.num_classes:
        raise ConfigError(f"{cfg.data} has {num_classes_of(source)} classes, the classifier {model.num_classes}")
    names = getattr(model, "class_names", None) or class_names(source, num_classes)
    runtime = Runtime(cfg.device, cfg.precision)
    model.to(runtime.device)
    loader = build_loader(build_dataset(source, eval_transform(model, cfg.data)), cfg.batch_size, None,
                          cfg.num_workers, drop_last=False, persistent_workers=False)
    start = time.perf_counter()
    logits, labels, skipped = predict(model, loader, runtime.device, runtime.autocast)
    keep = labels >= 0
    if not keep.any():
        raise ConfigError(f"{cfg.data}: no labeled images to evaluate on")
    report = classification_report(logits[keep], labels[keep], names)
    output = Path(cfg.output)
    png = save_confusion_png(report["confusion_matrix"], names, output / "confusion_matrix.png",
                             f"{Path(cfg.checkpoint).name} on {cfg.data} ({cfg.split}): "
                             f"top-1 {report['top1']:.2f}%")
    report.update(checkpoint=cfg.checkpoint, checkpoint_evaluated=str(resolve_checkpoint(checkpoint)),
                  data=cfg.data, split=cfg.split, global_pool=model.global_pool,
                  unlabeled_images=int((~keep).sum()), confusion_png=str(png),
                  time_s=round(time.perf_counter() - start, 2),
                  skipped_files=[{"path": p, "reason": r} for p, r in skipped])
    write_json(output / "metrics.json", report)
    return report



def report(s: dict[str, Any], cfg: EvaluateConfig) -> list[str]:
    return [f"{accuracy_line(s)}  macro F1 {s['macro_f1']:.2f}% on {s['images']} images, "
            f"{s['checkpoint_evaluated']}; confusion matrix {s['confusion_png']}"]


TASK = Task("evaluate", "top-1/5, per-class P/R/F1 and a confusion matrix of a classifier", EvaluateConfig,
            evaluate, report)

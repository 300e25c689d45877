"""How a classifier is measured: its logits on labeled batches, the evaluation during training (top-1 / top-5
and loss every few epochs, the best weights kept), and `vitmae evaluate`'s report (per-class precision,
recall and F1, the confusion matrix and its picture)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import ShardSource, open_source
from ...data.moving_fashion import MOVING_FASHION
from ...data.labels import class_names, num_classes_of
from ...errors import ConfigError
from ...train import Trainer
from ...train.hooks import PeriodicEvaluation
from ...train.runtime import Runtime
from ..encoder import eval_transform, normalization
from ..features import topk_accuracy
from ..spec import EvaluationRequest
from .data import clip_views, eval_loader

EVAL_BATCH = 256  # images per forward pass of `vitmae evaluate`


def view_logits(model: nn.Module, images: Tensor) -> Tensor:
    """The logits of a batch: of images or clips as they are; of evaluation views (N, V, C, T, H, W),
    each video's views averaged (VideoMAE's multi-view test)."""
    if images.dim() == 6:
        return model(images.flatten(0, 1)).float().unflatten(0, images.shape[:2]).mean(1)
    return model(images)


@torch.no_grad()
def classifier_logits(model: nn.Module, loader, runtime: Runtime) -> tuple[Tensor, Tensor, list]:
    """(logits (N, K) float32, labels (N,), skipped) of every batch `loader` yields; the model's
    training mode is restored afterwards."""
    logits, labels, skipped = [], [], []
    for batch, out in runtime.forward_each(model, loader,
                                           lambda b: view_logits(model, b.images.to(runtime.device, non_blocking=True)),
                                           skipped):
        logits.append(out.float().cpu())
        labels.append(batch.targets)
    if not logits:
        raise ConfigError("no readable image to evaluate")
    return torch.cat(logits), torch.cat(labels), skipped


class ClassifierEvaluator(PeriodicEvaluation):
    """Top-1 / top-5 and loss on validation batches every `every_epochs` epochs and at the end, the best
    top-1's weights kept in RUN/checkpoints/best. `averaged` gives the weights to evaluate and keep instead
    of the trained ones (a moving average)."""

    best_key = "top1"

    def __init__(self, loader, every_epochs: int, total_epochs: int, save_best: bool = True,
                 averaged: Callable[[], nn.Module] | None = None):
        self.loader, self.every, self.total, self.save_best = loader, max(1, every_epochs), total_epochs, save_best
        self.averaged = averaged

    def model(self, trainer: Trainer) -> nn.Module:
        return self.averaged() if self.averaged else trainer.model

    def evaluate(self, trainer: Trainer, model: nn.Module | None = None) -> dict[str, float]:
        logits, labels, _ = classifier_logits(model or self.model(trainer), self.loader, trainer.runtime)
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        return {**topk_accuracy(logits, labels), "loss": F.cross_entropy(logits, labels).item()}

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {f"val/{k}": entry[k] for k in ("top1", "top5", "loss")}

    def line(self, entry: dict[str, Any]) -> str:
        return f"val top-1 {entry['top1']:.2f}%  top-5 {entry['top5']:.2f}%  loss {entry['loss']:.4f}"

    def results(self, trainer: Trainer) -> dict[str, Any]:
        history, best = trainer.extra_state["history"], trainer.extra_state["best"]
        final = history[-1]
        results = {"top1": final["top1"], "top5": final["top5"], "val_loss": final["loss"],
                   "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
                   "history": history}
        if self.averaged:  # the trained weights themselves, for comparison
            raw = self.evaluate(trainer, trainer.model)
            results.update(top1_without_ema=raw["top1"], top5_without_ema=raw["top5"])
        return results


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


def evaluate_classifier(request: EvaluationRequest) -> dict[str, Any]:
    """Top-1 / top-5, per-class precision / recall / F1 and the confusion matrix of a classifier, on
    labeled images (fashion-mnist by default)."""
    from ...interop.loading import load_classifier

    model = load_classifier(request.checkpoint, **request.overrides)
    config, clips = model.config, request.clips
    data = request.data or (MOVING_FASHION if config.is_video else "fashion-mnist")
    if config.is_video:
        source = open_source(data, request.split, "clip", in_chans=config.in_chans, clip_label=clips["clip_label"],
                             clips=clips["clips"])
    else:
        source = open_source(data, request.split, "class", in_chans=config.in_chans)
    if isinstance(source, ShardSource):
        raise ConfigError("evaluate reads folders, CSV files and fashion-mnist, not streamed shards")
    num_classes = max(model.num_classes, num_classes_of(source))
    if num_classes_of(source) > model.num_classes:
        raise ConfigError(f"{data} has {num_classes_of(source)} classes, the classifier {model.num_classes}")
    names = getattr(model, "class_names", None) or class_names(source, num_classes)
    model.to(request.runtime.device)
    if config.is_video:  # the views the run was validated on, by default: the frames sized as it sized them
        transform, interval, _ = clip_views(config, *normalization(config, data), source, clips)
    else:
        transform = eval_transform(model, data)
    loader = eval_loader(source, transform, request.batch_size or EVAL_BATCH, request.num_workers)
    logits, labels, skipped = classifier_logits(model, loader, request.runtime)
    keep = labels >= 0
    if not keep.any():
        raise ConfigError(f"{data}: no labeled images to evaluate on")
    report = classification_report(logits[keep], labels[keep], names)
    png = save_confusion_png(report["confusion_matrix"], names, request.output / "confusion_matrix.png",
                             f"{Path(request.given).name} on {data} ({request.split}): top-1 {report['top1']:.2f}%")
    views = {"test_views": [clips["test_clips"], clips["test_crops"]], "frame_interval": interval} if config.is_video else {}
    return {**report, **views, "data": data, "global_pool": model.global_pool, "unlabeled_images": int((~keep).sum()),
            "confusion_png": str(png), "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


def evaluation_lines(s: dict[str, Any]) -> list[str]:
    what = (f"videos ({s['test_views'][0]} clip(s) x {s['test_views'][1]} crop(s) each)" if "test_views" in s
            else "images")
    return [f"{accuracy_line(s)}  macro F1 {s['macro_f1']:.2f}% on {s['images']} {what}, "
            f"{s['checkpoint_evaluated']}; confusion matrix {s['confusion_png']}"]

"""The classification family (fine-tuning, the linear probe, kNN, evaluation): a classifier on a
pre-trained encoder, its objective, its evaluation during training and `vitmae evaluate`'s report, and its
labeled data. (Frozen-encoder features and kNN scoring are shared with pre-training's monitor:
`families.features`.)"""
from __future__ import annotations

import torch
from torch import nn

from ...model import ModelConfig, ViTClassifier, ViTEncoder
from ...model.classifier import GLOBAL_POOL, from_pretrained_encoder
from ..spec import FamilySpec, register_family
from .data import (FrozenEncoderData, LabeledData, clip_transforms, eval_loader, flip_changes_label,
                   frozen_encoder_data, label_summary, labeled_data)
from .evaluation import (EVAL_BATCH, ClassifierEvaluator, accuracy_line, classification_report, classifier_logits,
                         confusion_matrix, evaluate_classifier, evaluation_lines, per_class_metrics,
                         save_confusion_png)
from .objective import ClassificationObjective

__all__ = ["ClassificationObjective", "ClassifierEvaluator", "EVAL_BATCH", "FAMILY", "FrozenEncoderData", "LabeledData",
           "accuracy_line", "build_model", "classification_report", "classifier_logits", "clip_transforms",
           "confusion_matrix", "flip_changes_label",
           "eval_loader", "evaluate_classifier", "frozen_encoder_data", "label_summary", "labeled_data",
           "per_class_metrics", "save_confusion_png", "shard_units"]


def build_model(encoder: ViTEncoder | None, config: ModelConfig, num_classes: int, pool: str, drop_path: float,
                seed: int) -> ViTClassifier:
    """The classifier: on the pre-trained `encoder`, or fresh with the MAE initialisation (`None`)."""
    torch.manual_seed(seed)
    if encoder is None:
        return ViTClassifier(config, num_classes, GLOBAL_POOL[pool], drop_path)
    return from_pretrained_encoder(encoder, num_classes, GLOBAL_POOL[pool], drop_path)


def shard_units(model: ViTClassifier) -> list[nn.Module]:
    return list(model.encoder.blocks)


FAMILY = register_family(FamilySpec(
    "classify", "image classification on the encoder", build_model=build_model, shard_units=shard_units,
    param_groups=lambda model, weight_decay, layer_decay: model.param_groups(weight_decay, layer_decay),
    objective=ClassificationObjective, evaluators=(ClassifierEvaluator,), evaluate=evaluate_classifier,
    evaluation_lines=evaluation_lines))

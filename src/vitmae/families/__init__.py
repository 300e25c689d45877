"""Model families, the plug-in unit: each binds a model of `vitmae.model` to its objective, evaluation,
inference, drawing and run record (see `spec.FamilySpec`). Importing the package registers the built-in
families: mae (pre-training), classify, segment and detect. Shared by several: the encoder they start from
(`encoder`), frozen-encoder features and kNN (`features`), the dense runs' records (`dense`).
See docs/architecture.md, "How to add a family"."""
from .spec import (FAMILIES, EvaluationRequest, FamilySpec, PredictionRequest, family, load_run, register_family,
                   run_family)
# importing the built-in families registers them
from . import classify, mae

__all__ = ["FAMILIES", "EvaluationRequest", "FamilySpec", "PredictionRequest", "family", "load_run",
           "register_family", "run_family"]

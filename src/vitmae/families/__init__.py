"""Model families, the plug-in unit: each binds a model of `vitmae.model` to its objective, evaluation,
inference, drawing and run record (see `spec.FamilySpec`). Importing the package registers the built-in
families: mae (pre-training), video (video pre-training), classify, segment and detect. Shared by several:
the encoder they start from (`encoder`), frozen-encoder features and kNN (`features`), what the mae and
video families share (`masked`), a run's record and the model rebuilt from it (`run`), the dense runs'
records (`dense.record`).
See docs/architecture.md, "How to add a family"."""
from .run import Run, RunRecord
from .spec import (FAMILIES, EvaluationRequest, FamilySpec, PredictionRequest, family, load_run, register_family,
                   run_family)
# importing the built-in families registers them (the dense ones in the order messages list them)
from . import classify, mae, video
from .dense import segment, detect

__all__ = ["FAMILIES", "EvaluationRequest", "FamilySpec", "PredictionRequest", "Run", "RunRecord", "family",
           "load_run", "register_family", "run_family"]

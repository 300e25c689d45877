"""A model family, the plug-in unit (as timm's model registry and torchtitan's ModelSpec): what binds a
model of `vitmae.model` to everything that is not the module itself. A task composes a family, data and
the engine; `vitmae evaluate`, `predict` and `demo` find the family of a run here, in one place
(`run_family`), and ask it.

Not every family fills every slot: a slot it leaves None is "not for this kind of model", which `slot`
says in one line.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..train.hooks import Hook
from ..train.runtime import Runtime
from .run import Run, RunRecord, find_record


@dataclass(frozen=True)
class EvaluationRequest:
    """What `vitmae evaluate` asks of a family's `evaluate`."""

    checkpoint: Path  # the checkpoint evaluated (of a run directory: its best or last, as asked)
    given: str  # the checkpoint as the user named it
    data: str | None  # other data than the run's own (a classifier: fashion-mnist by default)
    split: str
    batch_size: int | None  # None: the family's default
    num_workers: int
    output: Path  # where the report goes (metrics.json and any pictures)
    runtime: Runtime
    overrides: dict[str, Any] = field(default_factory=dict)  # heads and eps a file does not record
    tta: bool = False  # also with test-time augmentation (the families with `tta_scales`)
    clips: dict[str, Any] = field(default_factory=dict)  # a video classifier's views: ClipViewOptions' fields


@dataclass(frozen=True)
class PredictionRequest:
    """What `vitmae predict` asks of a family's `predict`."""

    images: list[str]  # image files or folders (a detection run: or one COCO JSON)
    out: Path
    image_root: str | None  # the images of a COCO JSON (default: its folder)
    score_threshold: float  # the detections drawn
    batch_size: int
    num_workers: int
    runtime: Runtime
    tta: bool = False  # with test-time augmentation (the families with `tta_scales`)


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the family, and the kind of its runs ("run" in evaluate's and predict's reports)
    summary: str  # one line, for the docs and `repr`
    # the model
    build_model: Callable[..., nn.Module] | None = None  # a fresh model from its options (or an encoder)
    shard_units: Callable[[nn.Module], list[nn.Module]] | None = None  # what FSDP's fully_shard wraps one by one
    param_groups: Callable[[nn.Module, float, float], list[dict]] | None = None  # (model, decay, layer decay)
    # training
    objective: Callable[..., Any] | None = None  # its class: (model, batch, step, micro) -> loss
    evaluators: tuple[type[Hook], ...] = ()  # the hooks that measure it during training
    # a finished run: its record (RUN/<record.FILE>) and what rebuilds and runs the model from it
    record: type[RunRecord] | None = None
    load_run: Callable[[str | Path, RunRecord], Run] | None = None
    evaluate: Callable[[EvaluationRequest], dict[str, Any]] | None = None  # `vitmae evaluate`: the report
    predict: Callable[[Run, PredictionRequest], dict[str, Any]] | None = None  # `vitmae predict` of a run
    serve: Callable[..., tuple[Any, str]] | None = None  # `vitmae demo`: (checkpoint, port, host, overrides)
    draw: Callable[..., Any] | None = None  # the picture of one image's prediction (predict, the demo)
    tta_scales: tuple[float, ...] | None = None  # evaluate --tta and predict --tta: the scales (with flips)
    # the lines printed of its summaries
    evaluation_lines: Callable[[dict[str, Any]], list[str]] | None = None
    prediction_lines: Callable[[dict[str, Any], Path], list[str]] | None = None

    def slot(self, name: str, command: str) -> Callable[..., Any]:
        """The slot `name`, or a ConfigError saying that `command` is not for this family's models."""
        value = getattr(self, name)
        if value is None:
            takers = [spec.name for spec in FAMILIES.values() if getattr(spec, name) is not None]
            raise ConfigError(f"{command} is not for a {self.name} model; it takes: {', '.join(takers)}")
        return value


FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Add `spec` to the registry (a name is registered once)."""
    if spec.name in FAMILIES and FAMILIES[spec.name] is not spec:
        raise ValueError(f"a family named {spec.name!r} is registered already")
    FAMILIES[spec.name] = spec
    return spec


def family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; the families: {', '.join(FAMILIES)}") from None


def run_family(checkpoint: str | Path) -> tuple[FamilySpec, RunRecord] | None:
    """The family of the run `checkpoint` belongs to (the run directory, one of its checkpoints or a
    weights file) and the run's record, by the record file beside it; None for any other checkpoint. The
    one place that tells the kinds of runs apart."""
    recorded = {spec.record: spec for spec in FAMILIES.values() if spec.record is not None}
    record = find_record(checkpoint, tuple(recorded))
    return None if record is None else (recorded[type(record)], record)


def load_run(checkpoint: str | Path) -> Run | None:
    """The trained model of a run with a record (`checkpoint` as `run_family` takes it), rebuilt by its
    family; None for any other checkpoint."""
    found = run_family(checkpoint)
    if found is None:
        return None
    spec, record = found
    return spec.slot("load_run", "loading a run")(checkpoint, record)

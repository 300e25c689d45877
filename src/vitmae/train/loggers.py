"""Where a run's scalars and pictures go besides metrics.jsonl: TensorBoard (always), Weights & Biases and
MLflow when installed (`--log-to tensorboard,wandb,mlflow`). Each backend has the same three methods,
and the engine writes to every one named.

- tensorboard: RUN/tensorboard/ event files (scalars, and pictures as images);
- wandb: offline into RUN/wandb/ (`wandb sync` uploads it later) unless WANDB_MODE says otherwise;
- mlflow: an experiment named `vitmae`, a run named after the run directory, at MLFLOW_TRACKING_URI
  (MLflow's default when unset); pictures as artifacts.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError

BACKENDS = ("tensorboard", "wandb", "mlflow")
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow-skinny (or mlflow)"}


def parse_log_to(spec: str) -> list[str]:
    """The backends `--log-to` names, checked: known names, and their packages installed."""
    names = [name.strip().lower() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown --log-to backend {unknown[0]!r}; choose from: {', '.join(BACKENDS)}")
    for name in names:
        if name in PACKAGES:
            try:
                importlib.import_module(name)
            except ImportError:
                raise ConfigError(f"--log-to {name}: {name} is not installed (pip install "
                                  f"{PACKAGES[name]})") from None
    return list(dict.fromkeys(names))


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


class TensorBoardLogger:
    def __init__(self, output: Path, config: Any = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(output / "tensorboard"))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_image(self, tag: str, image: Image.Image, step: int) -> None:
        self.writer.add_image(tag, _rgb(image), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, output: Path, config: Any = None):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user asked for it
        self.wandb = wandb
        self.run = wandb.init(project="vitmae", name=output.name, dir=str(output), config=_as_dict(config))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def log_image(self, tag: str, image: Image.Image, step: int) -> None:
        self.run.log({tag: self.wandb.Image(image.convert("RGB"))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    def __init__(self, output: Path, config: Any = None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default
        experiment = self.client.get_experiment_by_name("vitmae")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("vitmae")
        self.run_id = self.client.create_run(experiment_id, run_name=output.name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in _as_dict(config).items()])

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.client.log_metric(self.run_id, tag, float(value), step=step)

    def log_image(self, tag: str, image: Image.Image, step: int) -> None:
        self.client.log_image(self.run_id, _rgb(image), artifact_file=f"{tag}/step-{step:08d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}


def build_loggers(spec: str, output: Path, config: Any = None) -> list:
    """One logger per backend `spec` names (see parse_log_to), writing for the run in `output`."""
    return [LOGGERS[name](Path(output), config) for name in parse_log_to(spec)]


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

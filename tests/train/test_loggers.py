"""`--log-to`: TensorBoard gets the reconstruction grids and the held-out loss of every evaluation (read
back from the event file), MLflow the same in a local store, and a backend that is not installed is a
clear one-line error before training starts."""
from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitmae.cli import main
from vitmae.config import ConfigError, PretrainOptions
from vitmae.data import FashionMNISTSource
from vitmae.tasks.pretrain import pretrain
from vitmae.train.loggers import parse_log_to

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 Fashion-MNIST images as PNG files: 3 steps of 8 per epoch."""
    folder = tmp_path_factory.mktemp("images")
    source = FashionMNISTSource("test")
    for index in range(24):
        source[index][0].save(folder / f"{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> Path:
    """Two epochs of a tiny pre-training, logged to TensorBoard (and to MLflow where it is installed)."""
    out = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"file:{out.parent / 'mlruns'}")
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store for opt-in use
        pretrain(PretrainOptions(data=str(images), val_data=str(images), epochs=2, batch_size=8, num_workers=0,
                                heldout_samples=8, output=str(out),
                                log_to="tensorboard,mlflow" if HAS_MLFLOW else "tensorboard", **TINY))
    return out


def test_tensorboard_gets_every_grid_and_every_heldout_loss(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    metrics = json.loads((run / "metrics.json").read_text())
    # Evaluated before training, after epoch 1 and at the end (3 steps an epoch).
    history = metrics["heldout_history"]
    assert [h["step"] for h in history] == [0, 3, 6] and metrics["heldout_loss_end"] == history[-1]["loss"]
    heldout = events.Scalars("heldout/loss")
    assert [e.step for e in heldout] == [0, 3, 6]
    assert [e.value for e in heldout] == pytest.approx([h["loss"] for h in history])
    grids = events.Images("reconstructions")
    assert [e.step for e in grids] == [0, 3, 6]
    for event, name in zip(grids, ("epoch-000", "epoch-001", "final")):
        logged = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        on_disk = np.asarray(Image.open(run / "reconstructions" / f"{name}.png").convert("RGB"))
        assert np.array_equal(logged, on_disk), name
    # Six steps: the default interval logs every step (a short run gets enough points for a curve).
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed")
def test_mlflow_gets_the_same_scalars_and_the_grids_as_artifacts(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{run.parent / 'mlruns'}")
    experiment = client.get_experiment_by_name("vitmae")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"
    assert logged.data.params["epochs"] == "2"
    history = json.loads((run / "metrics.json").read_text())["heldout_history"]
    heldout = sorted((m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "heldout/loss"))
    assert [step for step, _ in heldout] == [h["step"] for h in history]
    assert [value for _, value in heldout] == pytest.approx([h["loss"] for h in history])
    artifacts = [a.path for a in client.list_artifacts(logged.info.run_id, "reconstructions")]
    assert artifacts == [f"reconstructions/step-{s:08d}.png" for s in (0, 3, 6)]


def test_a_backend_not_installed_or_unknown_is_a_one_line_error(monkeypatch, images, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails, as where it is not installed
    with pytest.raises(ConfigError, match=r"--log-to wandb: wandb is not installed \(pip install wandb\)"):
        parse_log_to("tensorboard,wandb")
    with pytest.raises(ConfigError, match="unknown --log-to backend 'comet'"):
        parse_log_to("tensorboard, comet")
    assert parse_log_to("TensorBoard,tensorboard") == ["tensorboard"]
    out = tmp_path / "run"
    code = main(["pretrain", "--data", str(images), "--val-data", str(images), "--batch-size", "8",
                 "--num-workers", "0", "--heldout-samples", "8", "--log-to", "tensorboard,wandb",
                 "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("vitmae pretrain: error: --log-to wandb")
    assert not (out / "checkpoints").exists()  # stopped before any training

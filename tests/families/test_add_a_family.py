"""A family written as docs/architecture.md says ("How to add a family"), outside the package: a model on
the encoder, its typed run record, and what rebuilds, evaluates and runs the model from a run. Once
registered, `vitmae evaluate` and `vitmae predict` take its runs, found by their record, through the
registry alone: no command knows it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitmae.cli import main
from vitmae.data import Batch, PhotosSource, build_dataset, build_loader, load_image, readable
from vitmae.families import FAMILIES, EvaluationRequest, FamilySpec, PredictionRequest, register_family
from vitmae.families.run import Run, RunRecord, find_record, rebuild_run
from vitmae.model import ModelConfig, ViTEncoder
from vitmae.train import Trainer
from vitmae.train.config import TrainOptions

SIZE = 32


@dataclass(frozen=True, kw_only=True)
class BrightnessRecord(RunRecord):
    """What a run of the family writes beside its checkpoints: RUN/regressor.json."""

    KIND: ClassVar[str] = "brightness"
    FILE: ClassVar[str] = "regressor.json"

    block: int  # the encoder block the head reads


class BrightnessRegressor(nn.Module):
    """The mean brightness of an image's left half, from one block's patch map."""

    def __init__(self, encoder: ViTEncoder, block: int):
        super().__init__()
        self.encoder, self.block, self.head = encoder, block, nn.Conv2d(encoder.embed_dim, 1, 1)
        self.config = encoder.config  # what its checkpoints record

    def forward(self, images):
        (patch_map,) = self.encoder.forward_intermediates(images, [self.block], intermediates_only=True)
        return self.head(patch_map).mean(dim=(1, 2, 3))


class LeftHalfBrightness:
    """Image files (the photos bundled with scikit-image) with their target: the brightness of the left half."""

    def __init__(self, paths: list[str] | None = None):
        self.paths = paths or PhotosSource(in_chans=3).paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = load_image(self.paths[index], 3).resize((SIZE, SIZE))
        return image, float(np.asarray(image)[:, :SIZE // 2].mean() / 255)


def to_tensor(image, generator):
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def collate_brightness(samples) -> Batch:
    good, skipped = readable(samples)
    return Batch(images=torch.stack([s[0] for s in good]), targets=torch.tensor([s[1] for s in good]),
                 indices=torch.tensor([s[2] for s in good]), skipped=skipped)


def load_run(checkpoint: str | Path, record: BrightnessRecord | None = None) -> Run[BrightnessRecord]:
    record = record or find_record(checkpoint, (BrightnessRecord,))
    return rebuild_run(checkpoint, record, lambda encoder, record: BrightnessRegressor(encoder, record.block))


@torch.no_grad()
def brightness(model: nn.Module, source: LeftHalfBrightness) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) brightness of every image of `source`."""
    batches = build_loader(build_dataset(source, to_tensor, seed=0), 8, None, 0, drop_last=False,
                           persistent_workers=False, collate_fn=collate_brightness)
    pairs = [(model(batch.images), batch.targets) for batch in batches]
    return torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])


def evaluate(request: EvaluationRequest) -> dict[str, Any]:
    predicted, true = brightness(load_run(request.checkpoint).model, LeftHalfBrightness())
    return {"mean_abs_error": float((predicted - true).abs().mean()), "images": len(true)}


def predict(run: Run[BrightnessRecord], request: PredictionRequest) -> dict[str, Any]:
    predicted, _ = brightness(run.model, LeftHalfBrightness(request.images))
    return {"images": [{"image": p, "brightness": float(v)} for p, v in zip(request.images, predicted)],
            "skipped_files": []}


SPEC = FamilySpec(
    "brightness", "the brightness of an image's left half",
    build_model=lambda encoder, block=0: BrightnessRegressor(encoder, block),
    shard_units=lambda model: list(model.encoder.blocks),
    objective=lambda model, batch, step, micro: F.mse_loss(model(batch.images), batch.targets),
    record=BrightnessRecord, load_run=load_run, evaluate=evaluate, predict=predict,
    evaluation_lines=lambda s: [f"mean absolute error {s['mean_abs_error']:.4f} on {s['images']} photos"],
    prediction_lines=lambda s, out: [f"the brightness of {len(s['images'])} images"])


@pytest.fixture
def registered():
    register_family(SPEC)
    yield SPEC
    del FAMILIES[SPEC.name]


def test_a_family_from_outside_the_package_is_evaluated_and_predicts_through_the_registry(registered, tmp_path,
                                                                                          capsys):
    run = tmp_path / "run"
    cfg = TrainOptions(output=str(run), epochs=2, batch_size=7, num_workers=0, blr=0.05, warmup_epochs=0,
                      device="cpu", log_to="")
    torch.manual_seed(0)
    encoder = ViTEncoder(ModelConfig(img_size=SIZE, patch_size=8, in_chans=3, embed_dim=16, depth=1, num_heads=2))
    model = registered.build_model(encoder)
    Trainer(model, registered.objective, build_dataset(LeftHalfBrightness(), to_tensor, seed=0), cfg,
            collate_fn=collate_brightness).fit()
    BrightnessRecord(block=0, pos_embed=encoder.pos_embed_kind, model=encoder.config.to_dict()).write(run)

    assert main(["evaluate", "--checkpoint", str(run), "--output", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    predicted, true = brightness(model.eval(), LeftHalfBrightness())  # the trained model, as it is
    assert report["run"] == "brightness" and report["images"] == len(true)
    assert report["mean_abs_error"] == pytest.approx(float((predicted - true).abs().mean()), abs=1e-6)

    photo = PhotosSource(in_chans=3).paths[0]
    assert main(["predict", "--checkpoint", str(run), photo, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert written["run"] == "brightness" and written["images"][0]["brightness"] == pytest.approx(float(predicted[0]))
    printed = capsys.readouterr().out
    assert "mean absolute error" in printed and "the brightness of 1 images" in printed

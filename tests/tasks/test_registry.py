"""A task written as docs/architecture.md says, outside the package: its own target (a tensor per image),
a joint image+target transform, its own collate, a model reading the encoder's features, the one engine,
and a command line generated from its options. The three contracts are enough for it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitmae.cli import Parser, add_option_flags, build_config
from vitmae.data import Batch, JointTransform, PhotosSource, build_dataset, readable
from vitmae.model import ModelConfig, ViTEncoder
from vitmae.options import opt
from vitmae.train import Trainer
from vitmae.train.config import TrainOptions


class LeftHalfBrightness:
    """Real photos with a regression target: the mean brightness of the image's left half."""

    def __init__(self):
        self.photos = PhotosSource(in_chans=3)
        self.paths = self.photos.paths

    def __len__(self):
        return len(self.photos)

    def __getitem__(self, index):
        image, _ = self.photos[index]
        image = image.resize((32, 32))
        return image, float(np.asarray(image)[:, :16].mean() / 255)


class FlipBoth(JointTransform):
    """A flip changes which half is on the left: the target follows the image."""

    def __call__(self, image, target, generator):
        x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
        if torch.rand((), generator=generator) < 0.5:
            x = x.flip(-1)
            target = float(x[:, :, :16].mean())  # the new left half
        return x, target


def collate_regression(samples) -> Batch:
    good, skipped = readable(samples)
    return Batch(images=torch.stack([s[0] for s in good]), targets=torch.tensor([s[1] for s in good]),
                 indices=torch.tensor([s[2] for s in good]), skipped=skipped)


class BrightnessRegressor(nn.Module):
    def __init__(self, encoder: ViTEncoder):
        super().__init__()
        self.encoder, self.head = encoder, nn.Conv2d(encoder.embed_dim, 1, 1)
        self.config = encoder.config

    def forward(self, images):
        (patch_map,) = self.encoder.forward_intermediates(images, indices=1, intermediates_only=True)
        return self.head(patch_map).mean(dim=(1, 2, 3))


@dataclass
class RegressionOptions(TrainOptions):
    width: int = opt(32, "encoder width of the regressor", min=4)


def test_a_task_with_its_own_target_transform_and_collate_trains_through_the_engine(tmp_path):
    parser = Parser(prog="vitmae brightness")
    add_option_flags(parser, RegressionOptions)
    args = parser.parse_args(["--output", str(tmp_path / "run"), "--epochs", "3", "--batch-size", "7",
                              "--num-workers", "0", "--blr", "0.05", "--warmup-epochs", "0", "--width", "16"])
    cfg = build_config(RegressionOptions, argparse.Namespace(**vars(args), config=None))
    assert cfg.width == 16 and cfg.batch_size == 7

    dataset = build_dataset(LeftHalfBrightness(), FlipBoth(), seed=0)
    for image, target, index in (dataset[i] for i in range(len(dataset))):
        assert abs(float(image[:, :, :16].mean()) - target) < 1e-5

    torch.manual_seed(0)
    encoder = ViTEncoder(ModelConfig(img_size=32, patch_size=8, embed_dim=cfg.width, depth=1, num_heads=2))
    model = BrightnessRegressor(encoder)

    def objective(model, batch, step, micro):
        assert batch.targets.shape == (len(batch),) and batch.targets.dtype == torch.float
        return F.mse_loss(model(batch.images), batch.targets)

    trainer = Trainer(model, objective, dataset, cfg, collate_fn=collate_regression)
    summary = trainer.fit()
    assert summary["steps"] == 3 * (len(dataset) // 7)
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, TINY_MODEL_FLAGS
from vitmae.config import ModelConfig
from vitmae.model import MaskedAutoencoder


def tiny_model(**overrides) -> MaskedAutoencoder:
    """A 28x28, patch 4 (7x7 grid), 2-block, 2-head model: fast on any CPU."""
    values = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                  decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    torch.manual_seed(0)
    return MaskedAutoencoder(ModelConfig(**{**values, **overrides})).eval()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real pre-training run (8 steps of a tiny model on Fashion-MNIST) through the CLI."""
    out = tmp_path_factory.mktemp("viz") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "vitmae", "pretrain", *TINY_MODEL_FLAGS, "--batch-size", "16",
                    "--num-workers", "0", "--heldout-samples", "8", "--max-steps", "8",
                    "--log-every-steps", "2", "--output", str(out)],
                   check=True, env=env, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def fashion_pngs(tmp_path_factory) -> list[Path]:
    """Three Fashion-MNIST test images as 28x28 PNG files."""
    from vitmae.data import FashionMNISTSource

    folder = tmp_path_factory.mktemp("images")
    source = FashionMNISTSource("test")
    paths = []
    for index in range(3):
        paths.append(folder / f"item-{index}.png")
        source[index][0].save(paths[-1])
    return paths


def png_of(array, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path

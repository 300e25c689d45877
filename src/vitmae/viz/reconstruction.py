"""Reconstruction pictures: original | masked | reconstruction | reconstruction with visible patches.

Also what every picture of a model needs: the checkpoint with the normalisation its inputs had, image
files turned into model inputs, user masks (a painted picture or patch indices), and the panel layout.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..data import (IMAGE_EXTENSIONS, DataError, EvalTransform, ImageLike, UnreadableImage, convert_image,
                    default_normalization, load_image)
from ..data.decode import pixel_limit_problem
from ..interop import load_pretrained
from ..model import MaskedAutoencoder, make_noise
from ..model.masking import noise_from_mask

Stats = tuple[float, ...]
PICTURE_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e != ".npy")
PANEL = 160  # pixels a panel is enlarged towards, so a 28x28 image is readable
FONT_SIZE = 14  # the smallest text size
TEXT_PER_PANEL = 8  # text is at least 1/8 of a panel's width high


# -- a checkpoint and its inputs -----------------------------------------------------------------------

def load_for_viewing(checkpoint: str | Path, **overrides: Any) -> tuple[MaskedAutoencoder, Stats, Stats]:
    """(model in eval mode, mean, std) for any checkpoint `load_pretrained` reads; `overrides` as there (the
    attention heads of a file that does not record them)."""
    model = load_pretrained(checkpoint, **overrides).eval()
    config = model.config
    if config.mean is not None and config.std is not None:
        return model, config.mean, config.std
    return (model, *normalization_of(checkpoint, config.in_chans))


def normalization_of(checkpoint: str | Path, in_chans: int) -> tuple[Stats, Stats]:
    """For a checkpoint that does not record its input normalisation (other tools', and vitmae's before
    it did): its run's data set when it belongs to a vitmae run (RUN/config.yaml), else the usual default
    (ImageNet for RGB, as the official weights)."""
    path = Path(checkpoint).resolve()
    runs = [path] + [p.parent for p in [path, *path.parents][:3] if p.name == "checkpoints"]
    for run in runs:
        if (run / "config.yaml").is_file():
            data = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("data")
            return default_normalization(in_chans, data)
    return default_normalization(in_chans)


def view_transform(config: ModelConfig, mean: Stats, std: Stats) -> EvalTransform:
    """Shorter side to the model's size, centre crop: the whole image as far as the aspect allows."""
    return EvalTransform(config.img_size, mean, std, resize_ratio=1.0)


def image_tensor(img: ImageLike, model: MaskedAutoencoder, mean: Stats, std: Stats) -> Tensor:
    """A decoded image (PIL of any mode, or an (H, W, C) array) -> the model's (C, H, W) input; one
    over the pixel limit (the demo's uploads are decoded by gradio, not load_image) is a DataError."""
    if isinstance(img, Image.Image):
        if problem := pixel_limit_problem(*img.size):
            raise DataError(f"image of {problem}")
        img = convert_image(img, model.config.in_chans)
    return view_transform(model.config, mean, std)(img)


def load_images(paths: Sequence[str | Path], model: MaskedAutoencoder, mean: Stats, std: Stats) -> Tensor:
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        try:
            images.append(image_tensor(load_image(path, model.config.in_chans), model, mean, std))
        except UnreadableImage as err:
            raise DataError(f"cannot read image {err}") from None
    return torch.stack(images)


# -- masks ----------------------------------------------------------------------------------------------

def load_mask(path: str | Path, config: ModelConfig) -> Tensor:
    """A user mask (L,) with 1 = removed, from a picture (white = removed; it goes through the same resize
    and crop as the image, then each patch takes its majority) or a text / JSON list of patch indices."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} does not exist")
    if path.suffix.lower() in PICTURE_EXTENSIONS:
        try:
            return mask_from_picture(load_image(path, 1), config)
        except UnreadableImage as err:
            raise ConfigError(f"cannot read mask picture {err}") from None
    return _mask_from_indices(path.read_text(errors="replace"), config.num_patches, path)


def mask_from_picture(picture: Image.Image, config: ModelConfig) -> Tensor:
    pixels = view_transform(config, (0.0,), (1.0,))(convert_image(picture, 1))  # (1, H, W) in [0, 1]
    painted = F.avg_pool2d((pixels > 0.5).float()[None], config.patch_size)  # painted share of each patch
    return (painted >= 0.5).float().flatten()


def _mask_from_indices(text: str, length: int, path: Path) -> Tensor:
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [
            int(v) for v in re.split(r"[\s,]+", text.strip()) if v]
    except ValueError:
        values = None
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ConfigError(f"mask file {path}: expected a picture ({', '.join(PICTURE_EXTENSIONS)}) or patch "
                          "indices (integers separated by spaces or commas, or a JSON list)")
    outside = [v for v in values if not 0 <= v < length]
    if outside:
        raise ConfigError(f"mask file {path}: patch index {outside[0]} is outside 0..{length - 1}")
    mask = torch.zeros(length)
    mask[values] = 1
    return mask


# -- reconstruction ---------------------------------------------------------------------------------------

@dataclass
class Reconstruction:
    """All images in the model's input (normalised) space, (N, C, H, W)."""

    original: Tensor
    mask: Tensor  # (N, 1, H, W) 1 = removed
    reconstruction: Tensor
    pasted: Tensor  # reconstruction where removed, original where visible
    loss: float
    denormalised: bool  # norm-pix predictions mapped back to pixels with patch statistics
    denorm: str = "true"  # which statistics: each patch's true ones, or those its visible neighbours suggest


# How norm-pix predictions become pixels: with the removed patch's true mean and std (flattering: they
# come from the pixels the model never saw), or with the ones estimated from the visible patches alone.
DENORMS = ("true", "visible")


def patch_statistics(patches: Tensor, mask: Tensor, grid: tuple[int, ...], denorm: str) -> tuple[Tensor, Tensor]:
    """(mean, std), each (N, L, 1), that de-normalise norm-pix predictions of `patches` (N, L, D) with
    `mask` (N, L) (1 = removed). `true`: each patch's own. `visible`: a visible patch's own; a removed
    patch's the average of those of the visible patches among its 8 neighbours (a clip's tubelets: its 26
    in space and time), else of all visible patches of the image; so the picture depends on the visible
    pixels only."""
    if denorm not in DENORMS:
        raise ConfigError(f"unknown denorm {denorm!r}; choose from: {', '.join(DENORMS)}")
    stats = torch.stack([patches.mean(dim=-1), (patches.var(dim=-1) + 1.0e-6) ** 0.5], dim=1)  # (N, 2, L)
    if denorm == "visible":
        visible = (1 - mask.float())[:, None]  # (N, 1, L)
        kernel = torch.ones(1, 1, *(3,) * len(grid), dtype=stats.dtype, device=stats.device)
        conv = F.conv3d if len(grid) == 3 else F.conv2d

        def neighbourhood_sum(x: Tensor) -> Tensor:
            return conv(x.reshape(-1, 1, *grid), kernel, padding=1).reshape(x.shape)

        sums, counts = neighbourhood_sum(stats * visible), neighbourhood_sum(visible.expand_as(stats))
        overall = (stats * visible).sum(dim=-1, keepdim=True) / visible.sum(dim=-1, keepdim=True)
        estimate = torch.where(counts > 0, sums / counts.clamp_min(1), overall)
        stats = torch.where(visible > 0, stats, estimate)
    return stats[:, 0, :, None], stats[:, 1, :, None]


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: Tensor, mask_ratio: float | None = None,
                noise: Tensor | None = None, denorm: str = "true") -> Reconstruction:
    """The model's reconstruction of `images`; a norm-pix model's predictions are de-normalised with the
    patch statistics `denorm` names (see patch_statistics)."""
    out = model(images, mask_ratio=mask_ratio, noise=noise)
    pred = out.pred.float()
    norm_pix, grid = model.config.norm_pix_loss, model.grid_of(images)
    if norm_pix:  # the model predicts standardised patches: undo that with patch statistics
        mean, std = patch_statistics(model.patchify(images).float(), out.mask, grid, denorm)
        pred = pred * std + mean
    recon = model.config.patching.unpatchify(pred, grid)
    mask = model.config.patching.spread(out.mask, grid)
    return Reconstruction(images, mask, recon, images * (1 - mask) + recon * mask, out.loss.item(), norm_pix,
                          denorm)


def reconstruct_masked(model: MaskedAutoencoder, images: Tensor, mask_ratio: float | None = None,
                       masking: str = "random", seed: int = 0, mask: Tensor | None = None,
                       denorm: str = "true") -> Reconstruction:
    """`reconstruct` with a seeded masking strategy, or with a user mask (L,) (1 = removed) shared by all
    images, whose share of removed patches then is the mask ratio."""
    generator = torch.Generator().manual_seed(seed)
    if mask is not None:
        removed = int(mask.sum())
        if removed in (0, len(mask)):
            raise ConfigError(f"the mask removes {removed} of {len(mask)} patches; it must remove some and "
                              "keep some (white = removed)")
        noise = noise_from_mask(mask.expand(len(images), -1), generator)
        # The model keeps int(L * (1 - ratio)) patches; half a patch of slack keeps float rounding off it.
        mask_ratio = (removed - 0.5) / len(mask)
    else:
        mask_ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"mask ratio must be in [0, 1), got {mask_ratio}")
        noise = make_noise(masking, len(images), model.config.grid_size, mask_ratio, generator)
    return reconstruct(model, images, mask_ratio, noise.to(images.device), denorm)


# -- pictures -------------------------------------------------------------------------------------------

def to_uint8(images: Tensor, mean: Stats, std: Stats) -> np.ndarray:
    """(N, C, H, W) normalised -> (N, H, W, C) uint8 (C is 1 or 3; other channel counts show the first 3)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.float().cpu() * std_t + mean_t).clamp(0, 1)
    if pixels.shape[1] not in (1, 3):
        pixels = pixels[:, :3] if pixels.shape[1] > 3 else pixels[:, :1]
    return (pixels * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reconstruction_panels(rec: Reconstruction, mean: Stats, std: Stats) -> tuple[list[str], list[np.ndarray]]:
    """Headers and the four columns of (N, H, W, C) uint8 images; removed patches are drawn gray."""
    headers = ["original", f"masked {float(rec.mask.mean()):.0%}",
               "reconstruction" + ("*" if rec.denormalised else ""), "+ visible patches"]
    columns = [to_uint8(t, mean, std) for t in (rec.original, rec.original, rec.reconstruction, rec.pasted)]
    removed = rec.mask.cpu().permute(0, 2, 3, 1).numpy() > 0
    columns[1] = np.where(removed, np.uint8(128), columns[1])  # gray, not the mean colour a zero would give
    return headers, columns


DENORMALISED_NOTES = {
    "true": "* norm-pix model: it predicts each patch normalised, shown here de-normalised with the true mean "
            "and std of that patch of the original (which flatters it; --denorm visible shows the honest view)",
    "visible": "* norm-pix model: it predicts each patch normalised; each removed patch is shown de-normalised "
               "with the mean and std of its visible neighbours: what the visible pixels alone give",
}


def denormalised_note(rec: Reconstruction) -> str | None:
    return DENORMALISED_NOTES[rec.denorm] if rec.denormalised else None


def reconstruction_grid(rec: Reconstruction, mean: Stats, std: Stats, panel: int = PANEL,
                        title: str | None = None, tubelet: int = 1) -> Image.Image:
    """One row per image: original, masked, reconstruction, reconstruction with the visible patches. Clips
    (N, C, T, H, W) get one column per time slice (its first frame, every `tubelet` frames) and four rows
    per clip, in that order."""
    if rec.original.dim() == 5:
        return _clip_grid(rec, mean, std, panel, title, tubelet)
    headers, columns = reconstruction_panels(rec, mean, std)
    return panel_grid(columns, headers, panel, title, denormalised_note(rec))


def _clip_grid(rec: Reconstruction, mean: Stats, std: Stats, panel: int, title: str | None,
               tubelet: int) -> Image.Image:
    frames = range(0, rec.original.shape[2], tubelet)
    columns = []
    for t in frames:
        still = Reconstruction(rec.original[:, :, t], rec.mask[:, :, t], rec.reconstruction[:, :, t],
                               rec.pasted[:, :, t], rec.loss, rec.denormalised, rec.denorm)
        _, panels = reconstruction_panels(still, mean, std)
        columns.append(np.stack(panels, axis=1).reshape(-1, *panels[0].shape[1:]))  # four rows a clip
    rows = (f"Rows, for each clip: the clip; its visible tubelets ({float(rec.mask.mean()):.0%} removed, drawn "
            "gray); the reconstruction; the reconstruction with the visible tubelets.")
    note = " ".join(filter(None, [rows, denormalised_note(rec)]))
    return panel_grid(columns, [f"frame {t}" for t in frames], panel, title, note)


def save_reconstruction_grid(rec: Reconstruction, path: str | Path, mean: Stats, std: Stats,
                             title: str | None = None, tubelet: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reconstruction_grid(rec, mean, std, title=title, tubelet=tubelet).save(path)
    return path


def reconstruct_files(checkpoint: str | Path, images: Sequence[str | Path], out: str | Path,
                      mask_ratio: float | None = None, masking: str = "random", seed: int = 0,
                      mask_file: str | Path | None = None, denorm: str = "true", **overrides: Any) -> Path:
    """`vitmae reconstruct`: one row per image file, written to `out` (PNG)."""
    model, mean, std = load_for_viewing(checkpoint, **overrides)
    return reconstruct_image_files(model, mean, std, Path(checkpoint).name, images, out, mask_ratio, masking, seed,
                                   mask_file, denorm)


def reconstruct_image_files(model: MaskedAutoencoder, mean: Stats, std: Stats, name: str,
                            images: Sequence[str | Path], out: str | Path, mask_ratio: float | None = None,
                            masking: str = "random", seed: int = 0, mask_file: str | Path | None = None,
                            denorm: str = "true") -> Path:
    """`reconstruct_files` of a model already loaded (`load_for_viewing`); `name` heads the picture."""
    batch = load_images(images, model, mean, std)
    mask = load_mask(mask_file, model.config) if mask_file else None
    rec = reconstruct_masked(model, batch, mask_ratio, masking, seed, mask, denorm)
    how = f"mask {Path(mask_file).name}" if mask_file else f"{masking} masking, seed {seed}"
    title = f"{name}: {how}, masked-patch loss {rec.loss:.4f}"
    return save_reconstruction_grid(rec, out, mean, std, title)


# -- layout ---------------------------------------------------------------------------------------------

def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no font files needed


def enlarge_factor(height: int, width: int, panel: int = PANEL) -> int:
    """The integer factor that brings an image nearest `panel` pixels; 1 for large images."""
    return max(1, panel // max(height, width))


def enlarge(tile: np.ndarray, panel: int = PANEL) -> Image.Image:
    """(H, W, C) uint8 -> RGB image enlarged by `enlarge_factor`, nearest-neighbour so patches stay sharp."""
    img = Image.fromarray(tile.squeeze(-1) if tile.shape[-1] == 1 else tile).convert("RGB")
    scale = enlarge_factor(img.height, img.width, panel)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img


def panel_grid(columns: Sequence[np.ndarray], headers: Sequence[str], panel: int = PANEL,
               title: str | None = None, note: str | None = None) -> Image.Image:
    """Columns of (N, H, W, C) uint8 images side by side, one row per image, a header over each column,
    a title above and a note below (both wrapped to the picture's width). The text grows with the panels,
    so that it stays legible wherever the picture is shown scaled to a page's width."""
    tiles = [[enlarge(t, panel) for t in column] for column in columns]
    pw, ph = tiles[0][0].size
    size = max(FONT_SIZE, pw // TEXT_PER_PANEL)
    fnt, pad = font(size), 6
    line = size + 6
    col_w = max(pw, *(int(fnt.getlength(h)) for h in headers)) + pad
    width = len(columns) * col_w + pad
    title_lines = _wrap(title, fnt, width - 2 * pad) if title else []
    note_lines = _wrap(note, fnt, width - 2 * pad) if note else []
    top = pad + line * (len(title_lines) + 1)
    height = top + len(tiles[0]) * (ph + pad) + line * len(note_lines) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        draw.text((pad, pad + i * line), text, fill="black", font=fnt)
    for col, (header, column) in enumerate(zip(headers, tiles)):
        x = pad + col * col_w
        draw.text((x, top - line), header, fill="black", font=fnt)
        for row, tile in enumerate(column):
            canvas.paste(tile, (x, top + row * (ph + pad)))
    bottom = top + len(tiles[0]) * (ph + pad)
    for i, text in enumerate(note_lines):
        draw.text((pad, bottom + i * line), text, fill="dimgray", font=fnt)
    return canvas


def _wrap(text: str, fnt: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and fnt.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines

"""Reconstruction pictures: original | masked | reconstruction | reconstruction with visible patches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..model import MaskedAutoencoder


@dataclass
class Reconstruction:
    """All images in the model's input (normalised) space, (N, C, H, W)."""

    original: Tensor
    mask: Tensor  # (N, 1, H, W) 1 = removed
    reconstruction: Tensor
    pasted: Tensor  # reconstruction where removed, original where visible
    loss: float
    denormalised: bool  # norm-pix predictions mapped back with the true patch statistics


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: Tensor, mask_ratio: float | None = None,
                noise: Tensor | None = None) -> Reconstruction:
    out = model(images, mask_ratio=mask_ratio, noise=noise)
    pred = out.pred.float()
    norm_pix = model.config.norm_pix_loss
    if norm_pix:  # the model predicts standardised patches: undo that with each patch's true statistics
        patches = model.patchify(images).float()
        pred = pred * (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + patches.mean(dim=-1, keepdim=True)
    size = tuple(images.shape[-2:])
    p, c = model.patch_size, images.shape[1]
    recon = model.unpatchify(pred, size)
    mask = model.unpatchify(out.mask.unsqueeze(-1).expand(-1, -1, p * p * c), size)[:, :1]
    return Reconstruction(images, mask, recon, images * (1 - mask) + recon * mask, out.loss.item(), norm_pix)


def to_uint8(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(N, C, H, W) normalised -> (N, H, W, C) uint8 (C is 1 or 3; other channel counts show the first 3)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.float().cpu() * std_t + mean_t).clamp(0, 1)
    if pixels.shape[1] not in (1, 3):
        pixels = pixels[:, :3] if pixels.shape[1] > 3 else pixels[:, :1]
    return (pixels * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reconstruction_grid(rec: Reconstruction, mean: tuple[float, ...], std: tuple[float, ...],
                        panel: int = 128, title: str | None = None) -> Image.Image:
    ratio = float(rec.mask.mean())
    headers = ["original", f"masked {ratio:.0%}",
               "reconstruction" + (" (de-normalised)" if rec.denormalised else ""),
               "+ visible patches"]
    masked = rec.original * (1 - rec.mask)
    columns = [to_uint8(t, mean, std) for t in (rec.original, masked, rec.reconstruction, rec.pasted)]
    gray = np.full_like(columns[1], 128)  # removed patches drawn gray, not as the mean colour
    columns[1] = np.where(rec.mask.cpu().permute(0, 2, 3, 1).numpy() > 0, gray, columns[1])
    n, h, w, _ = columns[0].shape
    scale = max(1, panel // max(h, w))
    ph, pw = h * scale, w * scale
    pad, header = 4, 18 + (16 if title else 0)
    canvas = Image.new("RGB", (4 * (pw + pad) + pad, header + n * (ph + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black")
    for col, name in enumerate(headers):
        draw.text((pad + col * (pw + pad), header - 16), name, fill="black")
        for row in range(n):
            tile = Image.fromarray(columns[col][row].squeeze(-1) if columns[col].shape[-1] == 1
                                   else columns[col][row])
            resample = Image.NEAREST if scale > 1 else Image.BICUBIC
            canvas.paste(tile.convert("RGB").resize((pw, ph), resample),
                         (pad + col * (pw + pad), header + row * (ph + pad)))
    return canvas


def save_reconstruction_grid(rec: Reconstruction, path: str | Path, mean: tuple[float, ...],
                             std: tuple[float, ...], title: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reconstruction_grid(rec, mean, std, title=title).save(path)
    return path

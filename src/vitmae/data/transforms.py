"""Pre-training and evaluation transforms with explicit, per-sample randomness.

Every random draw comes from a `torch.Generator` built from (seed, epoch, sample index), never from the
global RNG: a sample gets the same crop whichever worker process loads it and however many workers
there are, and a resumed run sees exactly the crops the uninterrupted run would have seen.

Transforms accept both kinds of decoded sample (`ImageLike`): PIL images are cropped and resized by PIL
(bicubic, as the official recipe), float (H, W, C) arrays by torch (bicubic with antialiasing).
`PretrainTransform.plan` is the pre-training draws alone; device-side augmentation (`device_augment`)
crops and flips by the same plans.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitmae.data.decode import ImageLike

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pixel mean and standard deviation of the 60,000 Fashion-MNIST training images scaled to [0, 1]
# (numpy float64 over all pixels of train-images-idx3-ubyte: 0.28604, 0.35302).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# moving-fashion-mnist's default clips (one 16 px item on a 32 px canvas): mean and standard deviation of
# every pixel of 3,000 training clips scaled to [0, 1] (0.07152, 0.20290)
MOVING_FASHION_MEAN = (0.0715,)
MOVING_FASHION_STD = (0.2029,)

Size = tuple[int, int]
# What a dataset applies to each decoded sample: (image, per-sample generator) -> (C, H, W) tensor.
Transform = Callable[[ImageLike, torch.Generator], torch.Tensor]


def mix_seed(*values: int) -> int:
    """Hash integers into one 63-bit seed; unlike a sum, (1, 2) and (2, 1) give unrelated seeds."""
    digest = hashlib.blake2b(",".join(map(str, values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random stream of sample `index` in `epoch` of a run seeded with `seed`."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, index))


def default_normalization(
    in_chans: int, source_name: str | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std): Fashion-MNIST's (or moving-fashion-mnist's) statistics for that source, ImageNet for
    RGB, 0.5 / 0.5 otherwise."""
    if source_name == "fashion-mnist":
        return FASHION_MNIST_MEAN * in_chans, FASHION_MNIST_STD * in_chans
    if source_name == "moving-fashion-mnist":
        return MOVING_FASHION_MEAN * in_chans, MOVING_FASHION_STD * in_chans
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * in_chans, (0.5,) * in_chans


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's `RandomResizedCrop.get_params`, draw for draw, from `generator`."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        log_aspect = torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)
        aspect_ratio = torch.exp(log_aspect).item()  # exp in float32 like torchvision, so crops match
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # Ten misses (extreme aspect ratios): the largest central crop within the allowed ratios.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class CropPlan(NamedTuple):
    """The random draws of one pre-training sample: a crop box in its pixels, and whether to flip it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


class PretrainTransform:
    """MAE pre-training augmentation: RandomResizedCrop (bicubic) + horizontal flip + normalize."""

    def __init__(
        self,
        img_size: int | Size,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
    ) -> None:
        self.size = size_pair(img_size)
        self.normalize = Normalize(mean, std)
        self.scale, self.ratio, self.hflip = scale, ratio, hflip

    def plan(self, height: int, width: int, generator: torch.Generator) -> CropPlan:
        """The crop box, then the flip, of an image of that size: every random draw of the transform.

        The workers' path (`__call__`) and the device path (`device_augment`) both crop and flip by it,
        so a sample gets the same crop and flip on either.
        """
        top, left, h, w = random_resized_crop_params(height, width, self.scale, self.ratio, generator)
        return CropPlan(top, left, h, w, torch.rand(1, generator=generator).item() < self.hflip)

    def __call__(self, img: ImageLike, generator: torch.Generator) -> torch.Tensor:
        top, left, h, w, flip = self.plan(*image_size(img), generator)
        x = resized_crop(img, (top, left, h, w), self.size)
        return self.normalize(x.flip(-1) if flip else x)


class EvalTransform:
    """The official evaluation recipe: bicubic resize to img_size / resize_ratio, then center crop.

    With img_size 224 and ratio 0.875 the shorter side goes to 256. An image already of img_size (a
    28x28 Fashion-MNIST digit at img_size 28) is left as it is: it is the resolution the data set was
    made at, not a photo to zoom into.
    """

    def __init__(
        self, img_size: int | Size, mean: Sequence[float], std: Sequence[float], resize_ratio: float = 0.875
    ) -> None:
        self.size = size_pair(img_size)
        self.normalize = Normalize(mean, std)
        self.resize_ratio = resize_ratio

    def __call__(self, img: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = image_size(img)
        if (height, width) == self.size:
            return self.normalize(resized_crop(img, (0, 0, height, width), self.size))
        th, tw = self.size
        scale = max(th / height, tw / width) / self.resize_ratio
        rh, rw = max(th, round(height * scale)), max(tw, round(width * scale))
        x = resized_crop(img, (0, 0, height, width), (rh, rw))
        top, left = int(round((rh - th) / 2)), int(round((rw - tw) / 2))  # torchvision's center_crop
        return self.normalize(x[:, top : top + th, left : left + tw])


class ResizeTransform:
    """Resize the whole image to img_size (bicubic, aspect ratio not kept): fixed visualisation inputs."""

    def __init__(self, img_size: int | Size, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size_pair(img_size)
        self.normalize = Normalize(mean, std)

    def __call__(self, img: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = image_size(img)
        return self.normalize(resized_crop(img, (0, 0, height, width), self.size))


class NormalizeTransform:
    """The image at its own size, normalised: what dense prediction reads (its windows take any size)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.normalize = Normalize(mean, std)

    def __call__(self, img: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = image_size(img)
        return self.normalize(resized_crop(img, (0, 0, height, width), (height, width)))


def image_size(img: ImageLike) -> Size:
    """(height, width) of a PIL image or an (H, W, C) array."""
    if isinstance(img, Image.Image):
        return img.height, img.width
    return int(img.shape[0]), int(img.shape[1])


def image_tensor(img: ImageLike) -> torch.Tensor:
    """The pixels of a decoded sample as a (C, H, W) tensor: uint8 for PIL images, float32 for arrays."""
    array = np.array(img, dtype=np.uint8 if isinstance(img, Image.Image) else np.float32)
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)


def resized_crop(img: ImageLike, box: tuple[int, int, int, int], size: Size) -> torch.Tensor:
    """Crop (top, left, h, w) and resize to `size` (bicubic) -> float tensor (C, H, W).

    PIL images come out in [0, 1]; arrays keep their own values.
    """
    top, left, h, w = box
    if isinstance(img, Image.Image):
        img = img.crop((left, top, left + w, top + h))
        if (h, w) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        return image_tensor(img).float().div_(255.0)
    x = torch.from_numpy(np.ascontiguousarray(img[top : top + h, left : left + w])).permute(2, 0, 1).float()
    if (h, w) != size:
        x = F.interpolate(x[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
    return x


class Normalize:
    """Per-channel (x - mean) / std of image tensors."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise an image (C, H, W) or a batch (N, C, H, W), on whatever device it is."""
        if x.shape[-3] != self.mean.shape[0]:
            # Broadcasting would silently turn a 1-channel image into 3 channels.
            raise ValueError(f"image has {x.shape[-3]} channels but mean/std have {self.mean.shape[0]}")
        # non_blocking: a blocking copy to a GPU would first wait for all the work queued on it.
        mean, std = self.mean.to(x.device, non_blocking=True), self.std.to(x.device, non_blocking=True)
        return (x - mean) / std


def size_pair(size: int | Size) -> Size:
    """(height, width) of an image size given as one int (square) or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

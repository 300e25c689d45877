"""Fine-tuning augmentation: RandomResizedCrop + flip, then optionally RandAugment and random erasing.

The crop and the flip draw from the per-sample generator like the pre-training transform. RandAugment
and random erasing are timm's (`rand_augment_transform`, `RandomErasing`), which draw from the global
`random`, `numpy.random` and `torch` generators; each call runs them inside `seeded_global_rngs`, which
seeds those three from the per-sample generator and restores them afterwards. So every augmentation of
a sample is fixed by (seed, epoch, index), whichever worker loads it, and the process' own global
random streams are left as they were.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from vitmae.data.decode import ImageLike
from vitmae.data.transforms import (Normalize, image_size, image_tensor, random_resized_crop_params, resized_crop,
                                    size_pair)


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Run a block with Python's, NumPy's and torch's (CPU) global generators seeded by `seed`; their
    previous states are restored on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class FinetuneTransform:
    """RandomResizedCrop (bicubic) + horizontal flip [+ RandAugment] + normalize [+ random erasing].

    `randaug` is a timm policy string such as the official "rand-m9-mstd0.5-inc1" (None: off); it works
    on PIL images (grayscale ones pass through RGB) and is skipped for float arrays (.npy data).
    `reprob` is the random-erasing probability (timm's per-pixel mode, as the official recipe).
    """

    def __init__(self, img_size: int | tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, randaug: str | None = None, reprob: float = 0.0) -> None:
        self.size = size_pair(img_size)
        self.normalize = Normalize(mean, std)
        self.scale, self.ratio, self.hflip = scale, ratio, hflip
        self.randaug = None
        if randaug:
            from timm.data.auto_augment import rand_augment_transform

            hparams = dict(translate_const=int(min(self.size) * 0.45),
                           img_mean=tuple(min(255, round(255 * m)) for m in _rgb(mean)),
                           interpolation=Image.Resampling.BICUBIC)
            self.randaug = rand_augment_transform(randaug, hparams)
        self.erase = None
        if reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(probability=reprob, mode="pixel", max_count=1, device="cpu")

    def __call__(self, img: ImageLike, generator: torch.Generator) -> torch.Tensor:
        height, width = image_size(img)
        box = random_resized_crop_params(height, width, self.scale, self.ratio, generator)
        flip = torch.rand(1, generator=generator).item() < self.hflip
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        if isinstance(img, Image.Image) and self.randaug is not None:
            top, left, h, w = box
            img = img.crop((left, top, left + w, top + h)).resize((self.size[1], self.size[0]),
                                                                  Image.Resampling.BICUBIC)
            if flip:
                img = ImageOps.mirror(img)
            mode = img.mode
            with seeded_global_rngs(seed):
                img = self.randaug(img.convert("RGB") if mode == "L" else img)
            img = img.convert(mode)
            x = image_tensor(img).float().div_(255.0)
        else:
            x = resized_crop(img, box, self.size)
            if flip:
                x = x.flip(-1)
        x = self.normalize(x)
        if self.erase is not None:
            with seeded_global_rngs(seed + 1):
                x = self.erase(x)
        return x


def _rgb(mean: Sequence[float]) -> Sequence[float]:
    return tuple(mean) * 3 if len(mean) == 1 else tuple(mean)[:3]

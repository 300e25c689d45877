"""Fashion-MNIST from its IDX files (the Debian package `dataset-fashion-mnist`): 28x28 grayscale
images of 10 classes of clothing, 60,000 for training and 10,000 for testing."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from vitmae.data.decode import ImageLike, convert_image
from vitmae.data.source import DataError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


class FashionMNISTSource:
    """Fashion-MNIST from its IDX files (.gz or raw): 28x28 grayscale images and 10 classes."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", root: str | Path | None = None, in_chans: int = 1) -> None:
        if split not in ("train", "test"):
            raise DataError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
        root = Path(root or FASHION_MNIST_ROOT)
        prefix = "train" if split == "train" else "t10k"
        self.images = _read_idx(root, f"{prefix}-images-idx3-ubyte", 2051)
        self.labels = _read_idx(root, f"{prefix}-labels-idx1-ubyte", 2049)
        if self.images.shape[1:] != (28, 28) or len(self.images) != len(self.labels):
            raise DataError(f"Fashion-MNIST files in {root} have unexpected shapes {self.images.shape}")
        self.split, self.in_chans = split, in_chans
        self.paths = [f"fashion-mnist/{split}/{i}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[ImageLike, int]:
        img = Image.fromarray(self.images[index])
        return convert_image(img, self.in_chans), int(self.labels[index])

    def stored(self, index: int) -> tuple[ImageLike, int]:
        """Nothing is encoded: the image itself (28x28, cheap) and its label."""
        return self[index]


def _read_idx(root: Path, name: str, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format): big-endian magic, dimension sizes, data."""
    for path in (root / f"{name}.gz", root / name):
        if path.is_file():
            break
    else:
        raise DataError(
            f"Fashion-MNIST not found in {root}: run `apt-get install dataset-fashion-mnist` "
            "(or `make demo`, which installs it)"
        )
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file (magic number {magic} expected)")
    ndim = magic & 0xFF
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape)

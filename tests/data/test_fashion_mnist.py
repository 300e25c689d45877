"""Fashion-MNIST read from its IDX files."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vitmae.data import FASHION_MNIST_CLASSES, DataError, FashionMNISTSource, open_source
from vitmae.data.fashion_mnist import FASHION_MNIST_ROOT

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist"
)


@needs_fashion_mnist
def test_fashion_mnist_splits():
    train, test = FashionMNISTSource("train"), FashionMNISTSource("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    img, label = train[0]
    assert img.mode == "L" and img.size == (28, 28) and 0 <= label <= 9
    assert np.asarray(img).std() > 10  # a real garment, not a blank frame
    assert Counter(int(label) for label in test.labels) == {c: 1000 for c in range(10)}
    assert train.paths[59999] == "fashion-mnist/train/59999"
    rgb, _ = FashionMNISTSource("test", in_chans=3)[0]
    assert rgb.mode == "RGB"
    assert len(open_source("fashion-mnist", "val")) == 10000


@needs_fashion_mnist
def test_fashion_mnist_reads_raw_idx_and_validates(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((Path(FASHION_MNIST_ROOT) / f"{name}.gz").read_bytes()))
    raw, packaged = FashionMNISTSource("test", root=tmp_path), FashionMNISTSource("test")
    assert np.array_equal(raw.images, packaged.images) and np.array_equal(raw.labels, packaged.labels)

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        FashionMNISTSource("test", root=tmp_path)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNISTSource("train", root=tmp_path)
    assert "\n" not in str(info.value)

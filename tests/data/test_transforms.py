from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from vitmae.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    PretrainTransform,
    ResizeTransform,
    default_normalization,
    random_resized_crop_params,
    sample_generator,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    array = np.array(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(img.height, img.width, -1)).permute(2, 0, 1)


def test_same_key_same_output_other_index_other_crop(photo):
    img = photo(96, 64, seed=1)
    transform = PretrainTransform(32, MEAN, STD)
    a = transform(img, sample_generator(seed=7, epoch=2, index=5))
    b = transform(img, sample_generator(seed=7, epoch=2, index=5))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    others = [transform(img, sample_generator(7, 2, i)) for i in range(6, 10)]
    assert all(not torch.equal(a, other) for other in others)


def test_sample_generator_keys_do_not_collide():
    def first_draw(*key):
        return torch.rand(1, generator=sample_generator(*key)).item()

    # seed + epoch + index would give these four the same stream.
    draws = {first_draw(1, 2, 3), first_draw(3, 2, 1), first_draw(2, 1, 3), first_draw(0, 0, 6)}
    assert len(draws) == 4


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [(64, 96, (0.2, 1.0), (3 / 4, 4 / 3)), (200, 20, (0.9, 1.0), (1.0, 3.0)), (13, 17, (0.08, 1.0), (0.5, 2.0))],
)
def test_crop_params_match_torchvision_draw_for_draw(height, width, scale, ratio):
    image = torch.zeros(3, height, width)
    for seed in range(200):
        torch.manual_seed(seed)
        expected = T.RandomResizedCrop.get_params(image, list(scale), list(ratio))
        ours = random_resized_crop_params(height, width, scale, ratio, torch.Generator().manual_seed(seed))
        assert ours == tuple(expected)


def test_crop_statistics_match_torchvision():
    height, width, scale, ratio, n = 240, 320, (0.2, 1.0), (3 / 4, 4 / 3), 3000
    ours = np.array(
        [random_resized_crop_params(height, width, scale, ratio, sample_generator(0, 0, i)) for i in range(n)]
    )
    torch.manual_seed(12345)  # an unrelated stream: compare distributions, not draws
    image = torch.zeros(3, height, width)
    theirs = np.array([T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)])

    for params in (ours, theirs):
        top, left, h, w = params.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    area = lambda p: p[:, 2] * p[:, 3] / (height * width)  # noqa: E731
    aspect = lambda p: p[:, 3] / p[:, 2]  # noqa: E731
    assert area(ours).min() >= 0.2 - 0.01 and area(ours).max() <= 1.0  # rounding to whole pixels
    assert aspect(ours).min() >= 3 / 4 - 0.02 and aspect(ours).max() <= 4 / 3 + 0.02
    assert abs(area(ours).mean() - area(theirs).mean()) < 0.02  # standard error of the difference ~0.006
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area(ours), q) - np.quantile(area(theirs), q)) < 0.04
        assert abs(np.quantile(aspect(ours), q) - np.quantile(aspect(theirs), q)) < 0.04


def test_flip_mirrors_the_same_crop(photo):
    img = photo(50, 40, seed=2)
    kept = PretrainTransform(24, MEAN, STD, hflip=0.0)(img, sample_generator(0, 0, 1))
    flipped = PretrainTransform(24, MEAN, STD, hflip=1.0)(img, sample_generator(0, 0, 1))
    assert torch.equal(flipped, kept.flip(-1))


def test_pretrain_output_is_normalized_crop(photo):
    img = photo(64, 64, seed=3)
    # scale (1, 1) and ratio (1, 1) force the whole image: only the resize and normalization are left.
    whole = PretrainTransform(64, MEAN, STD, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    out = whole(img, sample_generator(0, 0, 0))
    expected = (to_unit_tensor(img) - 0.5) / 0.25
    torch.testing.assert_close(out, expected)


def test_arrays_follow_the_same_crops_as_pil(photo):
    img = photo(80, 60, seed=4)
    array = np.asarray(img, dtype=np.float32) / 255.0
    transform = PretrainTransform(32, MEAN, STD)
    from_pil = transform(img, sample_generator(1, 0, 3))
    from_array = transform(array, sample_generator(1, 0, 3))
    assert from_array.shape == from_pil.shape
    # PIL and torch bicubic differ slightly; a different crop would differ by far more.
    assert (from_array - from_pil).abs().mean() < 0.02 / 0.25

    bands = np.random.default_rng(0).random((40, 30, 6), dtype=np.float32)
    out = PretrainTransform((16, 24), (0.5,) * 6, (0.5,) * 6)(bands, sample_generator(0, 0, 0))
    assert out.shape == (6, 16, 24) and torch.isfinite(out).all()


def test_eval_on_28px_is_identity_up_to_normalization():
    digit = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    out = EvalTransform(28, FASHION_MNIST_MEAN, FASHION_MNIST_STD)(digit)
    expected = (to_unit_tensor(digit) - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    torch.testing.assert_close(out, expected)


def test_eval_matches_the_official_resize_and_center_crop(photo):
    img = photo(500, 375, seed=5)
    official = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    torch.testing.assert_close(EvalTransform(224, IMAGENET_MEAN, IMAGENET_STD)(img), official(img))


def test_resize_transform(photo):
    out = ResizeTransform((20, 30), MEAN, STD)(photo(90, 40))
    assert out.shape == (3, 20, 30)
    gray = Image.new("L", (10, 10), 128)
    torch.testing.assert_close(ResizeTransform(10, (0.0,), (1.0,))(gray), torch.full((1, 10, 10), 128 / 255))


def test_channel_mismatch_is_an_error(photo):
    with pytest.raises(ValueError, match="1 channels but mean/std have 3"):
        EvalTransform(16, MEAN, STD)(photo(16, 16).convert("L"))


def test_default_normalization():
    assert default_normalization(1, "fashion-mnist") == (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    assert default_normalization(3, "fashion-mnist") == (FASHION_MNIST_MEAN * 3, FASHION_MNIST_STD * 3)
    assert default_normalization(3, "photos") == (IMAGENET_MEAN, IMAGENET_STD)
    assert default_normalization(4) == ((0.5,) * 4, (0.5,) * 4)
    assert default_normalization(1) == ((0.5,), (0.5,))

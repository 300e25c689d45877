from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitmae.data import UnreadableImage, decode, load_image


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def test_rgb_and_gray_convert_both_ways(tmp_path, photo):
    rgb = photo(30, 20, seed=1)
    path = save(rgb, tmp_path / "rgb.png")
    assert load_image(path, 3).mode == "RGB"
    np.testing.assert_array_equal(pixels(load_image(path, 3)), pixels(rgb))
    gray = load_image(path, 1)
    assert gray.mode == "L" and gray.size == (30, 20)
    np.testing.assert_array_equal(pixels(gray), pixels(rgb.convert("L")))  # PIL's luminance

    gray_path = save(rgb.convert("L"), tmp_path / "gray.png")
    replicated = pixels(load_image(gray_path, 3))
    assert replicated.shape == (20, 30, 3)
    assert (replicated == replicated[:, :, :1]).all()
    np.testing.assert_array_equal(replicated[:, :, 0], pixels(rgb.convert("L")))


def test_transparent_pixels_become_black(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (200, 100, 50, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 5, 10))  # left half fully transparent
    out = pixels(load_image(save(rgba, tmp_path / "a.png"), 3))
    assert (out[:, :5] == 0).all()
    assert (out[:, 5:] == [200, 100, 50]).all()


def test_palette_image_with_transparency(tmp_path, photo):
    pal = photo(16, 16, seed=2).quantize(colors=8)
    pal.info["transparency"] = 0
    path = save(pal, tmp_path / "p.png", transparency=0)
    assert Image.open(path).mode == "P"
    out = pixels(load_image(path, 3))
    index = np.asarray(Image.open(path))
    assert (out[index == 0] == 0).all()
    expected = pixels(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(out[index != 0], expected[index != 0])


def test_cmyk(tmp_path, photo):
    cmyk = photo(20, 12, seed=3).convert("CMYK")
    path = save(cmyk, tmp_path / "c.tif")
    out = load_image(path, 3)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(pixels(out), pixels(cmyk.convert("RGB")))


def test_16_bit_and_float_images_keep_their_contrast(tmp_path):
    # Values 1000..3550: clipping to 8 bits would turn this into a flat white square.
    values = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 10 + 1000)
    path16 = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path16).mode.startswith("I")
    out = pixels(load_image(path16, 1)).ravel()
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out) >= 0).all() and len(np.unique(out)) > 200

    floats = save(Image.fromarray(values.astype(np.float32) / 7.0), tmp_path / "f.tif")
    assert Image.open(floats).mode == "F"
    np.testing.assert_allclose(pixels(load_image(floats, 1)).ravel(), out, atol=1)
    rgb = pixels(load_image(path16, 3))
    assert rgb.shape == (16, 16, 3) and rgb.max() == 255


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = save(photo(40, 20, seed=4), tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(path).size == (40, 20)
    assert load_image(path, 3).size == (20, 40)


def test_bytes_input_matches_path_input(tmp_path, photo):
    path = save(photo(24, 24, seed=5), tmp_path / "x.webp", lossless=True)
    np.testing.assert_array_equal(pixels(load_image(path.read_bytes(), 3)), pixels(load_image(path, 3)))


@pytest.mark.parametrize("kind", ["empty", "truncated_png", "truncated_jpg", "text", "missing"])
def test_unreadable_files_raise(tmp_path, photo, truncated_copy, kind):
    if kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp_path / "page.jpg"
        path.write_text("<html>404 not found</html>")
    elif kind == "missing":
        path = tmp_path / "gone.jpg"
    else:
        ext = kind.split("_")[1]
        full = save(photo(64, 64, seed=6), tmp_path / f"full.{ext}")
        path = truncated_copy(full, tmp_path / f"cut.{ext}")
    with pytest.raises(UnreadableImage) as info:
        load_image(path, 3)
    assert info.value.path == str(path) and info.value.reason
    assert isinstance(info.value, ValueError)
    expected = {"empty": "empty file", "text": "not an image", "missing": "no such file or directory"}
    assert expected.get(kind, "truncated") in info.value.reason.lower()


def test_images_over_the_pixel_limit_raise_before_decoding(tmp_path, photo, monkeypatch):
    path = save(photo(20, 20), tmp_path / "big.png")
    monkeypatch.setattr(decode, "MAX_PIXELS", 399)  # the one limit, read at call time
    with pytest.raises(UnreadableImage, match="20x20 = 400 pixels, over the limit of 399 pixels"):
        load_image(path, 3)
    np.save(tmp_path / "big.npy", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(UnreadableImage, match="20x20 = 400 pixels, over the limit of 399 pixels"):
        load_image(tmp_path / "big.npy", 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 199)  # PIL's own error, above twice its limit
    with pytest.raises(UnreadableImage, match="exceeds limit"):
        load_image(path, 3)


def test_unreadable_image_survives_pickling():
    err = pickle.loads(pickle.dumps(UnreadableImage("a/b.jpg", "truncated")))
    assert (err.path, err.reason) == ("a/b.jpg", "truncated")


def test_multichannel_npy(tmp_path, photo):
    rng = np.random.default_rng(0)
    hwc = rng.random((12, 10, 5), dtype=np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", hwc.transpose(2, 0, 1))
    for name in ("hwc.npy", "chw.npy"):
        out = load_image(tmp_path / name, 5)
        assert out.dtype == np.float32 and out.shape == (12, 10, 5)
        np.testing.assert_array_equal(out, hwc)
    np.testing.assert_array_equal(load_image((tmp_path / "hwc.npy").read_bytes(), 5), hwc)

    np.save(tmp_path / "u16.npy", np.full((4, 4, 4), 65535, dtype=np.uint16))
    np.testing.assert_array_equal(load_image(tmp_path / "u16.npy", 4), np.ones((4, 4, 4), np.float32))

    with pytest.raises(UnreadableImage, match="expected 4 channels"):
        load_image(tmp_path / "hwc.npy", 4)
    png = save(photo(8, 8), tmp_path / "rgb.png")
    with pytest.raises(UnreadableImage, match="only .npy"):
        load_image(png, 4)

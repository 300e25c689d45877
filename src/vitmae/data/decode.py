"""Robust image decoding: any file a user may have becomes an 'L' or 'RGB' image, or a clear error.

Bad files are a fact of life in large image folders (empty downloads, truncated copies, HTML saved as
.jpg, decompression bombs). They raise `UnreadableImage`, which the loader turns into a skipped sample
instead of a crashed run.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
import numpy.lib.format as npy_format
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".npy")

# What a decoded sample is: a PIL image ('L' or 'RGB') for 1 or 3 channels, or a float32 (H, W, C)
# array for the multi-channel .npy files of remote sensing and medical data.
ImageLike = Image.Image | np.ndarray

_NPY_MAGIC = b"\x93NUMPY"
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# The one pixel limit of every decoder (PIL images, .npy arrays, the demo's uploads): PIL's own default
# decompression-bomb limit, about 0.25 GiB of 24-bit pixels. Read at call time, so tests may lower it.
MAX_PIXELS = 89_478_485


def pixel_limit_problem(width: int, height: int) -> str | None:
    """Why an image of width x height pixels is refused (None if it is not): over MAX_PIXELS, a
    decompression bomb or more than any model input needs."""
    if width * height <= MAX_PIXELS:
        return None
    return f"{width}x{height} = {width * height} pixels, over the limit of {MAX_PIXELS} pixels"


class UnreadableImage(ValueError):
    """A file that cannot be decoded into an image with the requested channels."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # keep (path, reason) when the error crosses a worker-process boundary
        return (UnreadableImage, (self.path, self.reason))


def load_image(source: str | Path | bytes, in_chans: int) -> ImageLike:
    """Decode a file path or encoded bytes into an image with `in_chans` channels.

    1 channel gives a PIL 'L' image, 3 an 'RGB' image; any channel count is accepted for .npy arrays,
    which come back as float32 (H, W, C). Raises UnreadableImage with a short reason otherwise.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if (len(source) if isinstance(source, bytes) else os.path.getsize(source)) == 0:
            raise UnreadableImage(name, "empty file")
        if _is_npy(source):
            return _load_npy(source, in_chans, name)
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            # MAX_PIXELS is checked below, from the header; PIL's warning (over its limit, under twice
            # it) would only say the same. Above twice its limit PIL raises, and that is reported.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(data) as img:
                if in_chans not in (1, 3):
                    raise UnreadableImage(name, f"{in_chans} channels requested from {img.format} files "
                                                f"({img.mode}); only .npy arrays can have {in_chans}")
                if problem := pixel_limit_problem(*img.size):
                    raise UnreadableImage(name, problem)
                img.load()  # decode everything now, so a truncated file fails here and not later
                return convert_image(ImageOps.exif_transpose(img), in_chans)
    except UnreadableImage:
        raise
    except (
        OSError,  # also UnidentifiedImageError, truncated data, missing files
        SyntaxError,  # a broken PNG chunk
        ValueError,
        EOFError,
        Image.DecompressionBombError,
    ) as err:
        raise UnreadableImage(name, _short_reason(err)) from err


def header_size(path: str | Path, in_chans: int) -> tuple[int, int] | None:
    """(height, width) of an image file read from its header alone, no pixel decoded, as `load_image`
    would give it (EXIF rotation applied; a (C, H, W) .npy array's spatial sides); None if unreadable."""
    name = str(path)
    try:
        if _is_npy(path):
            with open(path, "rb") as f:
                shape = _npy_header(f, name)[0]
            channels_first = len(shape) == 3 and shape[-1] != in_chans and shape[0] == in_chans
            return tuple(shape[1:3] if channels_first else shape[:2]) if len(shape) in (2, 3) else None
        with Image.open(path) as img:
            width, height = img.size
            rotated = img.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
            return (width, height) if rotated else (height, width)
    except (UnreadableImage, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None


def convert_image(img: Image.Image, in_chans: int) -> Image.Image:
    """Convert a PIL image of any mode to 'L' (in_chans 1) or 'RGB' (in_chans 3).

    Transparent pixels are composited on black (what the model sees where there is no content);
    16-bit and float images have their own value range stretched to 0..255 so contrast is kept;
    RGB to 'L' uses PIL's luminance (ITU-R 601-2) and 'L' to RGB replicates the channel.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"PIL images have 1 or 3 channels, not {in_chans}")
    target = "L" if in_chans == 1 else "RGB"
    if img.mode in _HIGH_DEPTH_MODES:
        img = _stretch_to_8bit(img)
    elif img.mode == "P" or "A" in img.mode or "a" in img.mode or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # CMYK, YCbCr, 1-bit, RGBA after compositing, ...
    return img if img.mode == target else img.convert(target)


def _stretch_to_8bit(img: Image.Image) -> Image.Image:
    values = np.asarray(img, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


def _is_npy(source: str | Path | bytes) -> bool:
    if isinstance(source, bytes):
        return source.startswith(_NPY_MAGIC)
    return Path(source).suffix.lower() == ".npy"


def _load_npy(source: str | Path | bytes, in_chans: int, name: str) -> np.ndarray:
    """(H, W, C) or (C, H, W) arrays with `in_chans` channels -> float32 (H, W, C).

    The header is checked before any data is read (dtype, shape, channels, the pixel limit, and that
    the file holds exactly the bytes the header promises), so a hostile header cannot make a huge
    allocation. Integer arrays are divided by their dtype's maximum (uint8 / 255, uint16 / 65535) so
    they land in [0, 1] like decoded photos; float arrays are taken as they are, and must be finite.
    """
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as f:
        shape, fortran_order, dtype = _npy_header(f, name)
        channels_first = len(shape) == 3 and shape[-1] != in_chans and shape[0] == in_chans
        hwc = shape[1:] + shape[:1] if channels_first else shape if len(shape) == 3 else (*shape, 1)
        if hwc[-1] != in_chans:
            raise UnreadableImage(name, f"expected {in_chans} channels, got shape {shape}")
        if problem := pixel_limit_problem(hwc[1], hwc[0]):
            raise UnreadableImage(name, problem)
        expected = math.prod(shape) * dtype.itemsize
        available = (len(source) if isinstance(source, bytes) else os.fstat(f.fileno()).st_size) - f.tell()
        if available != expected:
            raise UnreadableImage(name, f"the .npy header promises {expected} bytes ({dtype}, shape {shape}); "
                                        f"the file holds {available}")
        array = np.frombuffer(f.read(expected), dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    array = array.transpose(1, 2, 0) if channels_first else array.reshape(hwc)
    if np.issubdtype(array.dtype, np.integer):
        return (array / np.iinfo(array.dtype).max).astype(np.float32)
    if array.dtype != np.bool_:
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:  # would reach the loss as NaN and stop the run without naming the file
            raise UnreadableImage(name, f"{bad} of {array.size} values are NaN or infinite")
    return array.astype(np.float32)


def _npy_header(f: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy stream, checked; the stream is left at the data."""
    try:
        version = npy_format.read_magic(f)
    except ValueError as err:  # an .npz renamed .npy, a truncated file
        raise UnreadableImage(name, f"not a .npy array ({_short_reason(err)})") from err
    if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 field names: structured arrays
        raise UnreadableImage(name, f"unsupported .npy format version {version[0]}.{version[1]}")
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read_header(f)
    except Exception as err:  # numpy parses the header text with ast and tokenize: any of their errors
        raise UnreadableImage(name, f"broken .npy header ({_short_reason(err)})") from err
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise UnreadableImage(name, f"unsupported array dtype {dtype}")
    if len(shape) not in (2, 3):
        raise UnreadableImage(name, f"expected a 2-D or 3-D array, got shape {shape}")
    if 0 in shape:
        raise UnreadableImage(name, f"empty array of shape {shape}")
    return shape, fortran_order, dtype


def _short_reason(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):  # its message repeats the file name
        return "not an image in a format PIL can read"
    if isinstance(err, OSError) and err.strerror:  # "No such file or directory", without the path again
        return err.strerror
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."

"""Fuzz of the image decoders: valid PNG, JPEG, WebP, TIFF and NPY files, mutated (bit flips, truncation,
inserted bytes, header fields set to extremes), go through `load_image` from a file and from bytes, as
the folder loader and the shard reader call it. Only `UnreadableImage` (the loader's "skip this file")
may come out, a decode never takes longer than DECODE_BOUND_S, and what does decode is a usable image.

The bounded run here takes about half a minute, reproducibly (derandomized); a longer one:
    VITMAE_FUZZ_EXAMPLES=20000 pytest tests/data/test_fuzz_decode.py
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.hostile_files import FUZZ_FORMATS, encoded
from vitmae.data import UnreadableImage, load_image

EXAMPLES = int(os.environ.get("VITMAE_FUZZ_EXAMPLES", "400"))  # per format
DECODE_BOUND_S = 2.0
SEEDS = {fmt: encoded(fmt) for fmt in FUZZ_FORMATS}
EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "NPY": ".npy"}
# Header fields hold sizes, offsets and counts: set them to what overflows or allocates most.
# PIL warns about the corrupt EXIF blocks of mutated TIFFs before it fails or decodes: expected noise.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
EXTREMES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff")


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> bytes:
    data = bytearray(SEEDS[fmt])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "truncate", "insert", "header")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # a field of the first 128 bytes, where every format keeps its sizes and offsets
            at = draw(st.integers(0, max(min(len(data), 128) - 1, 0)))
            value = draw(st.sampled_from(EXTREMES))
            data[at:at + len(value)] = value
    return bytes(data)


def decode_within_bound(source: str | bytes) -> None:
    start = time.perf_counter()
    try:
        image = load_image(source, 3)
    except UnreadableImage as err:
        assert err.reason and "\n" not in err.reason  # a one-line reason for the skip list
        image = None
    elapsed = time.perf_counter() - start
    assert elapsed < DECODE_BOUND_S, f"a decode took {elapsed:.2f} s"
    if isinstance(image, Image.Image):
        assert image.mode == "RGB" and image.width * image.height > 0
    elif image is not None:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3 and np.isfinite(image).all()


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@pytest.mark.parametrize("fmt", FUZZ_FORMATS)
def test_mutated_files_are_decoded_or_skipped_never_a_crash_or_a_hang(fmt, folder):
    path = folder / f"fuzzed{EXTENSION[fmt]}"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated(fmt))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        decode_within_bound(str(path))  # as the folder loader reads it (.npy by name)
        decode_within_bound(data)  # as the shard reader does (.npy by its magic)

    check()

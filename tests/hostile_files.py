"""Hostile input files for the reliability tests: each function writes one kind of bad input (the cases
of issue 14) into a folder and returns its path. The valid files they start from are real encodings of
a small smooth image, also used as the seeds of the decoder fuzz (tests/data/test_fuzz_decode.py)."""
from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FUZZ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "NPY")


def smooth_image(width: int = 24, height: int = 20, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A blurred random-colour image: real content, so every encoder has work to do."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).convert(mode)


def encoded(fmt: str, seed: int = 0) -> bytes:
    """A valid file of `fmt` (one of FUZZ_FORMATS) holding a small RGB image."""
    img = smooth_image(seed=seed)
    if fmt == "NPY":
        out = io.BytesIO()
        np.save(out, np.asarray(img))
        return out.getvalue()
    out = io.BytesIO()
    img.save(out, format=fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
    return out.getvalue()


def png_claiming_size(folder: Path, width: int, height: int, name: str = "claims.png") -> Path:
    """A small PNG whose header (IHDR, checksum fixed) claims width x height: a decompression bomb's
    header, which must be refused before any pixel is decoded."""
    data = bytearray(encoded("PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return _write(folder / name, bytes(data))


def npy_empty(folder: Path) -> Path:
    """A (0, 0, 3) array (a ZeroDivisionError in the resize once)."""
    np.save(folder / "empty.npy", np.zeros((0, 0, 3), np.uint8))
    return folder / "empty.npy"


def npz_renamed_npy(folder: Path) -> Path:
    """An .npz archive (a zip) saved under a .npy name (an AttributeError once)."""
    np.savez(folder / "archive.npz", image=np.zeros((8, 8, 3), np.uint8))
    return (folder / "archive.npz").rename(folder / "archive.npy")


def npy_huge_header(folder: Path, shape: tuple[int, ...] = (100_000, 100_000, 3)) -> Path:
    """A valid .npy header claiming `shape` of uint8 (112 GiB by default) and no data at all."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * (-(len(header) + 11) % 64) + "\n"  # pads the header to a multiple of 64 bytes
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")
    return _write(folder / "huge.npy", data)


def npy_nonfinite(folder: Path, value: float = float("nan")) -> Path:
    """A float array of a real size with one NaN (or inf) pixel: a NaN loss if it were trained on."""
    array = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    array[3, 4, 1] = value
    name = "nan.npy" if np.isnan(value) else "inf.npy"
    np.save(folder / name, array)
    return folder / name


class _Zeros(io.RawIOBase):
    """`size` zero bytes, read in chunks: a huge tar member written without holding it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def shard(path: Path, members: list[tuple[str, bytes | int]], mode: str = "w") -> Path:
    """A tar shard of (name, payload) members; an int payload is that many zero bytes, streamed."""
    with tarfile.open(path, mode, **({"compresslevel": 1} if mode == "w:gz" else {})) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = payload if isinstance(payload, int) else len(payload)
            tar.addfile(info, _Zeros(payload) if isinstance(payload, int) else io.BytesIO(payload))
    return path


def shard_with_big_members(folder: Path, text_bytes: int, image_bytes: int) -> Path:
    """A .tar.gz of 4 samples (small on disk: the big members are zeros): a good one, one with a
    `text_bytes` caption next to its image, one whose png member is `image_bytes` long, a good one."""
    png = encoded("PNG")
    return shard(folder / "big-members.tar.gz", [
        ("a.png", png), ("a.cls", b"0"),
        ("b.png", png), ("b.txt", text_bytes), ("b.cls", b"1"),
        ("c.png", image_bytes), ("c.cls", b"2"),
        ("d.png", png), ("d.cls", b"3"),
    ], mode="w:gz")


def shard_with_traversal_names(folder: Path) -> Path:
    """A shard whose member names climb out of any extraction folder, or are absolute, plus a symlink
    member named like an image: reading it must write nothing anywhere."""
    png = encoded("PNG")
    path = shard(folder / "traversal.tar", [("../../escape.png", png), ("/tmp/absolute.png", png)])
    with tarfile.open(path, "a") as tar:
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def rgb_folder(folder: Path, count: int, size: int = 32) -> Path:
    """`count` ordinary RGB PNG files (good images, for a model that wants another channel count)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        smooth_image(size, size, seed=i).save(folder / f"img{i:02d}.png")
    return folder


def csv_not_utf8(folder: Path) -> Path:
    """A CSV list saved in Latin-1, with an accented file name on line 2."""
    return _write(folder / "latin1.csv", "path,label\ncaf\u00e9.png,0\n".encode("latin-1"))


def csv_with_header(folder: Path, images: list[str], header: str = "filename,label") -> Path:
    """A CSV of `images` (paths relative to `folder`) with integer labels 0, 1, 0, ... under a header
    row that names no file."""
    rows = [header] + [f"{image},{i % 2}" for i, image in enumerate(images)]
    return _write(folder / "with-header.csv", ("\n".join(rows) + "\n").encode())


def csv_with_label(folder: Path, images: list[str], label: int, row: int = 1) -> Path:
    """A CSV of `images` with labels 0, 1, 0, ... except `label` on data row `row` (0-based)."""
    labels = [label if i == row else i % 2 for i in range(len(images))]
    text = "".join(f"{image},{lab}\n" for image, lab in zip(images, labels))
    return _write(folder / f"label-{label}.csv", text.encode())


def folder_with_link_loops(root: Path) -> Path:
    """root/a (3 images) and root/b (1 image) with two link loops (a/up -> root, b/self -> b), an alias
    folder (alias -> a) and a file link (a/again.png -> a/img0.png): 4 real images in all."""
    rgb_folder(root / "a", 3)
    (root / "b").mkdir()
    smooth_image(seed=9).save(root / "b" / "only.png")
    os.symlink("..", root / "a" / "up")
    os.symlink(".", root / "b" / "self")
    os.symlink("a", root / "alias")
    os.symlink("img00.png", root / "a" / "again.png")
    return root


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path

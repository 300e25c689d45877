from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random-colour image (a blurred noise field), so crops of it differ visibly."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    return img.convert(mode)


def _truncated_copy(path: Path, target: Path) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.fixture
def photo():
    return _photo


@pytest.fixture
def truncated_copy():
    return _truncated_copy


@pytest.fixture
def folder_with_two_bad_files(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """root/{a,b}/*.png|jpg: 10 good images, one truncated JPEG and one text file named .png."""
    root = tmp_path / "images"
    good = []
    for i in range(10):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i}.{'png' if i % 3 else 'jpg'}"
        _photo(40 + i, 36, seed=i).save(path)
        good.append(str(path))
    bad = [str(_truncated_copy(Path(good[0]), root / "a" / "broken.jpg")), str(root / "b" / "notes.png")]
    Path(bad[1]).write_text("not an image")
    return root, sorted(good), sorted(bad)

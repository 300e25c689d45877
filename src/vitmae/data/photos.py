"""The photographs that ship inside the scikit-image wheel (`skimage.data.data_dir`): a source of real
photos with nothing to download, and the texture pool of the fashion-scenes backgrounds."""
from __future__ import annotations

import os

from vitmae.data.files import FileSource
from vitmae.data.source import DataError

# The other skimage.data images are downloaded on first use, which this project never does.
PHOTO_FILES = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg",
)


def bundled_photos() -> list[str]:
    """The paths of the PHOTO_FILES that are installed; DataError when none is."""
    from skimage.data import data_dir  # optional: only the photos (and the scenes) need scikit-image

    paths = [os.path.join(data_dir, name) for name in PHOTO_FILES]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise DataError(f"no bundled photos in {data_dir}: reinstall scikit-image")
    return paths


class PhotosSource(FileSource):
    """The photographs bundled with scikit-image (astronaut, coffee, chelsea, rocket, ...), unlabeled."""

    def __init__(self, in_chans: int = 3) -> None:
        paths = bundled_photos()
        super().__init__(paths, [-1] * len(paths), None, in_chans)

"""Write a folder of JPEG photos for timing the input pipeline: random crops of a few source photos,
resized to 500x375 (one in four 375x500), randomly mirrored, saved at quality 90 like a typical
ImageNet file.

    python scripts/make_jpeg_folder.py /tmp/jpegs --count 20000                 # scikit-image's photos
    python scripts/make_jpeg_folder.py /tmp/jpegs --count 20000 --from-dir DIR  # any images

Needs only Pillow and numpy (and scikit-image's bundled photos unless --from-dir is given). Files go to
OUT/000/000000.jpg, OUT/000/000001.jpg, ... (1000 per sub-folder), the same for the same arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# The photographs that ship inside the scikit-image wheel (as vitmae's PhotosSource).
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg",
)

_paths: list[str] = []  # the source images, in each worker process


def source_paths(from_dir: str | None) -> list[str]:
    if from_dir:
        paths = sorted(str(p) for p in Path(from_dir).rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not paths:
            sys.exit(f"no images ({', '.join(EXTENSIONS)}) under {from_dir}")
        return paths
    try:
        from skimage.data import data_dir
    except ImportError:
        sys.exit("scikit-image is not installed: give --from-dir with some images")
    return [os.path.join(data_dir, name) for name in SKIMAGE_PHOTOS if os.path.isfile(os.path.join(data_dir, name))]


def _set_paths(paths: list[str]) -> None:
    _paths.extend(paths)


@lru_cache(maxsize=64)  # all of scikit-image's photos; a few of a large --from-dir at a time
def _photo(k: int) -> Image.Image:
    return Image.open(_paths[k]).convert("RGB")


def _write(job: tuple[str, int, int, int, int]) -> None:
    out, start, stop, seed, quality = job
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        photo = _photo(int(rng.integers(len(_paths))))
        width, height = (375, 500) if rng.random() < 0.25 else (500, 375)
        # The largest crop of the output's aspect ratio, scaled by 0.35-1, somewhere in the photo.
        fit = min(photo.width / width, photo.height / height) * rng.uniform(0.35, 1.0)
        crop_w, crop_h = max(1, round(width * fit)), max(1, round(height * fit))
        left = rng.integers(photo.width - crop_w + 1)
        top = rng.integers(photo.height - crop_h + 1)
        img = photo.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h),
                           reducing_gap=2.0)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = Path(out) / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--count", type=int, default=10000, help="number of JPEG files")
    parser.add_argument("--from-dir", help="crop these images (searched recursively) instead of scikit-image's")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    args = parser.parse_args()
    paths = source_paths(args.from_dir)
    step = 250
    jobs = [(args.out, start, min(start + step, args.count), args.seed, args.quality)
            for start in range(0, args.count, step)]
    with ProcessPoolExecutor(args.workers, initializer=_set_paths, initargs=(paths,)) as pool:
        list(pool.map(_write, jobs))
    print(f"{args.count} JPEG files from {len(paths)} source images in {args.out}")


if __name__ == "__main__":
    main()

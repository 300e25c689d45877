"""Data specs to sources: the one registry of source kinds, and `open_source`.

A spec is how a user names data (`--data`, a YAML key, a Python argument): a built-in name or a path.
Each kind of source says which specs it recognises, which targets it can give, and how to build its
source. The targets:

- "image": images, for pre-training or embedding (labels a source holds come along, unused or listed);
- "class": a class id per image (-1: unlabeled); a folder's first-level sub-folders are the classes;
- "mask": an index mask per image (semantic segmentation, `segmentation.py`);
- "detection": boxes, labels and instance masks per image (`coco.py`);
- "clip": a video, decoded by the clip transforms, with its class id (-1: unlabeled) (`video.py`,
  `clips.py`).

The built-in data sets (fashion-mnist, photos, fashion-scenes, moving-fashion-mnist) are named here and
nowhere else. The
first kind that recognises a spec and gives the target asked for builds the source; a spec that no kind
recognises, or only kinds that give other targets, is a DataError of one line that lists what the
target accepts. A new kind of data is a new entry in SOURCE_KINDS (video clips came as three, with the
target "clip").
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitmae.data.coco import CocoSource, SceneDetectionSource, coco_split
from vitmae.data.fashion_mnist import FashionMNISTSource
from vitmae.data.files import CsvSource, ImageFolderSource
from vitmae.data.moving_fashion import MOVING_FASHION, MovingFashionSource
from vitmae.data.photos import PhotosSource
from vitmae.data.scenes import FASHION_SCENES, FashionScenesSource, scene_count
from vitmae.data.segmentation import SegmentationFolderSource
from vitmae.data.shards import ShardSource
from vitmae.data.source import DataError
from vitmae.data.video import ClipFolderSource, ClipListSource

# what each target is called in errors: (what a source gives, what the data is called)
TARGETS = {
    "image": ("images", "data source"),
    "class": ("class labels", "data source"),
    "mask": ("segmentation masks", "segmentation data"),
    "detection": ("object boxes", "detection data"),
    "clip": ("video clips", "video data"),
}


@dataclass(frozen=True)
class SourceOptions:
    """What some kinds need besides the spec, the split and the target; each kind reads its own."""

    in_chans: int | None = None  # None: the data's own (SourceKind.in_chans)
    # fashion-scenes: `scene_size` px scenes made from `seed`; `scenes` of them for training (validation:
    # `val_scenes`, or a fifth as many; see scenes.scene_count). moving-fashion-mnist's clips are made
    # from `seed` too.
    seed: int = 0
    scene_size: int = 64
    scenes: int | None = None
    val_scenes: int | None = None
    # segmentation folders (segmentation.SegmentationFolderSource)
    num_classes: int | None = None
    ignore_index: int = 255
    reduce_zero: bool = False
    mask_values: Sequence[int] | None = None  # value k read as class k (segmentation.BINARY_MASK_VALUES: 0, 255)
    # a COCO annotation file: its image folder (default: the file's folder)
    images: str | Path | None = None
    # moving-fashion-mnist (moving_fashion.py): which label (direction, playback or class), the clips'
    # frames, size in px, items and speed, and how many training clips (validation: a fifth as many;
    # None: the defaults, moving_fashion.DEFAULT_CLIPS)
    clip_label: str = "direction"
    clip_frames: int = 16
    clip_size: int = 32
    clip_items: int = 1
    clip_speed: int = 2
    clips: int | None = None


@dataclass(frozen=True)
class SourceKind:
    accepts: str  # how an error names the specs it recognises
    targets: tuple[str, ...]
    recognises: Callable[[str, SourceOptions], bool]  # (spec, options)
    build: Callable[[str, str, str, SourceOptions], Any]  # (spec, split, target, options) -> source
    in_chans: int = 3  # the channels of its images, unless asked otherwise


def _fashion_mnist(spec: str, split: str, target: str, options: SourceOptions) -> FashionMNISTSource:
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r} for fashion-mnist (train, val or test)")
    return FashionMNISTSource("train" if split == "train" else "test", in_chans=options.in_chans)


def _fashion_scenes(spec: str, split: str, target: str, options: SourceOptions):
    if options.mask_values is not None:  # its masks are made as class ids
        raise DataError(f"mask values read a segmentation folder's masks; {FASHION_SCENES} has none to read")
    scenes = scene_count(split, options.scenes, options.val_scenes)
    kind = FashionScenesSource if target == "mask" else SceneDetectionSource
    return kind(split, scenes, options.scene_size, options.seed, options.in_chans)


def _split_folder(spec: str, split: str) -> str:
    """The folder's `split` sub-folder where it has one (ImageNet's train/ and val/), else the folder."""
    root = os.path.join(spec, split)
    return root if os.path.isdir(root) else spec


def _image_folder(spec: str, split: str, target: str, options: SourceOptions) -> ImageFolderSource:
    return ImageFolderSource(_split_folder(spec, split), target == "class", options.in_chans)


def _moving_fashion(spec: str, split: str, target: str, options: SourceOptions) -> MovingFashionSource:
    clips = scene_count(split, options.clips)  # validation: a fifth as many, as for fashion-scenes
    return MovingFashionSource(split, clips, options.clip_frames, options.clip_size, options.clip_items,
                               options.clip_speed, options.seed, options.in_chans, options.clip_label)


SOURCE_KINDS: list[SourceKind] = [
    SourceKind("'fashion-mnist'", ("image", "class"), lambda spec, o: spec == "fashion-mnist",
               _fashion_mnist, in_chans=1),
    SourceKind("'photos'", ("image",), lambda spec, o: spec == "photos",
               lambda spec, split, target, o: PhotosSource(o.in_chans)),
    SourceKind(f"'{FASHION_SCENES}'", ("mask", "detection"), lambda spec, o: spec == FASHION_SCENES,
               _fashion_scenes, in_chans=1),
    SourceKind("a .tar shard pattern", ("image", "class"), lambda spec, o: ".tar" in spec,
               lambda spec, split, target, o: ShardSource(spec, o.in_chans)),
    SourceKind("a .csv file", ("image", "class"), lambda spec, o: spec.lower().endswith(".csv"),
               lambda spec, split, target, o: CsvSource(spec, o.in_chans)),
    # a file given with its image folder is a COCO file whatever its name (detect --train-json ...)
    SourceKind("a COCO .json file", ("detection",), lambda spec, o: spec.lower().endswith(".json") or bool(o.images),
               lambda spec, split, target, o: CocoSource(spec, o.images or Path(spec).parent, o.in_chans)),
    SourceKind("an existing folder", ("image", "class"), lambda spec, o: os.path.isdir(spec), _image_folder),
    SourceKind("an existing folder (DIR/{train,val}/{images,masks}/)", ("mask",),
               lambda spec, o: os.path.isdir(spec), lambda spec, split, target, o: SegmentationFolderSource(
                   spec, split, o.num_classes, o.ignore_index, o.reduce_zero, o.in_chans, o.mask_values)),
    SourceKind("a folder in COCO 2017's layout (DIR/annotations/instances_SPLIT*.json)",
               ("detection",), lambda spec, o: os.path.isdir(spec),
               lambda spec, split, target, o: CocoSource(*coco_split(spec, split), o.in_chans)),
    SourceKind(f"'{MOVING_FASHION}'", ("clip",), lambda spec, o: spec == MOVING_FASHION, _moving_fashion,
               in_chans=1),
    SourceKind("a clip list (.txt of 'path label' lines, or .csv)", ("clip",),
               lambda spec, o: spec.lower().endswith((".txt", ".csv")),
               lambda spec, split, target, o: ClipListSource(spec, o.in_chans)),
    SourceKind("a folder of video files or of frame folders", ("clip",), lambda spec, o: os.path.isdir(spec),
               lambda spec, split, target, o: ClipFolderSource(_split_folder(spec, split), o.in_chans)),
]


def open_source(spec: str, split: str = "train", target: str = "image", **options: Any):
    """The `split` of the data `spec` names, as a source of `target`s ("image", "class", "mask",
    "detection" or "clip"); `options` are SourceOptions fields (in_chans, the scenes' seed and sizes, a
    segmentation folder's classes and how its mask values are read, a COCO file's image folder, the
    built-in clips' label and sizes)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    given = SourceOptions(**options)
    recognising = [kind for kind in SOURCE_KINDS if kind.recognises(spec, given)]
    kind = next((kind for kind in recognising if target in kind.targets), None)
    if kind is None:
        raise DataError(_not_accepted(spec, target, recognising))
    return kind.build(spec, split, target, replace(given, in_chans=given.in_chans or kind.in_chans))


def _not_accepted(spec: str, target: str, recognising: list[SourceKind]) -> str:
    """One line: what `spec` is (if anything) and what `target` accepts."""
    accepted = [kind.accepts for kind in SOURCE_KINDS if target in kind.targets]
    gives, noun = TARGETS[target]
    if not recognising:
        return f"{noun} {spec!r} is not {_listing(accepted, 'nor')}"
    kind = recognising[0]
    return (f"{noun} {spec!r} is {kind.accepts}, which gives {_listing([TARGETS[t][0] for t in kind.targets], 'or')}, "
            f"not {gives}: give {_listing(accepted, 'or')}")


def _listing(items: list[str], last: str) -> str:
    """'a, b {last} c'."""
    return f" {last} ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else items[0]


def build_source(spec: str, split: str = "train", labeled: bool = False, in_chans: int | None = None):
    """`open_source` of images, or with `labeled` of class labels (the spelling vitmae.data has long had)."""
    return open_source(spec, split, "class" if labeled else "image", in_chans=in_chans)

"""The records of the dense runs (see families/run.py): what every dense run records (`DenseRecord`: its
classes and the data it trained on), and the two: RUN/segmenter.json (`SegmentRecord`) and
RUN/detector.json (`DetectRecord`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..run import RunRecord


@dataclass(frozen=True, kw_only=True)
class DenseRecord(RunRecord):
    """What every dense run records besides its encoder: its classes and the data it trained on."""

    ADDED: ClassVar[dict[str, Any]] = {"pos_embed": "sincos", "val_scenes": None}  # version 0 may lack these

    classes: list[str] | None  # the class names (a segmentation folder without classes.txt: None)
    data: str  # the --data it trained on: fashion-scenes, or the data's folder
    scenes: int | None  # fashion-scenes' --scenes, --val-scenes and --scene-size
    val_scenes: int | None
    scene_size: int
    seed: int
    # version 2: how the sizes were chosen (families/dense/sizing.py); None in the runs from before
    recipe: str | None = None  # --recipe: auto or paper
    sized: dict[str, str] | None = None  # the options sized rather than given, and why each


@dataclass(frozen=True, kw_only=True)
class SegmentRecord(DenseRecord):
    """A `vitmae segment` run: its head, the blocks that feed it, the crop and sliding-window stride, and how
    the masks are read."""

    KIND: ClassVar[str] = "segment"
    FILE: ClassVar[str] = "segmenter.json"
    VERSION: ClassVar[int] = 3

    num_classes: int
    head: str
    out_indices: list[int]
    crop_size: int
    stride: int
    ignore_index: int
    reduce_zero_label: bool
    mask_values: list[int] | None = None  # the mask value of each class (--mask-values); None: a value is its class
    # version 3: the UperNet and auxiliary head widths; None: the linear head, or a run from before (the
    # widths upernet_widths gives)
    head_channels: int | None = None
    aux_channels: int | None = None

    @property
    def class_names(self) -> list[str]:
        """The run's class names; a folder without classes.txt: the class indices."""
        return self.classes or [str(c) for c in range(self.num_classes)]


@dataclass(frozen=True, kw_only=True)
class DetectRecord(DenseRecord):
    """A `vitmae detect` run: its categories, whether it predicts masks, the detector's sizes, and the COCO
    files it read."""

    KIND: ClassVar[str] = "detect"
    FILE: ClassVar[str] = "detector.json"
    VERSION: ClassVar[int] = 2
    ADDED: ClassVar[dict[str, Any]] = {**DenseRecord.ADDED, "files": None, "files_recorded": False}

    classes: list[str]
    category_ids: list[int]  # the COCO category id of each of the model's labels 1..K
    masks: bool
    img_size: list[int]
    window_size: int
    global_blocks: list[int]
    pyramid_channels: int
    proposals: int
    detections_per_image: int
    files: dict[str, list[str]] | None  # {split: [annotation file, image folder]}; None: the built-in scenes
    files_recorded: bool = True  # False: a version-0 record from before `files` was written
    rois_per_image: int | None = None  # version 2; None in the runs from before (training alone uses it)

    @property
    def category_names(self) -> dict[int, str]:
        """The category ids, in the order of the model's labels, and their names."""
        return dict(zip(self.category_ids, self.classes))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path) -> DetectRecord:
        if isinstance(values, dict) and "files" in values and "version" not in values:
            values = {**values, "files_recorded": True}  # version 0, written after `files` came in
        return super().from_dict(values, where)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        del values["files_recorded"]  # known from the version; what is written has them
        return values

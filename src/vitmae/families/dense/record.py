"""The record a dense run writes beside its checkpoints (RUN/segmenter.json, RUN/detector.json): all that
rebuilds its model exactly, beyond the checkpoint's encoder config and normalisation, and finds its data
again. The family that trains writes it (`write`, atomically); `vitmae evaluate`, `predict` and `demo` read
it back typed (`read_record`). Nothing else reads these files by their keys.

`version` says which keys a record has. Version 0 is every record written before the records were typed
(they have no `version` key); they read as version 0 with the keys added since then at the values those
runs had: `pos_embed` "sincos" and no `val_scenes`, and a detection record from before `files` was
written says so (`DetectRecord.files_recorded`). A record from a newer vitmae than this one is refused.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...interop import CheckpointError
from ...interop.vitmae_format import resolve_checkpoint
from ...train.checkpoint import write_text_atomic

VERSION = 1  # of the records written now; 0: those written before they had a version


@dataclass(frozen=True, kw_only=True)
class DenseRecord:
    """What every dense run records: its classes, the encoder's position table and the data it trained on."""

    KIND: ClassVar[str]  # the family that writes it
    FILE: ClassVar[str]  # its file name in the run directory
    ADDED: ClassVar[dict[str, Any]] = {"pos_embed": "sincos", "val_scenes": None}  # version 0 may lack these

    version: int = VERSION
    classes: list[str] | None  # the class names (a segmentation folder without classes.txt: None)
    pos_embed: str  # the encoder's position table: "sincos", or "learned" (interpolated at other sizes)
    data: str  # the --data it trained on: fashion-scenes, or the data's folder
    scenes: int | None  # fashion-scenes' --scenes, --val-scenes and --scene-size
    val_scenes: int | None
    scene_size: int
    seed: int
    model: dict[str, Any]  # the encoder's architecture (the checkpoint's config says the same)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / self.FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path) -> DenseRecord:
        """The record of `values` (a file's JSON); CheckpointError, one line, if it is not one."""
        if not isinstance(values, dict):
            raise CheckpointError(f"{where}: not a {cls.FILE} record (a JSON object)")
        version = values.get("version", 0)
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(f"{where}: record version {version!r}; this vitmae reads up to {VERSION}: "
                                  "upgrade vitmae")
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        given = {**(cls.ADDED if version == 0 else {}), **values, "version": version}
        unknown = sorted(set(given) - {f.name for f in fields})
        missing = sorted(required - set(given))
        if unknown or missing:
            what = "; ".join(part for part in (f"unknown keys {unknown}" if unknown else "",
                                               f"missing keys {missing}" if missing else "") if part)
            raise CheckpointError(f"{where}: not a version-{version} {cls.FILE} ({what})")
        return cls(**given)


@dataclass(frozen=True, kw_only=True)
class SegmentRecord(DenseRecord):
    """A `vitmae segment` run: its head, the blocks that feed it, the crop and sliding-window stride, and how
    the masks are read."""

    KIND: ClassVar[str] = "segment"
    FILE: ClassVar[str] = "segmenter.json"

    num_classes: int
    head: str
    out_indices: list[int]
    crop_size: int
    stride: int
    ignore_index: int
    reduce_zero_label: bool

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


def find_record(checkpoint: str | Path, kinds: tuple[type[DenseRecord], ...]) -> DenseRecord | None:
    """The record of one of `kinds` of the run that `checkpoint` (the run directory, one of its checkpoints
    or a weights file) belongs to; None for any other checkpoint."""
    path = resolve_checkpoint(checkpoint)
    if not path.exists():  # a hub id, say: no run of ours
        return None
    folder = path if path.is_dir() else path.parent
    for place in (folder, *list(folder.parents)[:2]):  # the checkpoint, RUN/checkpoints, RUN
        for kind in kinds:
            if (place / kind.FILE).is_file():
                return read_record(place / kind.FILE, kind)
    return None


def read_record(path: Path, kind: type[DenseRecord]) -> DenseRecord:
    try:
        values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    return kind.from_dict(values, path)

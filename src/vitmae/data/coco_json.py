"""The validating reader of COCO annotation files (`instances_*.json`, or any file in that format).

`read_coco(path)` reads a file once and checks every part of it before anything else (a source, the
ground truth, pycocotools) uses it:

- The FILE must hold what the rest relies on, or it is refused with a DataError of one line that names
  the file and the first bad entry:
  - at most `max_json_bytes()`, valid JSON (nesting included);
  - an object with the lists `images`, `annotations` and `categories`;
  - every image an object with an `id`, a `file_name` inside the image folder (relative, no `..`), and
    whole-number `width` and `height` of at most decode.MAX_PIXELS pixels;
  - every category an object with an `id`, at most MAX_DENSE_CLASSES of them, names not repeated;
  - ids unique, and all integers or all strings (pycocotools sorts them);
  - every annotation's `category_id` (an integer or a string) one of the categories: a class missing
    from the list would lose every object and prediction of it.
- A malformed ANNOTATION, one among thousands as labelling tools write them, is dropped and listed in
  `CocoFile.dropped` with its reason:
  - not an object, a `category_id` that is no id, an `image_id` of no image;
  - a `bbox` that is not 4 finite numbers, an `iscrowd` that is not 0 or 1, an `area` that is not a
    finite number >= 0;
  - a `segmentation` that is neither empty, nor polygons, nor an RLE of the image's size. Polygons are
    parts of at least 3 points (x, y pairs of finite numbers), within the image's size again on every
    side, whose outlines together are no longer than the image has pixels (pycocotools' work and memory
    grow with the outline). An RLE has whole-number counts >= 0, uncompressed or in COCO's compressed
    string, that add up to the image's pixels: pycocotools would write past its buffer otherwise.
- The annotations kept are what the ground truth holds: `iscrowd` 0 where it is absent, `area` the box's
  where absent, and numbered 1..N in file order (pycocotools finds an annotation by its id, so a
  missing, repeated or 0 id would lose it; no result refers to these ids).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vitmae.data.decode import pixel_limit_problem
from vitmae.data.source import MAX_DENSE_CLASSES, DataError

# COCO 2017's instances_train2017.json is 448 MB and LVIS v1's training file 1.1 GB; json.loads needs
# several times a file's size in memory. Raised for one run with the environment variable.
MAX_COCO_JSON_BYTES = 2 * 2**30
JSON_BYTES_ENV = "VITMAE_MAX_COCO_JSON_BYTES"
TOP_LEVEL_KEYS = ("images", "annotations", "categories")
# A count of a compressed RLE string takes at most this many characters (5 bits each): more is no count
# of an image within the pixel limit, and Python would work on ever larger integers.
MAX_COUNT_CHARS = 7


@dataclass
class CocoFile:
    """A checked COCO file: its images, its categories (sorted by id, each with a name), the well-formed
    annotations as the ground truth holds them, and the dropped ones."""

    path: Path
    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    dropped: list[dict[str, Any]]  # {"annotation": position in the file, "id": its id, "reason": why}

    @property
    def classes(self) -> list[str]:
        """The categories' names, in id order."""
        return [category["name"] for category in self.categories]

    def dataset(self) -> dict[str, list[dict[str, Any]]]:
        """What pycocotools' COCO object is made of."""
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def max_json_bytes() -> int:
    """The size limit of a COCO file: MAX_COCO_JSON_BYTES, or the environment's VITMAE_MAX_COCO_JSON_BYTES."""
    text = os.environ.get(JSON_BYTES_ENV)
    if text is None:
        return MAX_COCO_JSON_BYTES
    if not text.strip().isdigit():
        raise DataError(f"{JSON_BYTES_ENV}={text!r}: expected a number of bytes")
    return int(text)


def read_coco(path: str | Path) -> CocoFile:
    """The checked contents of a COCO annotation file (see the module's docstring); DataError otherwise."""
    path = Path(path)
    data = _load_json(path)
    missing = [key for key in TOP_LEVEL_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise DataError(f"{path} is not a COCO detection file: no {', '.join(repr(k) for k in missing)}")
    for key in TOP_LEVEL_KEYS:
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} is {_kind(data[key])}, not a list")
    images = _check_images(path, data["images"])
    categories = _check_categories(path, data["categories"])
    image_of = {image["id"]: image for image in images}
    known_categories = {category["id"] for category in categories}
    annotations, dropped = [], []
    for position, ann in enumerate(data["annotations"]):
        if isinstance(ann, dict) and _is_id(ann.get("category_id")) and ann["category_id"] not in known_categories:
            raise DataError(f"{path.name}: annotation {_show(ann.get('id'))} has category_id "
                            f"{_show(ann.get('category_id'))}, which is not in 'categories' "
                            f"({_show([c['id'] for c in categories])})")
        kept = _check_annotation(ann, image_of)
        if isinstance(kept, str):
            given_id = ann.get("id") if isinstance(ann, dict) and _is_id(ann.get("id")) else None
            dropped.append({"annotation": position, "id": given_id, "reason": kept})
        else:
            annotations.append({**kept, "id": len(annotations) + 1})
    return CocoFile(path, images, categories, annotations, dropped)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"COCO annotation file not found: {path}")
    size, limit = path.stat().st_size, max_json_bytes()
    if size > limit:
        raise DataError(f"{path} is {size} bytes, over the limit of {limit} bytes for a COCO file "
                        f"(set {JSON_BYTES_ENV} to raise it)")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, an integer of 4300+ digits, deep nesting
        raise DataError(f"{path} is not valid JSON: {' '.join(str(err).split())}") from None


def _kind(value: Any) -> str:
    """How a JSON value is called in an error: 'null', 'an object', 'a list', 'a string', ..."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any, limit: int = 60) -> str:
    """A JSON value in an error, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_id(value: Any) -> bool:
    """Whether a JSON value can be an id: an integer or a string (a boolean, which Python finds equal to 0
    or 1, is not)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _whole(value: Any) -> int | None:
    """A JSON number that is a whole number, as an int (640.0 too); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float (an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _check_ids(path: Path, key: str, entries: list[dict[str, Any]]) -> None:
    """Every entry's id: present, an integer or a string (all of one type), unique."""
    seen: dict[Any, int] = {}
    for i, entry in enumerate(entries):
        if "id" not in entry:
            raise DataError(f"{path}: {key}[{i}] has no 'id'")
        value = entry["id"]
        if not _is_id(value):
            raise DataError(f"{path}: {key}[{i}] has the id {_show(value)}: ids are integers (or strings)")
        if type(value) is not type(entries[0]["id"]):
            raise DataError(f"{path}: {key}[{i}] has the id {_show(value)} and {key}[0] the id "
                            f"{_show(entries[0]['id'])}: ids must be all integers or all strings")
        if value in seen:
            raise DataError(f"{path}: {key}[{i}] repeats the id {_show(value)} of {key}[{seen[value]}]")
        seen[value] = i


def _check_images(path: Path, images: list[Any]) -> list[dict[str, Any]]:
    if not images:
        raise DataError(f"{path}: no images")
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise DataError(f"{path}: images[{i}] is {_kind(image)}, not an object")
    _check_ids(path, "images", images)
    checked = []
    for i, image in enumerate(images):
        for key in ("file_name", "width", "height"):
            if key not in image:
                raise DataError(f"{path}: images[{i}] has no {key!r}")
        width, height = _whole(image["width"]), _whole(image["height"])
        if width is None or height is None or width < 1 or height < 1:
            raise DataError(f"{path}: images[{i}] is {_show(image['width'])} x {_show(image['height'])} pixels: "
                            "width and height are whole numbers of at least 1")
        if too_large := pixel_limit_problem(width, height):
            raise DataError(f"{path}: images[{i}] is {too_large}")
        problem = _file_name_problem(image["file_name"])
        if problem:
            raise DataError(f"{path}: images[{i}] has the file_name {_show(image['file_name'])}: {problem}")
        checked.append({**image, "width": width, "height": height})
    return checked


def _file_name_problem(name: Any) -> str | None:
    """Why a file_name cannot name a file in the image folder (None if it can)."""
    if not isinstance(name, str) or not name or "\0" in name:
        return "not a file name"
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        return "it leads out of the image folder (file names are relative to it, without '..')"
    return None


def _check_categories(path: Path, categories: list[Any]) -> list[dict[str, Any]]:
    if not categories:
        raise DataError(f"{path}: no categories")
    if len(categories) > MAX_DENSE_CLASSES:
        raise DataError(f"{path}: {len(categories)} categories, over the limit of {MAX_DENSE_CLASSES}")
    for i, category in enumerate(categories):
        if not isinstance(category, dict):
            raise DataError(f"{path}: categories[{i}] is {_kind(category)}, not an object")
    _check_ids(path, "categories", categories)
    # named as text, the id's where there is no name: per-class results are keyed by name
    named = [{**c, "name": str(c.get("name", c["id"]))} for c in sorted(categories, key=lambda c: c["id"])]
    first: dict[str, Any] = {}
    for category in named:
        if category["name"] in first:
            raise DataError(f"{path}: the categories {_show(first[category['name']])} and {_show(category['id'])} "
                            f"are both named {_show(category['name'])}")
        first[category["name"]] = category["id"]
    return named


def _check_annotation(ann: Any, image_of: dict[Any, dict[str, Any]]) -> dict[str, Any] | str:
    """The annotation as the ground truth holds it, or why it is dropped."""
    if not isinstance(ann, dict):
        return "not an object"
    if not _is_id(ann.get("category_id")):
        return "its category_id is not an id (an integer or a string)"
    if not (_is_id(ann.get("image_id")) and ann["image_id"] in image_of):
        return "its image_id is not an image of the file"
    image = image_of[ann["image_id"]]
    if "bbox" not in ann:
        return "no bbox"
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4 or not all(_finite(v) for v in box):
        return "bbox is not 4 finite numbers"
    crowd = ann.get("iscrowd", 0)
    if isinstance(crowd, str) or crowd not in (0, 1):
        return "iscrowd is not 0 or 1"
    area = ann.get("area", max(box[2], 0) * max(box[3], 0))
    if not _finite(area) or area < 0:
        return "area is not a finite number >= 0"
    problem = _segmentation_problem(ann.get("segmentation"), image["height"], image["width"])
    if problem:
        return problem
    return {**ann, "iscrowd": int(crowd), "area": area}


def _segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why a segmentation cannot be decoded into a mask of the image (None if it can, or if there is none)."""
    if seg is None or seg == []:
        return None
    if isinstance(seg, list):
        return _polygon_problem(seg, height, width)
    if isinstance(seg, dict):
        return _rle_problem(seg, height, width)
    return "segmentation is neither polygons nor RLE"


def _polygon_problem(parts: list[Any], height: int, width: int) -> str | None:
    outline = 0.0
    for part in parts:
        if not isinstance(part, list):
            return "polygon is not a list of parts"
        if not part:
            return "polygon with an empty part"
        if not all(_finite(v) for v in part):
            return "polygon coordinates that are not finite numbers"
        if len(part) % 2:
            return "polygon part of an odd number of coordinates"
        if len(part) < 6:
            return "polygon part of fewer than 3 points"
        xs, ys = part[0::2], part[1::2]
        if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
            return "polygon far outside the image"
        outline += sum(max(abs(x1 - x0), abs(y1 - y0))
                       for x0, y0, x1, y1 in zip(xs, ys, xs[1:] + xs[:1], ys[1:] + ys[:1]))
    if outline > height * width:
        return "polygon outline longer than the image has pixels"
    return None


def _rle_problem(rle: dict[str, Any], height: int, width: int) -> str | None:
    size = rle.get("size")
    if not isinstance(size, list) or [_whole(v) for v in size] != [height, width]:
        return f"RLE size is not the image's ({height}, {width})"
    counts = rle.get("counts")
    if isinstance(counts, str):
        counts = compressed_counts(counts)
        if counts is None:
            return "RLE counts string is not COCO's compressed format"
    elif not isinstance(counts, list) or not all(_whole(c) is not None for c in counts):
        return "RLE counts are not whole numbers"
    if any(c < 0 for c in counts):
        return "RLE counts that are negative"
    if sum(counts) != height * width:
        return "RLE counts do not add up to the image's pixels"
    return None


def compressed_counts(text: str) -> list[int] | None:
    """The run lengths of an RLE in COCO's compressed string form, None if `text` is not one.

    Each count is written 5 bits per character, least significant group first, as the character
    48 + group, + 32 while more groups follow; bit 16 of the last group is the sign. From the fourth count
    on, what is written is the difference from the count two places before.
    """
    counts: list[int] = []
    value = groups = 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64 or groups == MAX_COUNT_CHARS:
            return None
        value |= (code & 0x1F) << (5 * groups)
        groups += 1
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << (5 * groups)
        counts.append(value + (counts[-2] if len(counts) > 2 else 0))
        value = groups = 0
    return counts if groups == 0 else None

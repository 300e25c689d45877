"""Issue 24, the COCO reader: every malformed file is one DataError line naming the file and the entry;
every malformed annotation is dropped with its reason, and what is kept reads, decodes and scores
without an error from pycocotools."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_api

from vitmae.data import DataError
from vitmae.data.coco import CocoSource, coco_metrics, rle_encode
from vitmae.data.coco_json import JSON_BYTES_ENV, compressed_counts, read_coco
from vitmae.data.source import MAX_DENSE_CLASSES

from ..synthetic_coco import write_coco


def edited(tmp_path, fn, count: int = 3):
    """A valid 3-image COCO file (32-px images; categories 3 and 7), changed by `fn(data)`."""
    path = write_coco(tmp_path, "train2017", count)
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def set_in(data, key, index, **fields):
    data[key][index].update(fields)


def drop_key(data, key, index, field):
    del data[key][index][field]


# -- a malformed file: one line, the file and the first bad entry ---------------------------------------

FILE_CASES = {
    "an object of other keys": (lambda d: d.clear(), "is not a COCO detection file: no 'images', 'annotations', "
                                                     "'categories'"),
    "no categories key": (lambda d: d.pop("categories"), "is not a COCO detection file: no 'categories'"),
    "images null": (lambda d: d.update(images=None), ": 'images' is null, not a list"),
    "images an object": (lambda d: d.update(images={"0": d["images"][0]}), ": 'images' is an object, not a list"),
    "annotations a string": (lambda d: d.update(annotations="none"), ": 'annotations' is a string, not a list"),
    "no images": (lambda d: d.update(images=[], annotations=[]), ": no images"),
    "an image a number": (lambda d: d["images"].__setitem__(1, 7), ": images[1] is a number, not an object"),
    "an image without id": (lambda d: drop_key(d, "images", 0, "id"), ": images[0] has no 'id'"),
    "an image without height": (lambda d: drop_key(d, "images", 2, "height"), ": images[2] has no 'height'"),
    "a width as text": (lambda d: set_in(d, "images", 0, width="32"),
                        ": images[0] is '32' x 32 pixels: width and height are whole numbers of at least 1"),
    "a zero height": (lambda d: set_in(d, "images", 0, height=0), ": images[0] is 32 x 0 pixels"),
    "over the pixel limit": (lambda d: set_in(d, "images", 1, width=100000, height=100000),
                             ": images[1] is 100000x100000 = 10000000000 pixels, over the limit of 89478485 pixels"),
    "image ids repeated": (lambda d: set_in(d, "images", 2, id=100), ": images[2] repeats the id 100 of images[0]"),
    "image ids mixed": (lambda d: set_in(d, "images", 1, id="101"),
                        ": images[1] has the id '101' and images[0] the id 100: ids must be all integers or all "
                        "strings"),
    "an image id null": (lambda d: set_in(d, "images", 0, id=None), ": images[0] has the id None: ids are integers"),
    "a file_name with ..": (lambda d: set_in(d, "images", 1, file_name="../../etc/passwd"),
                            ": images[1] has the file_name '../../etc/passwd': it leads out of the image folder"),
    "an absolute file_name": (lambda d: set_in(d, "images", 0, file_name="/etc/passwd"),
                              ": images[0] has the file_name '/etc/passwd': it leads out of the image folder"),
    "a file_name not text": (lambda d: set_in(d, "images", 0, file_name=5), ": images[0] has the file_name 5: not a "
                                                                            "file name"),
    "a file_name with NUL": (lambda d: set_in(d, "images", 0, file_name="a\0.png"), "not a file name"),
    "a category without id": (lambda d: drop_key(d, "categories", 1, "id"), ": categories[1] has no 'id'"),
    "category ids mixed": (lambda d: set_in(d, "categories", 1, id="7"),
                           ": categories[1] has the id '7' and categories[0] the id 3: ids must be all integers or "
                           "all strings"),
    "a category id true": (lambda d: set_in(d, "categories", 0, id=True), ": categories[0] has the id True"),
    "category ids repeated": (lambda d: set_in(d, "categories", 1, id=3), ": categories[1] repeats the id 3"),
    "category names repeated": (lambda d: set_in(d, "categories", 1, name="red-box"),
                                ": the categories 3 and 7 are both named 'red-box'"),
    "a category a list": (lambda d: d["categories"].append([]), ": categories[2] is a list, not an object"),
    "no categories": (lambda d: d.update(categories=[], annotations=[]), ": no categories"),
    "too many categories": (lambda d: d.update(categories=[{"id": i} for i in range(MAX_DENSE_CLASSES + 1)]),
                            f": {MAX_DENSE_CLASSES + 1} categories, over the limit of {MAX_DENSE_CLASSES}"),
    "an unknown category_id": (lambda d: set_in(d, "annotations", 0, category_id=99),
                               "has category_id 99, which is not in 'categories' ([3, 7])"),
    "a category_id of another type": (lambda d: set_in(d, "annotations", 0, category_id="3"),
                                      "has category_id '3', which is not in 'categories' ([3, 7])"),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_a_malformed_file_is_one_line_naming_the_file_and_the_entry(tmp_path, case):
    change, message = FILE_CASES[case]
    path = edited(tmp_path, change)
    with pytest.raises(DataError) as err:
        CocoSource(path, tmp_path / "train2017")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert path.name in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),  # deeper than Python's recursion limit
    ('{"images": ' + "9" * 5000 + "}", "is not valid JSON"),  # past Python's 4300 digits of an int
    ('{"images": [{"file_name": "caf\xe9.png"}]}', "is not valid JSON"),  # Latin-1 bytes
    ('{"images": [', "is not valid JSON"),
])
def test_json_that_python_cannot_read_is_one_line(tmp_path, text, message):
    path = tmp_path / "instances.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=message) as err:
        read_coco(path)
    assert "\n" not in str(err.value)


def test_the_size_limit_is_documented_and_overridable(tmp_path, monkeypatch):
    path = write_coco(tmp_path, "val2017", 2)
    size = path.stat().st_size
    monkeypatch.setenv(JSON_BYTES_ENV, str(size - 1))
    with pytest.raises(DataError, match=rf"is {size} bytes, over the limit of {size - 1} bytes for a COCO file "
                                        rf"\(set {JSON_BYTES_ENV} to raise it\)"):
        read_coco(path)
    monkeypatch.setenv(JSON_BYTES_ENV, str(size))
    assert len(read_coco(path).images) == 2
    monkeypatch.setenv(JSON_BYTES_ENV, "2GB")
    with pytest.raises(DataError, match=f"{JSON_BYTES_ENV}='2GB': expected a number of bytes"):
        read_coco(path)


# -- a malformed annotation: dropped, counted, listed with its reason -----------------------------------

def annotation(**fields):
    """An annotation of image 100 (32 x 32), category 3, with `fields` replaced (None: removed)."""
    ann = {"id": 900, "image_id": 100, "category_id": 3, "bbox": [4, 4, 10, 10], "area": 100.0, "iscrowd": 0,
           "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]]}
    ann.update(fields)
    return {k: v for k, v in ann.items() if v is not None}


ZIGZAG = [v for i in range(400) for v in (0 if i % 2 else 31, i % 32)]  # 400 points across the image
ANNOTATION_CASES = {
    "a number": (5, "not an object"),
    "no category_id": (annotation(category_id=None), "its category_id is not an id (an integer or a string)"),
    "a category_id list": (annotation(category_id=[3]), "its category_id is not an id (an integer or a string)"),
    "a category_id true": (annotation(category_id=True), "its category_id is not an id (an integer or a string)"),
    "an unknown image_id": (annotation(image_id=12345), "its image_id is not an image of the file"),
    "no image_id": (annotation(image_id=None), "its image_id is not an image of the file"),
    "an image_id true": (annotation(image_id=True), "its image_id is not an image of the file"),
    "no bbox": (annotation(bbox=None), "no bbox"),
    "a bbox of 3 numbers": (annotation(bbox=[1, 2, 3]), "bbox is not 4 finite numbers"),
    "a bbox as text": (annotation(bbox="1,2,3,4"), "bbox is not 4 finite numbers"),
    "a bbox of strings": (annotation(bbox=["1", "2", "3", "4"]), "bbox is not 4 finite numbers"),
    "a bbox of booleans": (annotation(bbox=[True, 1, 2, 3]), "bbox is not 4 finite numbers"),
    "a bbox with NaN": (annotation(bbox=[1, 2, float("nan"), 4]), "bbox is not 4 finite numbers"),
    "a bbox past floats": (annotation(bbox=[1, 2, 10**400, 4]), "bbox is not 4 finite numbers"),
    "iscrowd 2": (annotation(iscrowd=2), "iscrowd is not 0 or 1"),
    "iscrowd as text": (annotation(iscrowd="1"), "iscrowd is not 0 or 1"),
    "a negative area": (annotation(area=-1), "area is not a finite number >= 0"),
    "an area as text": (annotation(area="big"), "area is not a finite number >= 0"),
    "a polygon with an empty part": (annotation(segmentation=[[]]), "polygon with an empty part"),
    "a polygon of 3 coordinates": (annotation(segmentation=[[1, 2, 3]]), "polygon part of an odd number of "
                                                                          "coordinates"),
    "a polygon of two points": (annotation(segmentation=[[1, 2, 3, 4]]), "polygon part of fewer than 3 points"),
    "a polygon of strings": (annotation(segmentation=[["1", "2", "3", "4", "5", "6"]]),
                             "polygon coordinates that are not finite numbers"),
    "a flat polygon": (annotation(segmentation=[1, 2, 3, 4, 5, 6]), "polygon is not a list of parts"),
    "a polygon far outside": (annotation(segmentation=[[1e9, 1e9, 1e9 + 5, 1e9, 1e9, 1e9 + 5]]),
                              "polygon far outside the image"),
    "a polygon's outline too long": (annotation(segmentation=[ZIGZAG]),
                                     "polygon outline longer than the image has pixels"),
    "RLE counts past the pixels": (annotation(segmentation={"size": [32, 32], "counts": [1000, 100]}),
                                   "RLE counts do not add up to the image's pixels"),
    "RLE counts negative": (annotation(segmentation={"size": [32, 32], "counts": [1030, -6]}),
                            "RLE counts that are negative"),
    "RLE counts of strings": (annotation(segmentation={"size": [32, 32], "counts": ["1024"]}),
                              "RLE counts are not whole numbers"),
    "RLE counts an object": (annotation(segmentation={"size": [32, 32], "counts": {}}),
                             "RLE counts are not whole numbers"),
    "RLE counts not COCO's string": (annotation(segmentation={"size": [32, 32], "counts": "!!!"}),
                                     "RLE counts string is not COCO's compressed format"),
    "RLE counts string cut short": (annotation(segmentation={"size": [32, 32], "counts": "0R"}),
                                    "RLE counts string is not COCO's compressed format"),
    "RLE counts string of a smaller mask": (annotation(segmentation={"size": [32, 32], "counts": "0150000000"}),
                                            "RLE counts do not add up to the image's pixels"),
    "RLE of another size": (annotation(segmentation={"size": [16, 64], "counts": [1024]}),
                            "RLE size is not the image's (32, 32)"),
    "RLE without size": (annotation(segmentation={"counts": [1024]}), "RLE size is not the image's (32, 32)"),
    "a segmentation as text": (annotation(segmentation="mask.png"), "segmentation is neither polygons nor RLE"),
}


@pytest.mark.parametrize("case", ANNOTATION_CASES)
def test_a_malformed_annotation_is_dropped_with_its_reason(tmp_path, case):
    bad, reason = ANNOTATION_CASES[case]
    path = edited(tmp_path, lambda d: d["annotations"].insert(1, bad))
    source = CocoSource(path, tmp_path / "train2017", masks=True)
    given = bad.get("id") if isinstance(bad, dict) else None
    assert source.dropped == [{"annotation": 1, "id": given, "reason": reason}]
    assert source.stats["annotations_dropped"] == 1
    kept = read_coco(path).annotations
    assert len(kept) == len(json.loads(path.read_text())["annotations"]) - 1
    assert [a["id"] for a in kept] == list(range(1, len(kept) + 1))
    scores_what_is_kept(source)


def scores_what_is_kept(source: CocoSource) -> None:
    """Every image's target decodes, and the ground truth scores its own boxes and masks perfectly."""
    results = []
    for index in range(len(source)):
        _, target = source[index]
        assert target["masks"].shape[0] == len(target["boxes"])
    gt = source.ground_truth()
    for ann in gt.loadAnns(gt.getAnnIds()):
        if not ann["iscrowd"]:
            rle = mask_api.encode(np.asfortranarray(gt.annToMask(ann)))
            results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                            "score": 1.0, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    for iou_type in ("bbox", "segm"):
        assert coco_metrics(gt, results, iou_type)["AP"] == 100.0


def test_annotation_ids_are_not_needed_and_absent_fields_take_coco_defaults(tmp_path):
    def without_ids(data):
        for ann in data["annotations"]:
            del ann["id"], ann["area"], ann["iscrowd"]
        data["annotations"][1]["id"] = 0  # pycocotools reads a match to id 0 as no match
        data["annotations"][2]["id"] = data["annotations"][3]["id"] = 5  # and keeps one of a repeated id

    path = edited(tmp_path, without_ids, count=6)
    source = CocoSource(path, tmp_path / "train2017", masks=True)
    assert source.dropped == [] and source.stats["annotations"] == len(source.coco.annotations)
    first = source.coco.annotations[0]
    assert first["iscrowd"] == 0 and first["area"] == first["bbox"][2] * first["bbox"][3]
    scores_what_is_kept(source)


def test_compressed_counts_read_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (5, 7), (32, 32), (480, 640)):
        for density in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < density
            written = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
            assert compressed_counts(written) == rle_encode(mask)["counts"]
    assert compressed_counts("") == []
    assert compressed_counts("0R") is None and compressed_counts("\x7f") is None
    assert compressed_counts("o" * 8 + "0") is None  # a count of more than MAX_COUNT_CHARS characters


def test_a_valid_file_gives_the_same_ground_truth_as_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    path = write_coco(tmp_path, "val2017", 6, size=48)
    ours = CocoSource(path, tmp_path / "val2017").ground_truth()
    theirs = COCO(str(path))
    strip = [{k: v for k, v in a.items() if k != "id"} for a in theirs.loadAnns(theirs.getAnnIds())]
    assert [{k: v for k, v in a.items() if k != "id"} for a in ours.loadAnns(ours.getAnnIds())] == strip
    assert ours.dataset["images"] == theirs.dataset["images"]
    assert ours.dataset["categories"] == theirs.dataset["categories"]
    assert [len(ours.getAnnIds(imgIds=i)) for i in ours.getImgIds()] == [
        len(theirs.getAnnIds(imgIds=i)) for i in theirs.getImgIds()]

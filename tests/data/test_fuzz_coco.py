"""Fuzz of the COCO reader: a valid COCO file (polygons, RLE, a crowd region, a negative image) with its
JSON values replaced, removed or repeated anywhere in the tree, or its bytes spliced, goes through what a
detection run does with it: `CocoSource` (the reader's checks), every sample with its masks, the ground
truth, and COCO box and mask metrics of the kept annotations. Only `DataError` (one line) may come out of
the reader and `UnreadableImage` out of a sample; pycocotools never raises; nothing takes longer than
READ_LIMIT_S.

The bounded run here takes about half a minute, reproducibly (derandomized); a longer one:
    VITMAE_FUZZ_EXAMPLES=5000 pytest tests/data/test_fuzz_coco.py
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_api

from vitmae.data import DataError, UnreadableImage
from vitmae.data.coco import CocoSource, coco_metrics

from ..synthetic_coco import write_coco

EXAMPLES = int(os.environ.get("VITMAE_FUZZ_EXAMPLES", "100"))  # per test
READ_LIMIT_S = 5.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# What a labelling tool, a hand edit or an attacker puts where a COCO value belongs.
LEAVES = (st.none() | st.booleans() | st.sampled_from([0, -1, 1, 2, 3, 7, 31, 32, 100, 2**31, 2**64, 10**400])
          | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
          | st.sampled_from(["", "../x.png", "/etc/passwd", "a\0b", "0R", "!!", "scenes/0000.png", "PPYo0"]))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=8) | st.dictionaries(
    st.sampled_from(["id", "size", "counts", "bbox", "name", "x"]), inner, max_size=3), max_leaves=12)


@pytest.fixture(scope="module")
def valid() -> tuple[dict[str, Any], Path]:
    """The JSON of a valid 3-image file, with a crowd RLE and an uncompressed RLE added, and its folder."""
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        data = json.loads(write_coco(root, "train2017", 3, negatives=1).read_text())
        first = data["images"][0]["id"]
        data["annotations"] += [
            {"id": 90, "image_id": first, "category_id": 3, "bbox": [0, 0, 8, 8], "area": 64.0, "iscrowd": 1,
             "segmentation": {"size": [32, 32], "counts": [0, 8, 24] * 8 + [768]}},
            {"id": 91, "image_id": first, "category_id": 7, "bbox": [3, 2, 2, 4], "area": 8.0, "iscrowd": 0,
             "segmentation": {"size": [32, 32], "counts": [98, 4, 28, 4, 890]}}]
        read_and_score(data, root)  # the fuzzing starts from a file that reads and scores
        yield data, root


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """The paths (keys and indices) of every value in a JSON tree, the root included."""
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += nodes(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += nodes(inner, (*path, index))
    return found


@st.composite
def edited(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with 1 to 3 values replaced, removed or repeated (a list element) at random places."""
    data = json.loads(json.dumps(data))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(nodes(data)[1:]))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "repeat"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.insert(path[-1], json.loads(json.dumps(parent[path[-1]])))
        if not nodes(data)[1:]:
            break
    return data


def read_and_score(data: dict[str, Any] | bytes, root: Path) -> None:
    """What a detection run does with a COCO file; only the project's own errors may come out."""
    path = root / "annotations" / "fuzzed.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    start = time.perf_counter()
    try:
        source = CocoSource(path, root / "train2017")
    except DataError as err:
        assert len(str(err).splitlines()) == 1, f"not one line: {err!r}"
        return
    source.masks = source.has_masks()  # as `detect --masks auto` sets it
    assert source.stats["annotations_dropped"] == len(source.dropped)
    for index in range(len(source)):
        try:
            _, target = source[index]
        except UnreadableImage as err:
            assert "\n" not in err.reason
            continue
        assert target["boxes"].shape == (len(target["labels"]), 4)
        assert not source.masks or target["masks"].shape == (len(target["labels"]), 32, 32)
    ground_truth = source.ground_truth()
    results = []
    for ann in ground_truth.loadAnns(ground_truth.getAnnIds()):
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                        "score": 0.5})
        if source.masks:
            rle = mask_api.encode(np.asfortranarray(ground_truth.annToMask(ann)))
            results[-1]["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    for iou_type in ("bbox", "segm") if source.masks else ("bbox",):
        coco_metrics(ground_truth, results, iou_type, classes=source.classes)
    elapsed = time.perf_counter() - start
    assert elapsed < READ_LIMIT_S, f"reading and scoring took {elapsed:.2f} s"


def test_values_replaced_removed_or_repeated_anywhere(valid):
    data, root = valid

    @FUZZ
    @given(changed=edited(data))
    def check(changed: dict[str, Any]) -> None:
        read_and_score(changed, root)

    check()


def test_spliced_bytes(valid):
    data, root = valid
    text = json.dumps(data).encode()

    @FUZZ
    @given(cuts=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 16), st.binary(max_size=16)), min_size=1,
                         max_size=3))
    def check(cuts: list[tuple[float, int, bytes]]) -> None:
        spliced = text
        for where, removed, inserted in cuts:  # covers overwriting, inserting, deleting and truncating
            at = int(where * len(spliced))
            spliced = spliced[:at] + inserted + spliced[at + removed:]
        read_and_score(spliced, root)

    check()

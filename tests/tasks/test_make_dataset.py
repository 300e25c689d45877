"""`vitmae make-dataset fashion-scenes`: the folder layout, index-mask PNGs and COCO JSON a reader accepts."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from vitmae.data.coco import rle_encode
from vitmae.data.scenes import SCENE_CLASSES, FashionScenesSource
from vitmae.tasks.make_dataset import MakeDatasetOptions, make_dataset


def test_writes_the_standard_layouts(tmp_path):
    out = tmp_path / "scenes"
    summary = make_dataset(MakeDatasetOptions(name="fashion-scenes", out=str(out), num=5, size=32, seed=1))
    assert summary["splits"]["train"]["images"] == 5 and summary["splits"]["val"]["images"] == 1
    assert (out / "classes.txt").read_text().splitlines() == SCENE_CLASSES
    assert not [p for p in tmp_path.iterdir() if p.name != "scenes"]  # the work folder is gone
    source = FashionScenesSource("train", num=5, size=32, seed=1, target="scene")
    coco = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    from pycocotools.coco import COCO  # the reference reader of the format

    api = COCO()
    api.dataset = coco
    api.createIndex()
    for index in range(5):
        image, target = source[index]
        written = Image.open(out / "train" / "images" / f"{index:06d}.png")
        assert np.array_equal(np.asarray(written), np.asarray(image))
        mask = Image.open(out / "train" / "masks" / f"{index:06d}.png")
        assert mask.mode == "P" and np.array_equal(np.asarray(mask), target.mask)  # palette PNG, values = indices
        annotations = api.loadAnns(api.getAnnIds(imgIds=[index + 1]))
        assert len(annotations) == len(target.labels)
        for ann, box, label, visible in zip(annotations, target.boxes, target.labels, target.masks):
            assert ann["category_id"] == label and ann["iscrowd"] == 0 and ann["area"] == visible.sum()
            x0, y0, x1, y1 = box
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert np.array_equal(api.annToMask(ann).astype(bool), visible)


def test_rle_of_a_mask_starting_with_ones():
    mask = np.array([[1, 0], [1, 1]], dtype=bool)  # column-major: 1 1 0 1
    assert rle_encode(mask) == {"counts": [0, 2, 1, 1], "size": [2, 2]}


def test_refuses_a_folder_that_holds_something(tmp_path, run_cli):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_cli("make-dataset", "fashion-scenes", "--out", tmp_path, "--num", "2", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "exists and is not an empty folder" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1

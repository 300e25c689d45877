"""The COCO reader, its joint transforms, and COCO metrics against COCOeval run directly."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_api
from pycocotools.cocoeval import COCOeval

from vitmae.data import DataError, build_dataset
from vitmae.data.coco import (CocoSource, DetectionTransform, coco_ground_truth, coco_metrics, coco_split,
                              collate_detection, decode_masks, to_coco_results)

from ..synthetic_coco import write_coco


def edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_reads_polygons_rle_crowd_negatives_and_odd_boxes(tmp_path):
    json_path = write_coco(tmp_path, "train2017", 4, negatives=1)

    def add_odd_annotations(data):
        first = data["images"][0]["id"]
        extra = [{"bbox": [20, 20, 30, 30], "iscrowd": 0},  # leaves the 32-px image: clipped
                 {"bbox": [40, 40, 5, 5], "iscrowd": 0},  # entirely outside: dropped
                 {"bbox": [5, 5, 0, 8], "iscrowd": 0},  # no width: dropped
                 {"bbox": [1, 1, 4, 4], "iscrowd": 1}]  # crowd: ignored
        for k, ann in enumerate(extra):
            data["annotations"].append({"id": 900 + k, "image_id": first, "category_id": 3, "area": 1.0,
                                        "segmentation": [[0, 0, 1, 0, 1, 1]], **ann})
        # an uncompressed RLE: COCO writes crowd regions so, and any region may be
        rle = {"size": [32, 32], "counts": [32 * 3 + 2, 4, 28, 4, 890]}
        data["annotations"].append({"id": 950, "image_id": first, "category_id": 7, "bbox": [3, 2, 2, 4],
                                    "area": 8.0, "iscrowd": 0, "segmentation": rle})

    edit_json(json_path, add_odd_annotations)
    json_file, images = coco_split(tmp_path, "train")
    assert json_file == json_path and images == tmp_path / "train2017"
    source = CocoSource(json_file, images, masks=True)
    assert source.classes == ["red-box", "green-ellipse"] and source.category_ids == [3, 7]
    assert source.stats["crowd_ignored"] == 1 and source.stats["boxes_dropped"] == 2
    assert source.stats["boxes_clipped"] == 1 and source.stats["images_without_objects"] == 1
    image, target = source[0]
    assert image.size == (32, 32) and set(target) == {"boxes", "labels", "image_id", "masks"}
    assert target["masks"].shape == (len(target["boxes"]), 32, 32)
    assert target["boxes"][-2].tolist() == [20, 20, 32, 32]  # the clipped one
    uncompressed = target["masks"][-1]  # columns 3-4, rows 2-5: the RLE runs down the columns
    assert uncompressed.sum() == 8 and uncompressed[2:6, 3:5].all()
    for box, mask in zip(target["boxes"], target["masks"]):  # each mask lies in its box
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys) and box[2] - box[0] < 32:
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]
    _, negative = source[3]
    assert negative["boxes"].shape == (0, 4) and negative["masks"].shape == (0, 32, 32)
    assert source.has_masks()


def test_polygon_and_rle_masks_agree_with_pycocotools(tmp_path):
    json_path = write_coco(tmp_path, "val2017", 6)
    coco = coco_ground_truth(json_path)
    source = CocoSource(json_path, tmp_path / "val2017", masks=True)
    for index, image in enumerate(source.images):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        expected = np.stack([coco.annToMask(a) for a in anns])
        assert np.array_equal(source.target(index)["masks"].numpy(), expected)


@pytest.mark.parametrize("breakage, message", [
    (lambda p: p.write_text("{not json"), "is not valid JSON"),
    (lambda p: p.write_text("[]"), "is not a COCO detection file"),
    (lambda p: edit_json(p, lambda d: d["annotations"][0].update(category_id=99)),
     "has category_id 99, which is not in 'categories'"),
    (lambda p: (p.parent.parent / "train2017" / "scenes" / "0001.png").unlink(), "1 of the 3 images"),
])
def test_bad_files_give_one_line_errors(tmp_path, breakage, message):
    json_path = write_coco(tmp_path, "train2017", 3)
    breakage(json_path)
    with pytest.raises(DataError, match=message) as err:
        CocoSource(json_path, tmp_path / "train2017")
    assert "\n" not in str(err.value)


def test_missing_layout_is_named(tmp_path):
    with pytest.raises(DataError, match="instances_val\\*.json, found none"):
        coco_split(tmp_path, "val")


def test_train_transform_moves_boxes_and_masks_with_the_image(tmp_path):
    json_path = write_coco(tmp_path, "train2017", 6, size=48)
    source = CocoSource(json_path, tmp_path / "train2017", masks=True)
    dataset = build_dataset(source, DetectionTransform((32, 40), train=True, scale=(0.5, 1.5)), seed=0)
    flipped_or_moved = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            image, target, _ = dataset[index]
            assert image.shape == (3, 32, 40) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
            original = source.target(index)["boxes"]
            flipped_or_moved += not torch.equal(target["boxes"], original)
            for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
                assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1 and mask.shape == (32, 40)
                x0, y0 = (box[:2].floor().int() - 1).clamp(min=0).tolist()  # a pixel's slack: resizing rounds
                x1, y1 = (box[2:].ceil().int() + 1).tolist()
                inside = mask[y0:y1, x0:x1].sum()
                assert inside == mask.sum() and inside > 0  # the mask moved with its box
                colour = image[:, mask.bool()].mean(dim=1)  # and the object's pixels with both
                assert colour[0 if label == 1 else 1] > 0.6
    assert flipped_or_moved > 0
    dataset.set_epoch(0)
    again = dataset[2]
    dataset.set_epoch(0)
    assert torch.equal(dataset[2][0], again[0])  # the draws come from the sample's generator


def test_collate_stacks_equal_sizes_and_lists_others(tmp_path):
    json_path = write_coco(tmp_path, "val2017", 2)
    source = CocoSource(json_path, tmp_path / "val2017")
    dataset = build_dataset(source, DetectionTransform(), seed=0)
    batch = collate_detection([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.targets[1]["image_id"] == 101
    assert batch.indices.tolist() == [0, 1] and batch.to("cpu").targets[0]["boxes"].shape[1] == 4
    odd = collate_detection([dataset[0], (torch.zeros(3, 16, 16), dataset[1][1], 1)])
    assert isinstance(odd.images, list) and len(odd) == 2


def _direct_cocoeval(gt, results, iou_type, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_metrics_equal_cocoeval_run_directly(tmp_path, iou_type):
    json_path = write_coco(tmp_path, "val2017", 8, size=48)
    gt = coco_ground_truth(json_path)
    rng = np.random.default_rng(1)
    results = []
    for ann in gt.loadAnns(gt.getAnnIds()):  # noisy copies of the truth, some with the wrong class
        x, y, w, h = (np.array(ann["bbox"]) + rng.normal(0, 2, 4)).tolist()
        mask = np.zeros((48, 48), np.uint8)
        mask[max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)] = 1
        rle = mask_api.encode(np.asfortranarray(mask))
        cat = ann["category_id"] if rng.random() < 0.8 else 10 - ann["category_id"]
        results.append({"image_id": ann["image_id"], "category_id": cat, "bbox": [x, y, w, h],
                        "score": float(rng.random()),
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    ours = coco_metrics(gt, results, iou_type)
    stats = _direct_cocoeval(gt, results, iou_type)
    assert [ours[m] for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == pytest.approx(
        [100 * s if s >= 0 else -1 for s in stats[:6]], abs=1e-3)
    assert 0 < ours["AP"] < 100
    for name, cat in (("red-box", 3), ("green-ellipse", 7)):  # each class's AP: COCOeval on that class alone
        assert ours["per_class"][name] == pytest.approx(100 * _direct_cocoeval(gt, results, iou_type, [cat])[0], abs=1e-3)
    assert coco_metrics(gt, [], iou_type)["AP"] == 0.0


def test_torchvision_detections_become_coco_results(tmp_path):
    json_path = write_coco(tmp_path, "val2017", 2)
    gt = coco_ground_truth(json_path)
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, 0, 4:10, 2:8] = 0.9
    results = to_coco_results({"boxes": torch.tensor([[2.0, 4.0, 8.0, 10.0]]), "labels": torch.tensor([2]),
                               "scores": torch.tensor([0.75]), "masks": masks}, 101, [3, 7])
    assert results[0]["bbox"] == [2.0, 4.0, 6.0, 6.0] and results[0]["category_id"] == 7
    json.dumps(results)  # JSON as it is
    decoded = decode_masks([results[0]["segmentation"]], 32, 32)[0]
    assert torch.equal(decoded.bool(), masks[0, 0] > 0.5)
    gt.loadRes(results)  # pycocotools reads it


def test_mask_ap_and_masks_auto_need_every_annotation_segmented(tmp_path):
    def crowd_without_segmentation(data):
        data["annotations"].append({"id": 999, "image_id": 100, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25,
                                    "iscrowd": 1})

    json_path = write_coco(tmp_path, "val2017", 3)
    edit_json(json_path, crowd_without_segmentation)
    source = CocoSource(json_path, tmp_path / "val2017")
    assert not source.has_masks()  # every object trained on has one, but the crowd region does not
    results = [{"image_id": 100, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.9}]
    assert coco_metrics(source.ground_truth(), results, "bbox")["AP"] >= 0
    with pytest.raises(DataError, match="^mask AP needs a segmentation for every annotation: 1 of .* have none$"):
        coco_metrics(source.ground_truth(), results, "segm")

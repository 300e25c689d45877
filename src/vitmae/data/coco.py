"""COCO detection data: a source of COCO files (read and checked by `coco_json.read_coco`), the built-in
fashion-scenes as COCO data, joint transforms of images with their boxes and masks, the collate, and COCO
metrics (pycocotools' COCOeval, the reference implementation).

A sample is `(image, target)` with target `{"boxes": (n, 4) float xyxy in pixels, "labels": (n,) int64
in 1..K (0 is torchvision's background), "image_id": int, "masks": (n, H, W) uint8}` ("masks" only when
the source reads them). As COCO does, crowd regions are not trained on (COCOeval ignores detections that
match them); images without annotations stay, as negatives; boxes that leave the image are clipped and
boxes left with no area dropped, and both are counted (`CocoSource.stats`). Malformed annotations are
dropped, counted and listed with their reasons (`CocoSource.dropped`); they are in no ground truth either.

pycocotools is an optional dependency (`pip install 'vitmae[detect]'`).
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitmae.data.coco_json import read_coco
from vitmae.data.decode import ImageLike, UnreadableImage, load_image
from vitmae.data.loader import Batch, JointTransform, readable
from vitmae.data.scenes import SCENE_CLASSES, FashionScenesSource, SceneTarget
from vitmae.data.source import DataError


def pycocotools():
    try:
        import pycocotools.mask
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise DataError("COCO data needs pycocotools: pip install 'vitmae[detect]'") from err
    return pycocotools.mask, COCO, COCOeval


def coco_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of `split` in COCO 2017's layout: ROOT/annotations/instances_
    {split}*.json and the images in ROOT/{split}*/ (the folder named as the file's suffix if it exists)."""
    root = Path(root)
    files = sorted((root / "annotations").glob(f"instances_{split}*.json"))
    if len(files) != 1:
        found = "none" if not files else ", ".join(f.name for f in files)
        raise DataError(f"expected one {root}/annotations/instances_{split}*.json, found {found}")
    named = root / files[0].stem[len("instances_"):]
    folders = [named] if named.is_dir() else sorted(p for p in root.glob(f"{split}*") if p.is_dir())
    if len(folders) != 1:
        raise DataError(f"expected one image folder {root}/{split}*/ for {files[0].name}, found {len(folders)}")
    return files[0], folders[0]


class CocoSource:
    """The images of a COCO JSON file with their boxes, labels and (with `masks`) instance masks.

    `classes` are the category names in id order; label k (1..K) is `category_ids[k - 1]`. Every image
    file must exist (checked up front: DataError); one that cannot be decoded is skipped in training as
    any unreadable image is. `dropped` lists the malformed annotations left out ({"annotation": position
    in the file, "id", "reason"}); `stats` counts them with the boxes clipped or dropped."""

    def __init__(self, json_path: str | Path, images: str | Path, in_chans: int = 3, masks: bool = False):
        self.json_path, self.image_root, self.in_chans, self.masks = Path(json_path), Path(images), in_chans, masks
        self.description = str(json_path)
        self.coco = read_coco(json_path)
        self.category_ids = [c["id"] for c in self.coco.categories]
        self.classes = self.coco.classes
        label_of = {cid: k for k, cid in enumerate(self.category_ids, 1)}
        self.images, self.dropped = self.coco.images, self.coco.dropped
        self.paths = [str(Path(images) / image["file_name"]) for image in self.images]
        missing = [p for p in self.paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"{len(missing)} of the {len(self.paths)} images of {self.json_path.name} are missing, "
                            f"e.g. {missing[0]}")
        self.stats = {"annotations": 0, "crowd_ignored": 0, "boxes_clipped": 0, "boxes_dropped": 0,
                      "images_without_objects": 0, "annotations_dropped": len(self.dropped)}
        by_image: dict[Any, list[dict]] = defaultdict(list)
        for ann in self.coco.annotations:
            by_image[ann["image_id"]].append(ann)
        self.objects = [self._objects(image, by_image[image["id"]], label_of) for image in self.images]

    def _objects(self, image: dict, anns: list[dict], label_of: dict[int, int]) -> list[tuple[list[float], int, Any]]:
        """(clipped xyxy box, label, segmentation) of the image's non-crowd objects that keep an area."""
        height, width = image["height"], image["width"]
        kept = []
        for ann in anns:
            self.stats["annotations"] += 1
            if ann["iscrowd"]:
                self.stats["crowd_ignored"] += 1
                continue
            x, y, w, h = ann["bbox"]
            box = [x, y, x + w, y + h]
            clipped = [min(max(box[0], 0), width), min(max(box[1], 0), height),
                       min(max(box[2], 0), width), min(max(box[3], 0), height)]
            if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:  # less than a pixel: no object
                self.stats["boxes_dropped"] += 1
                continue
            self.stats["boxes_clipped"] += clipped != box
            kept.append((clipped, label_of[ann["category_id"]], ann.get("segmentation")))
        self.stats["images_without_objects"] += not kept
        return kept

    def has_masks(self) -> bool:
        """Whether there are objects and every annotation has a segmentation (what `--masks auto` asks):
        the crowd regions and the boxes not trained on too, which mask AP scores against."""
        return any(self.objects) and all(ann.get("segmentation") for ann in self.coco.annotations)

    def __len__(self) -> int:
        return len(self.images)

    def ground_truth(self):
        """pycocotools' COCO object of the well-formed annotations (what COCOeval scores against)."""
        return coco_api(self.coco.dataset())

    def target(self, index: int) -> dict[str, Any]:
        image, objects = self.images[index], self.objects[index]
        target: dict[str, Any] = {
            "boxes": torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o[1] for o in objects], dtype=torch.int64),
            "image_id": image["id"],
        }
        if self.masks:
            target["masks"] = decode_masks([o[2] for o in objects], image["height"], image["width"])
        return target

    def __getitem__(self, index: int) -> tuple[ImageLike, dict[str, Any]]:
        path, image = self.paths[index], self.images[index]
        decoded = load_image(path, self.in_chans)
        size = (decoded.height, decoded.width) if hasattr(decoded, "height") else tuple(decoded.shape[:2])
        if size != (image["height"], image["width"]):
            raise UnreadableImage(path, f"the image is {size[1]}x{size[0]}, the JSON says "
                                        f"{image['width']}x{image['height']}")
        return decoded, self.target(index)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of a bool (H, W) mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = ([0] if flat[0] else []) + runs.tolist()
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


# fashion-scenes' categories in COCO: id k is scene label k (0, the background, is no object)
SCENE_CATEGORIES = [{"id": k, "name": name} for k, name in enumerate(SCENE_CLASSES) if k > 0]


def scene_annotations(target: SceneTarget, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """A scene's items as COCO annotations (ids from `first_id`): bbox [x, y, w, h], the uncompressed RLE
    of the visible part, its area, iscrowd 0."""
    annotations = []
    for box, label, visible in zip(target.boxes, target.labels, target.masks):
        x0, y0, x1, y1 = (float(v) for v in box)
        annotations.append({"id": first_id + len(annotations), "image_id": image_id, "category_id": int(label),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(visible.sum()),
                            "segmentation": rle_encode(visible), "iscrowd": 0})
    return annotations


class SceneDetectionSource:
    """fashion-scenes as COCO detection data, made on access like the scenes: image i + 1 of the split with
    the visible items' boxes, labels and (with `masks`) instance masks; the categories as make-dataset
    writes them (`SCENE_CATEGORIES`). The boxes are exact: nothing is clipped, dropped or crowd."""

    category_ids = [c["id"] for c in SCENE_CATEGORIES]
    classes = [c["name"] for c in SCENE_CATEGORIES]

    def __init__(self, split: str = "train", num: int | None = None, size: int = 64, seed: int = 0,
                 in_chans: int = 1, masks: bool = False):
        self.scenes = FashionScenesSource(split, num, size, seed, in_chans, target="scene")
        self.masks, self.paths, self.stats, self.dropped = masks, self.scenes.paths, {}, []
        self.images = [{"id": i + 1, "file_name": path, "width": size, "height": size}
                       for i, path in enumerate(self.paths)]
        self.description = f"fashion-scenes {split} ({len(self)} scenes of {size} px, seed {seed})"

    def __len__(self) -> int:
        return len(self.scenes)

    def has_masks(self) -> bool:
        return True

    def ground_truth(self):
        """pycocotools' COCO object of every scene's annotations (each scene rendered once)."""
        annotations = []
        for index, image in enumerate(self.images):
            annotations += scene_annotations(self.scenes[index][1], image["id"], len(annotations) + 1)
        return coco_api({"images": self.images, "annotations": annotations, "categories": SCENE_CATEGORIES})

    def __getitem__(self, index: int) -> tuple[ImageLike, dict[str, Any]]:
        image, scene = self.scenes[index]
        target: dict[str, Any] = {"boxes": torch.from_numpy(scene.boxes), "labels": torch.from_numpy(scene.labels),
                                  "image_id": index + 1}
        if self.masks:
            target["masks"] = torch.from_numpy(scene.masks).to(torch.uint8)
        return image, target


def decode_masks(segmentations: Sequence[Any], height: int, width: int) -> torch.Tensor:
    """(n, H, W) uint8 masks of COCO segmentations: polygons, uncompressed or compressed RLE."""
    if not segmentations:
        return torch.zeros(0, height, width, dtype=torch.uint8)
    mask_api, _, _ = pycocotools()
    masks = []
    for seg in segmentations:
        if isinstance(seg, list):  # polygons: one object may have several parts
            rle = mask_api.merge(mask_api.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_api.frPyObjects(seg, height, width)
        else:
            rle = seg
        masks.append(torch.from_numpy(mask_api.decode(rle)))
    return torch.stack(masks).to(torch.uint8)


class DetectionTransform(JointTransform):
    """The image as a float tensor in [0, 1] (the detector normalises), boxes and masks moved with it.

    Training (`train=True`): a horizontal flip with probability `hflip`, and large-scale jitter: the image
    resized to fit `size` times a factor drawn from `scale` (ViTDet: 0.1-2.0), then a random crop of
    `size` (padded with zeros where the image is smaller); objects left with less than a pixel are dropped.
    Every draw comes from the sample's generator. Evaluation: the image as it is (the detector resizes it
    and maps its detections back to the image's pixels)."""

    def __init__(self, size: tuple[int, int] | None = None, train: bool = False, scale: tuple[float, float] = (0.1, 2.0),
                 hflip: float = 0.5):
        if train and size is None:
            raise ValueError("a training transform needs the crop size")
        self.size, self.train, self.scale, self.hflip = size and tuple(size), train, tuple(scale), hflip

    def __call__(self, image: ImageLike, target: dict[str, Any], generator: torch.Generator):
        from torchvision import tv_tensors  # imported here: `import vitmae.data` stays free of torchvision
        from torchvision.transforms.v2 import functional as TF

        img = tv_tensors.Image(TF.pil_to_tensor(image) if hasattr(image, "mode") else
                               torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        if not self.train:
            return TF.to_dtype(img, torch.float32, scale=True).as_subclass(torch.Tensor), target
        canvas = tuple(img.shape[-2:])
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=canvas)
        masks = tv_tensors.Mask(target["masks"]) if "masks" in target else None
        parts = [img, boxes] + ([masks] if masks is not None else [])
        if torch.rand((), generator=generator) < self.hflip:
            parts = [TF.horizontal_flip(p) for p in parts]
        low, high = self.scale
        factor = (low + (high - low) * torch.rand((), generator=generator).item()) * min(
            self.size[0] / canvas[0], self.size[1] / canvas[1])
        resized = (max(1, round(canvas[0] * factor)), max(1, round(canvas[1] * factor)))
        parts = [TF.resize(p, list(resized), antialias=True) for p in parts]
        top = int(torch.randint(max(resized[0] - self.size[0], 0) + 1, (), generator=generator))
        left = int(torch.randint(max(resized[1] - self.size[1], 0) + 1, (), generator=generator))
        # crop past the edge pads with zeros: a fixed-size output whatever the scale
        parts = [TF.crop(p, top, left, *self.size) for p in parts]
        img, boxes = parts[0], parts[1]
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        out = {**target, "boxes": boxes[keep].as_subclass(torch.Tensor), "labels": target["labels"][keep]}
        if masks is not None:
            out["masks"] = parts[2][keep].as_subclass(torch.Tensor)
        return TF.to_dtype(img, torch.float32, scale=True).as_subclass(torch.Tensor), out


def collate_detection(samples: Sequence[Any]) -> Batch:
    """Images stacked when they share a size (training crops do), else a list; targets a list of dicts."""
    good, skipped = readable(samples)
    images = [s[0] for s in good]
    stackable = bool(images) and all(i.shape == images[0].shape for i in images)
    return Batch(images=torch.stack(images) if stackable else images if images else torch.empty(0),
                 targets=[s[1] for s in good], indices=torch.tensor([s[2] for s in good], dtype=torch.long),
                 skipped=skipped)


# -- metrics -------------------------------------------------------------------------------------------
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_api(dataset: dict[str, list[dict]]):
    """pycocotools' COCO object of a data set ({"images", "annotations", "categories"}), its chatter
    silenced."""
    _, COCO, _ = pycocotools()
    api = COCO()
    api.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def coco_ground_truth(json_path: str | Path):
    """pycocotools' COCO object of an annotation file's well-formed annotations (`coco_json.read_coco`):
    what `coco_metrics` scores detections against, e.g. those `vitmae predict` writes."""
    return coco_api(read_coco(json_path).dataset())


def coco_metrics(ground_truth, results: list[dict], iou_type: str, image_ids: Sequence[int] | None = None,
                 classes: Sequence[str] | None = None) -> dict[str, Any]:
    """COCO AP, AP50, AP75, APs/m/l in percent (COCOeval's first six numbers; -1 where a size has no
    object) and AP per class (`per_class`, by category name), of detections in the COCO results format
    (`image_id`, `category_id`, `score`, and `bbox` [x, y, w, h] or `segmentation` RLE) on the images
    `image_ids` (default: all). No detection at all scores 0. Mask AP needs every annotation's segmentation
    (DataError otherwise: COCOeval would fail on the first without one)."""
    _, _, COCOeval = pycocotools()
    if iou_type == "segm":
        lacking = sum(not ann.get("segmentation") for ann in ground_truth.dataset["annotations"])
        if lacking:
            raise DataError(f"mask AP needs a segmentation for every annotation: {lacking} of "
                            f"{len(ground_truth.dataset['annotations'])} have none")
    names = list(classes) if classes is not None else [c["name"] for c in ground_truth.loadCats(ground_truth.getCatIds())]
    if not results:
        return {**{m: 0.0 for m in COCO_METRICS}, "per_class": {name: 0.0 for name in names}}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {m: round(100 * float(v), 3) if v >= 0 else -1.0 for m, v in zip(COCO_METRICS, evaluator.stats)}
    # precision: (IoU thresholds, recall points, classes, area ranges, max detections); "all" areas, 100 dets
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, name in enumerate(names):
        p = precision[:, :, k]
        per_class[name] = round(100 * float(p[p > -1].mean()), 3) if (p > -1).any() else -1.0
    return {**metrics, "per_class": per_class}


def to_coco_results(detections: dict[str, torch.Tensor], image_id: int, category_ids: Sequence[int],
                    mask_threshold: float = 0.5) -> list[dict]:
    """One image's detections (torchvision's output: boxes xyxy, labels 1..K, scores, masks (n, 1, H, W)
    probabilities) as COCO results: bbox [x, y, w, h], the category id of the JSON, and a compressed RLE
    `segmentation` (counts as text, so the list is JSON) where there are masks."""
    boxes = detections["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    labels, scores = detections["labels"].tolist(), detections["scores"].float().cpu().tolist()
    results = [{"image_id": image_id, "category_id": category_ids[label - 1], "bbox": [round(v, 2) for v in box],
                "score": round(score, 5)} for box, label, score in zip(xywh, labels, scores)]
    if "masks" in detections and results:
        mask_api, _, _ = pycocotools()
        binary = (detections["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        for result, mask in zip(results, binary):
            rle = mask_api.encode(np.asfortranarray(mask))
            result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return results

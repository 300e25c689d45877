"""What a detector predicts: COCO results of every image a loader gives, the detections of one image drawn
(the demo), and `vitmae predict`'s drawn images and detections.json."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ....data import build_dataset, build_loader
from ....data.coco import CocoSource, DetectionTransform, collate_detection, to_coco_results
from ....data.labels import Source
from ....data.files import ImageFilesSource
from ....data.source import require_readable
from ....errors import ConfigError
from ....train.checkpoint import write_text_atomic
from ....train.runtime import Runtime
from ....viz.dense import SCORE_THRESHOLD, Detections, draw_detections
from ...spec import PredictionRequest
from ..record import DetectRecord
from ...run import Run, output_names


def detection_loader(source: Source, batch_size: int, num_workers: int):
    """Evaluation batches of a detection source: the images as they are (the detector resizes them)."""
    return build_loader(build_dataset(source, DetectionTransform(), seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=False, collate_fn=collate_detection)



@torch.no_grad()
def run_detector(model: nn.Module, loader, runtime: Runtime, category_ids: list[int]) -> tuple[list[dict], list, list]:
    """(COCO results of every readable image, their image ids, (path, reason) of the skipped ones)."""
    model.to(runtime.device)
    results, image_ids, skipped = [], [], []
    for batch, outputs in runtime.forward_each(model, loader,
                                               lambda b: model([image.to(runtime.device) for image in b.images]),
                                               skipped):
        for output, target in zip(outputs, batch.targets):
            results.extend(to_coco_results(output, target["image_id"], category_ids))
            image_ids.append(target["image_id"])
    return results, image_ids, skipped


class NumberedImages:
    """Image files as detection samples without objects: image id i + 1 for the i-th file."""

    def __init__(self, files: ImageFilesSource):
        self.files, self.paths = files, files.paths
        self.images = [{"id": i + 1} for i in range(len(files))]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return self.files[index][0], {"image_id": index + 1}


def predict_detections(run: Run[DetectRecord], request: PredictionRequest) -> dict[str, Any]:
    """The drawn images and the COCO results of every readable image."""
    record, in_chans, out = run.record, run.model.config.in_chans, request.out
    coco_files = [name for name in request.images if name.endswith(".json")]
    if coco_files and len(request.images) > 1:
        raise ConfigError("give a COCO JSON alone (its images carry its ids), or image files and folders")
    source = (CocoSource(coco_files[0], request.image_root or Path(coco_files[0]).parent, in_chans) if coco_files
              else NumberedImages(ImageFilesSource(request.images, in_chans)))
    loader = detection_loader(source, request.batch_size, request.num_workers)
    results, image_ids, skipped = run_detector(run.model, loader, request.runtime, record.category_ids)
    require_readable(len(image_ids), "the images given", (reason for _, reason in skipped))
    by_image = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(result)
    index_of = {image["id"]: i for i, image in enumerate(source.images)}
    files = output_names(source.paths)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in image_ids:
        index = index_of[image_id]
        pixels = DetectionTransform()(source[index][0], {}, torch.Generator())[0]  # read again, to draw on
        drawn = draw_detections(pixels, by_image[image_id], record.category_names, request.score_threshold)
        picture = out / "images" / f"{files[index]}.png"
        drawn.picture.save(picture)
        images.append({"image": source.paths[index], "image_id": image_id, "picture": str(picture),
                       "detections": len(by_image[image_id]), "drawn": len(drawn.shown)})
    write_text_atomic(out / "detections.json", json.dumps(results) + "\n")
    return {"images": images, "detections": len(results), "drawn": sum(i["drawn"] for i in images),
            "score_threshold": request.score_threshold,
            "detections_json": str(out / "detections.json"), "classes": record.classes,
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


@torch.no_grad()
def detect_image(model: nn.Module, names: dict[int, str], image: Tensor, score_threshold: float = SCORE_THRESHOLD,
                 display: int = 1) -> Detections:
    """A detector's detections on one image (C, H, W) in [0, 1] (the detector normalises it) as COCO results of
    image id 1, drawn by `draw_detections`; `names`: the category ids, in the order of the model's labels, and
    their names."""
    results = to_coco_results(model([image])[0], 1, list(names))
    return draw_detections(image, results, names, score_threshold, display)


def prediction_lines(s: dict[str, Any], out: Path) -> list[str]:
    return [f"{s['detections']} detections on {len(s['images'])} images ({s['drawn']} drawn, score >= "
            f"{s['score_threshold']}); COCO results in {s['detections_json']}, pictures in {out / 'images'}"]

"""How a detector is measured: COCO box (and mask) AP by pycocotools, on a run's validation images during
training and by `vitmae evaluate` on a finished run."""
from __future__ import annotations

from typing import Any

from torch import nn

from ....data import DataError, open_source
from ....data.coco import coco_metrics
from ....errors import ConfigError
from ....train import Trainer
from ....train.hooks import PeriodicEvaluation
from ....train.runtime import Runtime
from ...spec import EvaluationRequest
from .inference import detection_loader, run_detector
from .model import load_run

EVAL_BATCH = 8  # images per forward pass of `vitmae evaluate` (a detector takes them at their size)


def coco_scores(model: nn.Module, loader, source, ground_truth, masks: bool, runtime: Runtime
                ) -> tuple[dict[str, Any], list]:
    """({"box": COCO metrics, "mask": those of the masks (with `masks`)} of `model` on the images of
    `loader`, scored against `ground_truth`; (path, reason) of the images that could not be read)."""
    results, image_ids, skipped = run_detector(model, loader, runtime, source.category_ids)
    scores = {"box": coco_metrics(ground_truth, results, "bbox", image_ids, source.classes)}
    if masks:
        scores["mask"] = coco_metrics(ground_truth, results, "segm", image_ids, source.classes)
    return scores, skipped


class CocoEvaluator(PeriodicEvaluation):
    """COCO box (and mask) metrics on the validation images every `every` epochs and at the end (rank 0)."""

    main_only, timed, history_key = True, True, "coco"

    def __init__(self, source, masks: bool, every: int, batch_size: int, num_workers: int):
        self.source, self.masks, self.every = source, masks, every
        self.kinds = ("box", "mask") if masks else ("box",)
        self.loader = detection_loader(source, batch_size, num_workers)
        self.ground_truth = source.ground_truth()

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        return coco_scores(trainer.model, self.loader, self.source, self.ground_truth, self.masks,
                           trainer.runtime)[0]

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {f"val/{kind}_{m}": entry[kind][m] for kind in self.kinds for m in ("AP", "AP50", "AP75")}

    def line(self, entry: dict[str, Any]) -> str:
        return ", ".join(f"{kind} AP {entry[kind]['AP']:.2f} AP50 {entry[kind]['AP50']:.2f}" for kind in self.kinds)


def evaluate_detection(request: EvaluationRequest) -> dict[str, Any]:
    """COCO AP, AP50, AP75, APs/m/l of a detection run's boxes (and masks), and AP per class, on its own
    validation data unless the request names other data."""
    run = load_run(request.checkpoint)
    record = run.record
    if not record.files_recorded:
        raise ConfigError(f"{run.checkpoint}: the run's {record.FILE} is from an older vitmae, which did not "
                          "record the run's data: train it again")
    # the run's own files, unless the request names other data
    spec, images = (record.files[request.split] if record.files and request.data is None
                    else (request.data or record.data, None))
    source = open_source(spec, request.split, "detection", in_chans=run.model.config.in_chans, images=images,
                         seed=record.seed, scene_size=record.scene_size, scenes=record.scenes,
                         val_scenes=record.val_scenes)
    if source.category_ids != record.category_ids:
        raise DataError(f"the categories of {source.description} ({source.category_ids}) are not the run's "
                        f"({record.category_ids})")
    loader = detection_loader(source, request.batch_size or EVAL_BATCH, request.num_workers)
    scores, skipped = coco_scores(run.model, loader, source, source.ground_truth(), record.masks, request.runtime)
    return {**scores, "images": len(source) - len(skipped), "data": source.description,
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


def ap_lines(s: dict[str, Any], where: str) -> list[str]:
    """One line per kind of scores (box, mask) of `s`: AP, AP50 and AP75 on `where`."""
    return [f"{kind} AP {s[kind]['AP']:.2f}  AP50 {s[kind]['AP50']:.2f}  AP75 {s[kind]['AP75']:.2f}{where}"
            for kind in ("box", "mask") if kind in s]


def evaluation_lines(s: dict[str, Any]) -> list[str]:
    return ap_lines(s, "") + [f"on {s['images']} images of {s['data']} ({s['split']}), {s['checkpoint_evaluated']}"]

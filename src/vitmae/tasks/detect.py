"""`vitmae detect`: object detection and instance segmentation on the encoder (ViTDet), trained by the one
engine; `vitmae detect-predict`: a trained run's detections drawn on images and written as COCO results.

The detector is torchvision's Faster R-CNN, or Mask R-CNN when the annotations have masks (`--masks
auto`), on `model.detection.ViTDetBackbone`: window attention in all but a few global blocks and a simple
feature pyramid. The recipe is ViTDet's: AdamW lr 1e-4, weight decay 0.1 (none on norms, biases and
position tables), layer-wise decay 0.7, drop path 0.1, a short warm-up and the step schedule; large-scale
jitter (0.1-2.0) and flips. Data is COCO JSON (`data.coco`).

    RUN/checkpoints/step-N/   the last checkpoint (resumable; `latest` names it)
    RUN/detector.json         what `detect-predict` rebuilds the detector from (classes, masks, encoder)
    RUN/metrics.json          box (and mask) AP, AP50, AP75, APs/m/l and AP per class of the last
                              evaluation, the history of evaluations, the data's counts (crowd regions,
                              clipped and dropped boxes)
    RUN/metrics.jsonl, RUN/tensorboard/, RUN/config.yaml

(`detect-predict` is a subcommand of its own so that it merges beside the segmentation task's `predict`.)
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data import DataError, ImageFolderSource, build_dataset, build_loader
from ..data.coco import (CocoSource, DetectionTransform, coco_ground_truth, coco_metrics, coco_split,
                         collate_detection, decode_masks, to_coco_results)
from ..errors import ConfigError
from ..model import ModelConfig, ViTEncoder
from ..model.detection import ViTDetBackbone, build_detector, detector_param_groups
from ..options import opt, save_config
from ..train import Trainer, write_json
from ..train.checkpoint import load_checkpoint, write_text_atomic
from ..train.config import RuntimeOptions, TrainConfig
from .common import (CHECKPOINT_HELP, EncoderOptions, PeriodicEvaluation, Runtime, Task, load_encoder_or_random,
                     normalization, redefault)

MASKS = ("auto", "on", "off")
FASHION_SCENES = "fashion-scenes"


@dataclass
class DetectConfig(EncoderOptions, TrainConfig):
    """`vitmae detect`: Faster / Mask R-CNN with the ViTDet backbone and recipe, on COCO data."""

    output: str = redefault(TrainConfig, "output", "runs/detect")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP.replace("none: random", "none: from scratch"))
    data: str = opt(FASHION_SCENES, "COCO data: a folder in COCO 2017's layout (annotations/instances_train*.json "
                    "with images in train*/, the same for val) | fashion-scenes")
    train_json: str | None = opt(None, "training annotations (COCO JSON), instead of --data")
    train_images: str | None = opt(None, "folder of the training images (file_name is relative to it)")
    val_json: str | None = opt(None, "validation annotations (COCO JSON), instead of --data")
    val_images: str | None = opt(None, "folder of the validation images")
    masks: str = opt("auto", "instance masks (Mask R-CNN): auto (when every object has a segmentation) | on | off",
                     choices=MASKS)
    window_size: int = opt(14, "side of the attention windows, in patches", min=1)
    global_blocks: tuple[int, ...] | None = opt(None, "blocks with global attention, e.g. 2,5,8,11 (default: four "
                                                "evenly spaced, the last among them)", min=0)
    layer_decay: float = opt(0.7, "layer-wise lr decay: block i gets lr * decay^(depth - i) (ViTDet: 0.7 for "
                             "ViT-B, 0.8 for ViT-L)", above=0, max=1)
    drop_path: float = opt(0.1, "stochastic depth rate of the last block", min=0, below=1)
    lr: float | None = redefault(TrainConfig, "lr", 1e-4)
    weight_decay: float = redefault(TrainConfig, "weight_decay", 0.1)
    schedule: str = redefault(TrainConfig, "schedule", "step")
    warmup_epochs: float = redefault(TrainConfig, "warmup_epochs", 0.25)
    epochs: int = redefault(TrainConfig, "epochs", 12)
    batch_size: int = redefault(TrainConfig, "batch_size", 16)
    jitter_scale: tuple[float, ...] = opt((0.1, 2.0), "large-scale jitter: the range of the resize factor before "
                                          "the fixed-size crop (1,1: no jitter)", above=0)
    hflip: float = opt(0.5, "horizontal flip probability", min=0, max=1)
    detections_per_image: int = opt(100, "detections kept per image", min=1)
    proposals: int = opt(1000, "region proposals per image at evaluation; training keeps twice as many "
                         "(torchvision's 1000 / 2000)", min=1)
    rois_per_image: int = opt(512, "proposals sampled per training image for the box (and mask) head", min=1)
    pyramid_channels: int = opt(256, "width of the feature pyramid's maps (ViTDet: 256; the box head's input is "
                                "7 x 7 times this)", min=1)
    eval_every_epochs: int = opt(1, "evaluate on the validation images every N epochs (and at the end)", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.jitter_scale) != 2 or self.jitter_scale[0] > self.jitter_scale[1]:
            raise ConfigError(f"--jitter-scale takes two factors low,high, not {self.jitter_scale}")


def coco_files(cfg: DetectConfig) -> tuple[Path, Path, Path, Path]:
    """(train JSON, train images, val JSON, val images) from the explicit options or --data."""
    explicit = (cfg.train_json, cfg.train_images, cfg.val_json, cfg.val_images)
    if any(explicit):
        if not all(explicit):
            raise ConfigError("give all of --train-json --train-images --val-json --val-images, or --data DIR")
        return tuple(Path(p) for p in explicit)  # type: ignore[return-value]
    if cfg.data == FASHION_SCENES and not Path(cfg.data).is_dir():
        raise ConfigError("--data fashion-scenes: write the scenes as COCO with `vitmae make-dataset fashion-scenes "
                          "--out DIR` and pass --data DIR")
    return (*coco_split(cfg.data, "train"), *coco_split(cfg.data, "val"))


def build_model(cfg: DetectConfig, encoder: ViTEncoder, num_classes: int, masks: bool,
                img_size: tuple[int, int]) -> nn.Module:
    """The detector on `encoder`, its heads initialised from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    backbone = ViTDetBackbone(encoder, cfg.window_size, list(cfg.global_blocks) if cfg.global_blocks else None,
                              cfg.pyramid_channels, cfg.drop_path)
    model = build_detector(backbone, num_classes, masks, img_size, encoder.config.mean, encoder.config.std,
                           box_detections_per_img=cfg.detections_per_image, box_batch_size_per_image=cfg.rois_per_image,
                          rpn_pre_nms_top_n_train=2 * cfg.proposals, rpn_post_nms_top_n_train=2 * cfg.proposals,
                           rpn_pre_nms_top_n_test=cfg.proposals, rpn_post_nms_top_n_test=cfg.proposals)
    model.config = encoder.config  # the checkpoints record the encoder's architecture
    return model


class DetectionObjective:
    """The sum of torchvision's detection losses (RPN objectness and boxes, RoI classes and boxes, masks)."""

    def __call__(self, model: nn.Module, batch, step: int, micro: int) -> Tensor:
        return sum(model(list(batch.images), batch.targets).values())


@torch.no_grad()
def detect(model: nn.Module, loader, runtime: Runtime, category_ids: list[int]) -> tuple[list[dict], list, list]:
    """(COCO results of every readable image, their image ids, (path, reason) of the skipped ones)."""
    was_training = model.training
    model.eval().to(runtime.device)
    results, image_ids, skipped = [], [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            outputs = model([image.to(runtime.device) for image in batch.images])
        for output, target in zip(outputs, batch.targets):
            results.extend(to_coco_results(output, target["image_id"], category_ids))
            image_ids.append(target["image_id"])
    model.train(was_training)
    return results, image_ids, skipped


class CocoEvaluator(PeriodicEvaluation):
    """COCO box (and mask) metrics on the validation images every `every` epochs and at the end, into the
    run's history (kept in the training state, so a resumed run continues it) and TensorBoard."""

    history_key = "coco"

    def __init__(self, source: CocoSource, masks: bool, every: int, batch_size: int, num_workers: int):
        self.source, self.masks, self.every = source, masks, every
        dataset = build_dataset(source, DetectionTransform(), seed=0)
        self.loader = build_loader(dataset, batch_size, None, num_workers, drop_last=False,
                                   persistent_workers=False, collate_fn=collate_detection)
        self.ground_truth = coco_ground_truth(source.json_path)

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        runtime = Runtime(trainer.device, trainer.precision)
        results, image_ids, _ = detect(trainer.model, self.loader, runtime, self.source.category_ids)
        entry = {"box": coco_metrics(self.ground_truth, results, "bbox", image_ids, self.source.classes)}
        if self.masks:
            entry["mask"] = coco_metrics(self.ground_truth, results, "segm", image_ids, self.source.classes)
        return entry

    def record(self, trainer: Trainer, epoch: float) -> None:
        if not trainer.dist.is_main:
            return
        start = time.perf_counter()
        entry = {"epoch": epoch, "step": trainer.progress.step, **self.evaluate(trainer),
                 "time_s": round(time.perf_counter() - start, 2)}
        trainer.extra_state.setdefault("coco", []).append(entry)
        kinds = ("box", "mask") if self.masks else ("box",)
        trainer.log_scalars(trainer.progress.step, {f"val/{kind}_{m}": entry[kind][m] for kind in kinds
                                                    for m in ("AP", "AP50", "AP75")})
        tqdm.write(f"epoch {epoch:g}: " + ", ".join(f"{kind} AP {entry[kind]['AP']:.2f} AP50 {entry[kind]['AP50']:.2f}"
                                                    for kind in kinds))



def detect_run(cfg: DetectConfig) -> dict[str, Any]:
    """Train and evaluate as `cfg` says; returns the summary also written to RUN/metrics.json."""
    train_json, train_images, val_json, val_images = coco_files(cfg)
    holder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides())
    encoder = holder.encoder
    mean, std = normalization(encoder.config, cfg.data)
    encoder.config = encoder.config.replace(mean=mean, std=std)  # recorded with the run
    in_chans = encoder.config.in_chans
    train = CocoSource(train_json, train_images, in_chans)
    val = CocoSource(val_json, val_images, in_chans)
    if val.category_ids != train.category_ids:
        raise DataError(f"the categories of {val_json.name} ({val.category_ids}) differ from those of "
                        f"{train_json.name} ({train.category_ids})")
    masks = train.has_masks() if cfg.masks == "auto" else cfg.masks == "on"
    if masks and not train.has_masks():
        raise ConfigError(f"--masks on: not every object of {train_json.name} has a segmentation")
    train.masks = val.masks = masks
    img_size = tuple(cfg.img_size or encoder.config.img_size)
    model = build_model(cfg, encoder, len(train.classes), masks, img_size)

    dataset = build_dataset(train, DetectionTransform(img_size, train=True, scale=cfg.jitter_scale, hflip=cfg.hflip),
                            cfg.seed)
    evaluator = CocoEvaluator(val, masks, cfg.eval_every_epochs, cfg.batch_size, cfg.num_workers)
    trainer = Trainer(model, DetectionObjective(), dataset, cfg, betas=(0.9, 0.999), collate_fn=collate_detection,
                      groups=detector_param_groups(model, cfg.weight_decay, cfg.layer_decay), hooks=[evaluator])
    output = Path(cfg.output)
    info = {"classes": train.classes, "category_ids": train.category_ids, "masks": masks, "img_size": list(img_size),
            "window_size": cfg.window_size, "global_blocks": model.backbone.global_blocks,
            "pyramid_channels": cfg.pyramid_channels, "proposals": cfg.proposals,
            "detections_per_image": cfg.detections_per_image, "model": encoder.config.to_dict()}
    if trainer.dist.is_main:
        save_config(cfg, output)
        write_text_atomic(output / "detector.json", json.dumps(info, indent=2) + "\n")
    summary = trainer.fit()
    if trainer.dist.is_main:
        history = trainer.extra_state["coco"]
        summary = {**summary, **{kind: history[-1][kind] for kind in ("box", "mask") if kind in history[-1]},
                   "history": history, "init": "scratch" if cfg.checkpoint.lower() == "none" else cfg.checkpoint,
                   "train": str(train_json), "val": str(val_json), "train_images": len(train), "val_images": len(val),
                   "train_data": train.stats, "val_data": val.stats, "strides": list(model.backbone.strides), **info}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: DetectConfig) -> list[str]:
    lines = [f"{kind} AP {s[kind]['AP']:.2f}  AP50 {s[kind]['AP50']:.2f}  AP75 {s[kind]['AP75']:.2f} on {s['val']} "
             f"({s['val_images']} images)" for kind in ("box", "mask") if kind in s]
    return lines + [f"{s['steps']} steps on {s['train_images']} images, {s['img_s']:.0f} img/s; checkpoint {s['checkpoint']}"]


# -- prediction ----------------------------------------------------------------------------------------
@dataclass
class DetectPredictConfig(RuntimeOptions):
    """`vitmae detect-predict`: a detection run's detections on images, drawn and as COCO results."""

    run: str = opt(None, "a `vitmae detect` run directory (or one of its checkpoints)", positional=True)
    images: str = opt(None, "a folder of images (recursively), or a COCO JSON whose images to read "
                      "(with --image-root)", required=True)
    image_root: str | None = opt(None, "folder of a COCO JSON's images (default: the JSON's folder)")
    output: str = opt("runs/detect-predict", "directory of the drawn images and detections.json")
    score_threshold: float = opt(0.5, "draw the detections scoring at least this", min=0, max=1)
    batch_size: int = opt(8, "images per forward pass", min=1)


def load_detector(run: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained detector of a `vitmae detect` run (weights read with weights_only) and its detector.json."""
    weights, _, checkpoint, _ = load_checkpoint(run)
    info_file = next((p / "detector.json" for p in (checkpoint, *checkpoint.parents) if (p / "detector.json").is_file()),
                     None)
    if info_file is None:
        raise ConfigError(f"{run} is not a `vitmae detect` run: no detector.json beside {checkpoint}")
    info = json.loads(info_file.read_text())
    config = ModelConfig.from_dict(info["model"])
    options = DetectConfig(window_size=info["window_size"], global_blocks=tuple(info["global_blocks"]), drop_path=0.0,
                           pyramid_channels=info["pyramid_channels"], proposals=info["proposals"],
                           detections_per_image=info["detections_per_image"])
    model = build_model(options, ViTEncoder(config), len(info["classes"]), info["masks"], tuple(info["img_size"]))
    model.load_state_dict(weights)
    return model.eval(), info


def detect_predict(cfg: DetectPredictConfig) -> dict[str, Any]:
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
    from torchvision.io import write_png

    model, info = load_detector(cfg.run)
    in_chans = info["model"]["in_chans"]
    if cfg.images.endswith(".json"):
        source = CocoSource(cfg.images, cfg.image_root or Path(cfg.images).parent, in_chans)
        names = source.paths
    else:  # plain images: numbered image ids, in sorted path order
        folder = ImageFolderSource(cfg.images, in_chans=in_chans)
        source = _NumberedImages(folder)
        names = folder.paths
    loader = build_loader(build_dataset(source, DetectionTransform(), seed=0), cfg.batch_size,
                          None, cfg.num_workers, drop_last=False, persistent_workers=False, collate_fn=collate_detection)
    runtime = Runtime(cfg.device, cfg.precision)
    results, image_ids, skipped = detect(model, loader, runtime, info["category_ids"])
    output = Path(cfg.output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    name_of = {cid: name for cid, name in zip(info["category_ids"], info["classes"])}
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    index_of = {image_id: i for i, image_id in enumerate(source_image_ids(source))}
    for image_id in image_ids:
        image, _ = source[index_of[image_id]]
        pixels = DetectionTransform()(image, {}, torch.Generator())[0]
        pixels = (pixels * 255).round().to(torch.uint8).expand(3, -1, -1)
        shown = [r for r in by_image.get(image_id, []) if r["score"] >= cfg.score_threshold]
        if shown and "segmentation" in shown[0]:
            masks = decode_masks([r["segmentation"] for r in shown], *pixels.shape[-2:]).bool()
            pixels = draw_segmentation_masks(pixels, masks, alpha=0.4)
        if shown:
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in shown)])
            labels = [f"{name_of[r['category_id']]} {r['score']:.2f}" for r in shown]
            pixels = draw_bounding_boxes(pixels, boxes, labels, width=1)
        write_png(pixels, str(output / "images" / f"{Path(names[index_of[image_id]]).stem}-{image_id}.png"))
    write_text_atomic(output / "detections.json", json.dumps(results) + "\n")
    summary = {"images": len(image_ids), "detections": len(results),
               "drawn": sum(r["score"] >= cfg.score_threshold for r in results),
               "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
               "detections_json": str(output / "detections.json"), "classes": info["classes"]}
    write_json(output / "metrics.json", summary)
    return summary


class _NumberedImages:
    """A folder's images as detection samples: image id i for the i-th file, no objects."""

    def __init__(self, folder: ImageFolderSource):
        self.folder, self.paths, self.classes = folder, folder.paths, None

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        return self.folder[index][0], {"image_id": index}


def source_image_ids(source) -> list[int]:
    return [image["id"] for image in source.images] if isinstance(source, CocoSource) else list(range(len(source)))


def predict_report(s: dict[str, Any], cfg: DetectPredictConfig) -> list[str]:
    return [f"{s['detections']} detections on {s['images']} images ({s['drawn']} drawn, score >= "
            f"{cfg.score_threshold}); COCO results in {s['detections_json']}, pictures in {Path(cfg.output) / 'images'}"]


TASKS = (Task("detect", "object detection / instance segmentation on the encoder (ViTDet, Faster / Mask R-CNN)",
              DetectConfig, detect_run, report),
         Task("detect-predict", "draw a detection run's detections on images and write them as COCO results",
              DetectPredictConfig, detect_predict, predict_report))

"""`vitmae detect`: object detection and instance segmentation on the encoder (ViTDet), trained by the one
engine.

The detector is torchvision's Faster R-CNN, or Mask R-CNN when the annotations have masks (`--masks
auto`), on `model.detection.ViTDetBackbone`: window attention in all but a few global blocks and a simple
feature pyramid. The recipe is ViTDet's: AdamW lr 1e-4, weight decay 0.1 (none on norms, biases and
position tables), layer-wise decay 0.7, drop path 0.1, a short warm-up and the step schedule; large-scale
jitter (0.1-2.0) and flips. Data is COCO JSON (`data.coco`), or the built-in fashion-scenes with their
boxes and instance masks.

    RUN/checkpoints/step-N/   the last checkpoint (resumable; `latest` names it)
    RUN/detector.json         what rebuilds the detector and finds the data again (`vitmae predict`, `vitmae
                              evaluate`): classes, masks, sizes, backbone, data, encoder
    RUN/metrics.json          box (and mask) AP, AP50, AP75, APs/m/l and AP per class of the last
                              evaluation, the history of evaluations, the data's counts (crowd regions,
                              clipped and dropped boxes; the malformed annotations left out, counted, a
                              few listed with their reasons)
    RUN/metrics.jsonl, RUN/tensorboard/, RUN/config.yaml
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data import DataError, build_dataset, open_source
from ..data.coco import CocoSource, DetectionTransform, collate_detection
from ..data.scenes import FASHION_SCENES
from ..errors import ConfigError
from ..families.dense import DetectRecord
from ..families.dense import detect as detection
from ..families.dense.sizing import RECIPE_HELP, RECIPES, Sizing, detect_input_sizing, detect_sizing
from ..families.encoder import prepared_encoder
from ..options import opt, save_config
from ..train import Trainer, write_json
from ..train.config import TrainOptions
from .options import CHECKPOINT_HELP, EncoderOptions, SceneOptions, Task, redefault

log = logging.getLogger(__name__)

MASKS = ("auto", "on", "off")
DROPPED_EXAMPLES = 5  # malformed annotations metrics.json lists (with the count of all)


@dataclass
class DetectOptions(SceneOptions, EncoderOptions, TrainOptions):
    """`vitmae detect`: Faster / Mask R-CNN with the ViTDet backbone and recipe, on COCO data or the scenes."""

    output: str = redefault(TrainOptions, "output", "runs/detect")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP.replace("none: random", "none: from scratch"))
    data: str = opt(FASHION_SCENES, "fashion-scenes (built in: the items' boxes and instance masks; the detector's "
                    "input, --img-size, defaults to --scene-size) | a folder of COCO data in COCO 2017's layout "
                    "(annotations/instances_train*.json with images in train*/, the same for val)")
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
    lr: float | None = redefault(TrainOptions, "lr", 1e-4)
    weight_decay: float = redefault(TrainOptions, "weight_decay", 0.1)
    schedule: str = redefault(TrainOptions, "schedule", "step")
    warmup_epochs: float = redefault(TrainOptions, "warmup_epochs", 0.25)
    epochs: int = redefault(TrainOptions, "epochs", 12)
    batch_size: int = redefault(TrainOptions, "batch_size", 16)
    jitter_scale: tuple[float, ...] = opt((0.1, 2.0), "large-scale jitter: the range of the resize factor before "
                                          "the fixed-size crop (1,1: no jitter)", above=0)
    hflip: float = opt(0.5, "horizontal flip probability", min=0, max=1)
    detections_per_image: int = opt(100, "detections kept per image", min=1)
    proposals: int | None = opt(None, "region proposals per image at evaluation; training keeps twice as many "
                                "(default: ViTDet's 1000 scaled by the input's area against 1024x1024, at least 100)",
                                min=1)
    rois_per_image: int | None = opt(None, "proposals sampled per training image for the box (and mask) head (default: "
                                     "ViTDet's 512 scaled by the input's area against 1024x1024, at least 64)", min=1)
    pyramid_channels: int | None = opt(None, "width of the feature pyramid's maps and the mask head (default: a third "
                                       "of the encoder's width, 32 to ViTDet's 256; the box head's input is 7 x 7 "
                                       "times this)", min=1)
    recipe: str = opt("auto", RECIPE_HELP.format("ViTDet's 256-wide pyramid, 512 RoIs, 2000 / 1000 proposals"),
                      choices=RECIPES)
    eval_every_epochs: int = opt(1, "evaluate on the validation images every N epochs (and at the end)", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.jitter_scale) != 2 or self.jitter_scale[0] > self.jitter_scale[1]:
            raise ConfigError(f"--jitter-scale takes two factors low,high, not {self.jitter_scale}")


def explicit_files(cfg: DetectOptions) -> dict[str, tuple[str, str]]:
    """{split: (annotation file, image folder)} of --train-json ... --val-images; none without them."""
    explicit = (cfg.train_json, cfg.train_images, cfg.val_json, cfg.val_images)
    if any(explicit) and not all(explicit):
        raise ConfigError("give all of --train-json --train-images --val-json --val-images, or --data DIR")
    return {"train": explicit[:2], "val": explicit[2:]} if all(explicit) else {}


def detect_run(cfg: DetectOptions) -> dict[str, Any]:
    """Train and evaluate as `cfg` says; returns the summary also written to RUN/metrics.json."""
    explicit = explicit_files(cfg)
    encoder = prepared_encoder(cfg.checkpoint, cfg.model, cfg.seed, cfg.model_overrides(), cfg.data)
    data = {split: explicit.get(split, (cfg.data, None)) for split in ("train", "val")}  # (spec, image folder)
    train, val = (open_source(spec, split, "detection", images=images, in_chans=encoder.config.in_chans,
                              seed=cfg.seed, scene_size=cfg.scene_size, scenes=cfg.scenes, val_scenes=cfg.val_scenes)
                  for split, (spec, images) in data.items())
    for source in (train, val):
        if source.dropped:
            log.warning(f"{len(source.dropped)} malformed annotations of {source.description} left out, e.g. "
                        f"annotations[{source.dropped[0]['annotation']}]: {source.dropped[0]['reason']} (metrics.json "
                        "lists the first few)")
    if val.category_ids != train.category_ids:
        raise DataError(f"the categories of {val.description} ({val.category_ids}) differ from those of "
                        f"{train.description} ({train.category_ids})")
    masks = train.has_masks() if cfg.masks == "auto" else cfg.masks == "on"
    if masks and not train.has_masks():
        raise ConfigError(f"--masks on: not every object of {train.description} has a segmentation")
    train.masks = masks
    scenes = not isinstance(train, CocoSource)
    img_size = tuple(cfg.img_size or ((cfg.scene_size,) * 2 if scenes else encoder.config.img_size))
    sizing = Sizing(cfg.recipe, {}, {})
    if cfg.img_size is None and not scenes:  # never larger than the images: the detector would upsample them
        sizing = detect_input_sizing(cfg.recipe, img_size, [(image["height"], image["width"]) for image in train.images],
                                     encoder.config.patch_size)
        img_size = sizing.values.get("img_size", img_size)
    sizing = sizing.merged(detect_sizing(cfg.recipe, cfg.pyramid_channels, cfg.rois_per_image, cfg.proposals,
                                         encoder.config.embed_dim, img_size))
    cfg = sizing.applied(cfg)
    model = detection.build_model(encoder, len(train.classes), masks, img_size, cfg.window_size, cfg.global_blocks,
                                  cfg.pyramid_channels, cfg.proposals, cfg.detections_per_image, cfg.rois_per_image,
                                  cfg.drop_path, cfg.seed)

    dataset = build_dataset(train, DetectionTransform(img_size, train=True, scale=cfg.jitter_scale, hflip=cfg.hflip),
                            cfg.seed)
    evaluator = detection.CocoEvaluator(val, masks, cfg.eval_every_epochs, cfg.batch_size, cfg.num_workers)
    trainer = Trainer(model, detection.DetectionObjective(), dataset, cfg, betas=(0.9, 0.999),
                      collate_fn=collate_detection, hooks=[evaluator],
                      groups=detection.FAMILY.param_groups(model, cfg.weight_decay, cfg.layer_decay),
                      cost_options=("pyramid_channels", "rois_per_image", "proposals"), shard_units=detection.shard_units)
    output = Path(cfg.output)
    # the data's files, so that evaluate finds them again from anywhere
    files = None if scenes else {split: [str(source.json_path.resolve()), str(source.image_root.resolve())]
                                 for split, source in (("train", train), ("val", val))}
    record = DetectRecord(
        classes=train.classes, category_ids=train.category_ids, masks=masks, img_size=list(img_size),
        window_size=cfg.window_size, global_blocks=model.backbone.global_blocks,
        pyramid_channels=cfg.pyramid_channels, proposals=cfg.proposals,
        detections_per_image=cfg.detections_per_image, pos_embed=encoder.pos_embed_kind, data=cfg.data, files=files,
        scenes=cfg.scenes, val_scenes=cfg.val_scenes, scene_size=cfg.scene_size, seed=cfg.seed,
        model=encoder.config.to_dict(), rois_per_image=cfg.rois_per_image, recipe=cfg.recipe, sized=sizing.reasons)
    if trainer.dist.is_main:
        save_config(cfg, output)
        record.write(output)
        if sizing.line():
            tqdm.write(sizing.line())
    summary = trainer.fit()
    if trainer.dist.is_main:
        history = trainer.extra_state["coco"]
        summary = {**summary, **{kind: history[-1][kind] for kind in ("box", "mask") if kind in history[-1]},
                   "history": history, "init": "scratch" if cfg.checkpoint.lower() == "none" else cfg.checkpoint,
                   "train": train.description, "val": val.description, "train_images": len(train),
                   "val_images": len(val),
                   "train_data": train.stats, "val_data": val.stats,
                   "annotations_dropped": {split: {"count": len(source.dropped),
                                                   "examples": source.dropped[:DROPPED_EXAMPLES]}
                                           for split, source in (("train", train), ("val", val))}, "strides": list(model.backbone.strides),
                   **record.to_dict()}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: DetectOptions) -> list[str]:
    return detection.ap_lines(s, f" on {s['val']} ({s['val_images']} images)") + [
        f"{s['steps']} steps on {s['train_images']} images, {s['img_s']:.0f} img/s; checkpoint {s['checkpoint']}"]


TASK = Task("detect", "object detection / instance segmentation on the encoder (ViTDet, Faster / Mask R-CNN)",
            DetectOptions, detect_run, report)

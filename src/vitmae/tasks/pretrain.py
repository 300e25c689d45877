"""`vitmae pretrain`: masked-autoencoder pre-training, from images to a checkpoint a user can watch improve."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data import EvalTransform
from ..data.device_augment import AUGMENT_ON, resolve_augment_on
from ..errors import ConfigError
from ..families import mae, video
from ..model import STRATEGIES, ModelConfig
from ..options import opt, save_config
from ..train import Hook, Trainer, write_json
from ..train.config import TrainOptions
from ..train.distributed import DistInfo
from ..train.runtime import resolve_device
from .options import ClipTrainingOptions, MAEOptions, Task


@dataclass
class PretrainOptions(MAEOptions, ClipTrainingOptions, TrainOptions):
    """`vitmae pretrain`: the defaults run the built-in Fashion-MNIST on a laptop CPU in minutes."""

    data: str = opt("fashion-mnist", "images: fashion-mnist | photos | a folder (searched recursively) | a .csv "
                    "| 'shards-{000..127}.tar'; clips, for a video model: moving-fashion-mnist | a folder of "
                    "videos or of frame folders | a .txt or .csv list")
    val_data: str | None = opt(None, "held-out images for the start/end loss and the pictures (default: the "
                               "test split of fashion-mnist)")
    samples_per_epoch: int | None = opt(None, "epoch length for streamed shards", min=1)
    masking: str = opt("random", "which patches of an image are removed (a video model's: --mask-type)",
                       choices=STRATEGIES)
    crop_min_scale: float = opt(0.2, "smallest crop area of RandomResizedCrop, as a share of the image",
                                above=0, max=1)
    heldout_samples: int = opt(1000, "held-out images used for the start/end loss", min=1)
    viz_every_epochs: int = opt(1, "write a reconstruction grid every N epochs (0: only at the start and end)",
                                min=0)
    eval_knn: str | None = opt(None, "labeled data (e.g. fashion-mnist) for a kNN accuracy of the encoder at the "
                               "start and every few epochs")
    knn_every_epochs: int = opt(1, "kNN evaluation every N epochs (0: only at the start and the end)", min=0)
    augment_on: str = opt("auto", "where training images are decoded, cropped and flipped: workers (PIL in the "
                          "DataLoader workers) | device (JPEG decoding and crops of whole batches on the "
                          "training device) | auto (device on a GPU)", choices=AUGMENT_ON)


def pretrain(cfg: PretrainOptions) -> dict[str, Any]:
    """Pre-train a masked autoencoder as `cfg` says (on images, or on clips for a video model); returns
    the summary also written to metrics.json."""
    config = cfg.model_config()
    if config.is_video:
        model = video.build_model(config, cfg.data, cfg.seed)
        model_cfg, masking = model.config, model.config.mask_type
        source, dataset, mean, std, interval, sized = video.pretrain_clips(
            cfg.data, model_cfg, cfg.crop_min_scale, cfg.seed, cfg.frame_interval, cfg.repeat_aug, cfg.clips)
        images, description = video.heldout_clips(cfg.data, cfg.val_data, source, model_cfg, cfg.heldout_samples,
                                                  interval, mean, std, cfg.clips)
        if cfg.eval_knn:
            raise ConfigError("--eval-knn measures an image encoder; for a video model, probe it after "
                              "pre-training (vitmae linprobe)")
    else:
        augment_on = resolve_augment_on(cfg.augment_on, resolve_device(cfg.device, DistInfo()).type)
        model = mae.build_model(config, cfg.data, cfg.seed)
        model_cfg, masking, interval, sized = model.config, cfg.masking, None, None
        source, dataset, mean, std = mae.pretrain_data(cfg.data, model_cfg, cfg.crop_min_scale, cfg.seed,
                                                       on_device=augment_on == "device")
        heldout, description = mae.heldout_source(cfg.data, cfg.val_data, source, model_cfg.in_chans)
        images = mae.heldout_images(heldout, cfg.heldout_samples, EvalTransform(model_cfg.img_size, mean, std),
                                    cfg.seed)
    monitor = mae.HeldoutMonitor(images, description, masking, cfg.viz_every_epochs, cfg.seed, mean, std)
    hooks: list[Hook] = [monitor]
    knn_monitor = None
    if cfg.eval_knn:  # kNN accuracy of the encoder on labeled data, at the start and every few epochs
        knn_monitor = mae.KnnMonitor(cfg.eval_knn, model_cfg.in_chans, model_cfg.img_size, mean, std,
                                     cfg.knn_every_epochs, cfg.seed, num_workers=cfg.num_workers)
        hooks.append(knn_monitor)

    objective = mae.MAEObjective(model_cfg.mask_ratio, masking, model_cfg.patching.size, cfg.seed, 0)
    trainer = Trainer(model, objective, dataset, cfg, hooks=hooks, samples_per_epoch=cfg.samples_per_epoch,
                      shard_units=mae.shard_units)
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    if trainer.dist.is_main:
        save_config(cfg, output)
        if sized:
            tqdm.write(sized)
    summary = trainer.fit()
    if trainer.dist.is_main:
        clips = {"target": video.target_record(model_cfg), "frame_interval": interval,
                 "repeat_aug": cfg.repeat_aug} if model_cfg.is_video else {}
        summary = {**summary, **monitor.results, **(knn_monitor.results if knn_monitor else {}), **clips,
                   "model": model_cfg.to_dict()}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: PretrainOptions) -> list[str]:
    lines = []
    if "target" in s:  # a video model: which target its loss compared with
        lines.append(video.target_line(ModelConfig.from_dict(s["model"])))
    if "heldout_loss_end" in s:
        unit = "clips" if "target" in s else "images"
        lines += [f"held-out masked-patch loss on {s['heldout']}, {s['heldout_images']} {unit}: "
                  f"{s['heldout_loss_start']:.4f} -> {s['heldout_loss_end']:.4f} "
                  f"(trivial baseline {s['heldout_loss_baseline']:.4f})",
                  f"{s['steps']} steps, {s['img_s']:.0f} {'clips' if 'target' in s else 'img'}/s; checkpoint "
                  f"{s['checkpoint']}; "
                  f"pictures in {Path(cfg.output) / 'reconstructions'}"]
    if "knn_top1_end" in s:
        lines.append(f"kNN top-1 of the encoder on {s['knn']}: {s['knn_top1_start']:.2f}% -> {s['knn_top1_end']:.2f}%")
    if s.get("skipped_files"):
        lines.append(f"skipped {len(s['skipped_files'])} unreadable file(s): listed in metrics.json")
    return lines


TASK = Task("pretrain", "pre-train a masked autoencoder", PretrainOptions, pretrain, report)

"""`vitmae pretrain`: masked-autoencoder pre-training, from images to a checkpoint a user can watch improve."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from ..data import (Batch, EvalTransform, ShardSource, UnreadableImage, build_source, sample_generator)
from ..data.device_augment import AUGMENT_ON, resolve_augment_on
from ..data.sources import require_readable
from ..data.transforms import mix_seed
from ..model import STRATEGIES, MaskedAutoencoder, Patching, make_noise
from ..options import opt, save_config
from ..train import Hook, Trainer, write_json
from ..train.config import TrainConfig
from ..train.distributed import DistInfo
from ..train.hooks import PeriodicEvaluation
from ..train.runtime import resolve_device
from ..viz import reconstruct, save_reconstruction_grid
from .common import KnnMonitor, normalization, pretrain_data
from .options import MAEOptions, Task

VIZ_IMAGES = 8


@dataclass
class PretrainConfig(MAEOptions, TrainConfig):
    """`vitmae pretrain`: the defaults run the built-in Fashion-MNIST on a laptop CPU in minutes."""

    data: str = opt("fashion-mnist", "images: fashion-mnist | photos | a folder (searched recursively) | a .csv "
                    "| 'shards-{000..127}.tar'")
    val_data: str | None = opt(None, "held-out images for the start/end loss and the pictures (default: the "
                               "test split of fashion-mnist)")
    samples_per_epoch: int | None = opt(None, "epoch length for streamed shards", min=1)
    masking: str = opt("random", "which patches are removed", choices=STRATEGIES)
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


class MAEObjective:
    """Masked-patch reconstruction loss; the mask noise of each micro-batch is keyed by
    (seed, step, micro-batch, rank), so a resumed run masks exactly as the uninterrupted one."""

    def __init__(self, mask_ratio: float, masking: str, patch_size: int | tuple[int, ...], seed: int, rank: int):
        self.mask_ratio, self.masking, self.patching = mask_ratio, masking, Patching(patch_size)
        self.seed, self.rank = seed, rank

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        images = batch.images
        grid = self.patching.grid_of(images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, step, micro, self.rank))
        noise = make_noise(self.masking, len(images), grid, self.mask_ratio, generator)
        noise = noise.to(images.device, non_blocking=True)  # a copy queued behind the step, not a sync
        return model(images, mask_ratio=self.mask_ratio, noise=noise).loss


def heldout_images(source: Any, count: int, transform: EvalTransform, seed: int) -> Tensor:
    """A fixed sample of `count` readable images: evenly spread over a source, the first of a stream."""
    images: list[Tensor] = []
    reasons: list[str] = []  # of the unreadable ones, which the training loop reports too
    if isinstance(source, ShardSource):
        for sample in source.with_transform(transform, seed):
            if isinstance(sample, tuple):  # not a Skipped marker
                images.append(sample[0])
            else:
                reasons.append(sample.reason)
            if len(images) == count:
                break
    else:
        n = len(source)
        for index in sorted({int(i * n / min(count, n)) for i in range(min(count, n))}):
            try:
                img, _ = source[index]
            except UnreadableImage as err:
                reasons.append(err.reason)
                continue
            images.append(transform(img, sample_generator(seed, 0, index)))
    require_readable(len(images), "the held-out sample", reasons)
    return torch.stack(images)


class HeldoutMonitor(PeriodicEvaluation):
    """Held-out masked-patch loss (with the trivial baseline) and a reconstruction grid of fixed held-out
    images at the start, every `viz_every_epochs` epochs (0: none between) and at the end."""

    at_start, main_only, history_key = True, True, "heldout_history"

    def __init__(self, images: Tensor, description: str, cfg: PretrainConfig, mean, std):
        self.images, self.description, self.cfg = images, description, cfg
        self.mean, self.std = mean, std
        self.every = cfg.viz_every_epochs
        self.results: dict[str, Any] = {}
        self._logged_grid_step: int | None = None

    def _noise(self, model: MaskedAutoencoder, count: int) -> Tensor:
        grid = model.grid_of(self.images)
        generator = torch.Generator().manual_seed(mix_seed(self.cfg.seed, 0xE7A1))
        return make_noise(self.cfg.masking, count, grid, model.config.mask_ratio, generator)

    @torch.no_grad()
    def losses(self, trainer: Trainer) -> tuple[float, float]:
        """(masked-patch loss, trivial-predictor loss) over the held-out images, with fixed masks."""
        model: MaskedAutoencoder = trainer.model
        was_training = model.training
        model.eval()
        noise = self._noise(model, len(self.images))
        total = baseline = 0.0
        for start in range(0, len(self.images), 256):
            images = self.images[start:start + 256].to(trainer.device)
            batch_noise = noise[start:start + 256].to(trainer.device)
            with trainer.runtime.autocast():
                out = model(images, noise=batch_noise)
            total += out.loss.item() * len(images)
            baseline += model.forward_loss(images, self._trivial_prediction(model, images, out.mask),
                                           out.mask).item() * len(images)
        model.train(was_training)
        return total / len(self.images), baseline / len(self.images)

    @staticmethod
    def _trivial_prediction(model: MaskedAutoencoder, images: Tensor, mask: Tensor) -> Tensor:
        """Zeros for norm-pix targets (each patch's own mean); else each image's mean visible pixel."""
        patches = model.patchify(images)
        if model.config.norm_pix_loss:
            return torch.zeros_like(patches)
        c = images.shape[1]
        visible = (1 - mask).unsqueeze(-1)
        per_channel = (patches.unflatten(-1, (-1, c)) * visible.unsqueeze(-1)).sum(dim=(1, 2))
        per_channel = per_channel / (visible.sum(dim=1) * patches.shape[-1] / c)
        return per_channel[:, None, None, :].expand(-1, patches.shape[1], patches.shape[-1] // c, -1).flatten(2)

    def save_grid(self, trainer: Trainer, name: str, title: str) -> None:
        """The reconstruction grid of the held-out images, as RUN/reconstructions/NAME and to the loggers."""
        model: MaskedAutoencoder = trainer.model
        was_training = model.training
        model.eval()
        images = self.images[:VIZ_IMAGES].to(trainer.device)
        rec = reconstruct(model, images, noise=self._noise(model, len(images)).to(trainer.device))
        model.train(was_training)
        path = save_reconstruction_grid(rec, trainer.output / "reconstructions" / name, self.mean, self.std, title)
        if trainer.progress.step != self._logged_grid_step:  # the final grid may repeat the last epoch's
            self._logged_grid_step = trainer.progress.step
            with Image.open(path) as grid:
                trainer.log_image("reconstructions", grid, trainer.progress.step)

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        loss, baseline = self.losses(trainer)
        trainer.extra_state.setdefault("heldout_loss_baseline", baseline)  # of the untrained model
        return {"loss": loss}

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {"heldout/loss": entry["loss"]}

    def on_record(self, trainer: Trainer, entry: dict[str, Any], point: str) -> None:
        if point == "start":
            trainer.extra_state["heldout_loss_start"] = entry["loss"]
            self.save_grid(trainer, "epoch-000.png", "before training")
        elif point == "epoch":
            epoch = entry["epoch"]
            self.save_grid(trainer, f"epoch-{epoch:03d}.png", f"after epoch {epoch}, step {entry['step']}")

    def on_end(self, trainer: Trainer) -> None:
        super().on_end(trainer)
        if not trainer.dist.is_main:
            return
        self.save_grid(trainer, "final.png", f"end of training, step {trainer.progress.step}")
        history = self.history(trainer)
        self.results = {
            "heldout": self.description,
            "heldout_images": len(self.images),
            "heldout_loss_start": trainer.extra_state["heldout_loss_start"],
            "heldout_loss_end": history[-1]["loss"],
            "heldout_loss_baseline": trainer.extra_state["heldout_loss_baseline"],
            "heldout_history": history,
        }


def build_model(cfg: PretrainConfig) -> MaskedAutoencoder:
    """A fresh MAE of the configured architecture, recording the input normalisation it trains with."""
    model_cfg = cfg.model_config()
    mean, std = normalization(model_cfg, cfg.data)
    torch.manual_seed(cfg.seed)
    return MaskedAutoencoder(model_cfg.replace(mean=mean, std=std))


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pre-train a masked autoencoder as `cfg` says; returns the summary also written to metrics.json."""
    augment_on = resolve_augment_on(cfg.augment_on, resolve_device(cfg.device, DistInfo()).type)
    model = build_model(cfg)
    model_cfg = model.config
    source, dataset, mean, std = pretrain_data(cfg.data, model_cfg, cfg.crop_min_scale, cfg.seed,
                                               on_device=augment_on == "device")

    eval_transform = EvalTransform(model_cfg.img_size, mean, std)
    if cfg.val_data or cfg.data == "fashion-mnist":
        spec = cfg.val_data or cfg.data
        heldout_source = build_source(spec, "val", in_chans=model_cfg.in_chans)
        description = f"{spec} ({'test split' if spec == 'fashion-mnist' else 'held out'})"
    else:
        heldout_source = source
        description = f"{cfg.data} (a fixed sample of TRAINING images: no --val-data given)"
    images = heldout_images(heldout_source, cfg.heldout_samples, eval_transform, cfg.seed)
    monitor = HeldoutMonitor(images, description, cfg, mean, std)
    hooks: list[Hook] = [monitor]
    knn_monitor = None
    if cfg.eval_knn:  # kNN accuracy of the encoder on labeled data, at the start and every few epochs
        knn_monitor = KnnMonitor(cfg.eval_knn, model_cfg.in_chans, model_cfg.img_size, mean, std,
                                 cfg.knn_every_epochs, cfg.seed, num_workers=cfg.num_workers)
        hooks.append(knn_monitor)

    objective = MAEObjective(model_cfg.mask_ratio, cfg.masking, model_cfg.patching.size, cfg.seed, 0)
    trainer = Trainer(model, objective, dataset, cfg, hooks=hooks, samples_per_epoch=cfg.samples_per_epoch)
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    if trainer.dist.is_main:
        save_config(cfg, output)
    summary = trainer.fit()
    if trainer.dist.is_main:
        summary = {**summary, **monitor.results, **(knn_monitor.results if knn_monitor else {}),
                   "model": model_cfg.to_dict()}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: PretrainConfig) -> list[str]:
    lines = []
    if "heldout_loss_end" in s:
        lines += [f"held-out masked-patch loss on {s['heldout']}, {s['heldout_images']} images: "
                  f"{s['heldout_loss_start']:.4f} -> {s['heldout_loss_end']:.4f} "
                  f"(trivial baseline {s['heldout_loss_baseline']:.4f})",
                  f"{s['steps']} steps, {s['img_s']:.0f} img/s; checkpoint {s['checkpoint']}; "
                  f"pictures in {Path(cfg.output) / 'reconstructions'}"]
    if "knn_top1_end" in s:
        lines.append(f"kNN top-1 of the encoder on {s['knn']}: {s['knn_top1_start']:.2f}% -> {s['knn_top1_end']:.2f}%")
    if s.get("skipped_files"):
        lines.append(f"skipped {len(s['skipped_files'])} unreadable file(s): listed in metrics.json")
    return lines


TASK = Task("pretrain", "pre-train a masked autoencoder", PretrainConfig, pretrain, report)

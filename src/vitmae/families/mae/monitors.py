"""What a pre-training run is watched by: the held-out masked-patch loss with its reconstruction pictures,
and the kNN accuracy of the encoder on labeled data. Both evaluate on rank 0 only, on the schedule of
`train.hooks.PeriodicEvaluation`, with their histories in the run's training state."""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ...data import EvalTransform
from ...data.labels import Source, SubsetSource, labeled_splits, num_classes_of, source_labels, stratified_indices
from ...data.transforms import mix_seed
from ...model import MaskedAutoencoder, make_noise
from ...train import Trainer
from ...train.hooks import PeriodicEvaluation
from ...train.runtime import eval_mode
from ...viz import reconstruct, save_reconstruction_grid
from ..encoder import Stats
from ..features import encode_source, knn_accuracy

VIZ_IMAGES = 8  # held-out images in each reconstruction grid
VIZ_CLIPS = 3  # held-out clips in each (four rows a clip, a column per time slice)


class HeldoutMonitor(PeriodicEvaluation):
    """Held-out masked-patch loss (with the trivial baseline) and a reconstruction grid of fixed held-out
    images at the start, every `every_epochs` epochs (0: none between) and at the end; the same masks
    every time (`masking`, from `seed`)."""

    at_start, main_only, history_key = True, True, "heldout_history"

    def __init__(self, images: Tensor, description: str, masking: str, every_epochs: int, seed: int,
                 mean: Stats, std: Stats):
        self.images, self.description, self.masking, self.seed = images, description, masking, seed
        self.every, self.mean, self.std = every_epochs, mean, std
        self.results: dict[str, Any] = {}
        self._logged_grid_step: int | None = None

    def _noise(self, model: MaskedAutoencoder, count: int) -> Tensor:
        grid = model.grid_of(self.images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xE7A1))
        return make_noise(self.masking, count, grid, model.config.mask_ratio, generator)

    @torch.no_grad()
    def losses(self, trainer: Trainer) -> tuple[float, float]:
        """(masked-patch loss, trivial-predictor loss) over the held-out images, with fixed masks."""
        model: MaskedAutoencoder = trainer.model
        noise = self._noise(model, len(self.images))
        total = baseline = 0.0
        with eval_mode(model):
            for start in range(0, len(self.images), 256):
                images = self.images[start:start + 256].to(trainer.device)
                batch_noise = noise[start:start + 256].to(trainer.device)
                with trainer.runtime.autocast():
                    out = model(images, noise=batch_noise)
                total += out.loss.item() * len(images)
                baseline += model.forward_loss(images, self._trivial_prediction(model, images, out.mask),
                                               out.mask).item() * len(images)
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
        images = self.images[:VIZ_CLIPS if model.config.is_video else VIZ_IMAGES].to(trainer.device)
        with eval_mode(model):
            rec = reconstruct(model, images, noise=self._noise(model, len(images)).to(trainer.device))
        path = save_reconstruction_grid(rec, trainer.output / "reconstructions" / name, self.mean, self.std, title,
                                        tubelet=model.config.tubelet_size if model.config.is_video else 1)
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
        with trainer.main_rank_model():
            if trainer.dist.is_main:
                self.save_grid(trainer, "final.png", f"end of training, step {trainer.progress.step}")
        if not trainer.dist.is_main:
            return
        history = self.history(trainer)
        self.results = {
            "heldout": self.description,
            "heldout_images": len(self.images),
            "heldout_loss_start": trainer.extra_state["heldout_loss_start"],
            "heldout_loss_end": history[-1]["loss"],
            "heldout_loss_baseline": trainer.extra_state["heldout_loss_baseline"],
            "heldout_history": history,
        }


# Samples the monitor of a pre-training run uses: a stratified bank and query set, so one evaluation
# costs the forward passes of at most 12,000 images.
MONITOR_BANK, MONITOR_QUERIES = 10_000, 2_000


def _spread(source: Source, count: int, seed: int) -> Source:
    """A stratified sample of at most `count` labeled images of `source`."""
    labels = source_labels(source)
    labeled = int((labels >= 0).sum())
    if labeled <= count and labeled == len(labels):
        return source
    fraction = min(1.0, count / max(1, labeled))
    return SubsetSource(source, stratified_indices(labels, fraction=fraction, seed=seed))


class KnnMonitor(PeriodicEvaluation):
    """kNN top-1 / top-5 of the encoder being pre-trained, at the start, every `every_epochs` epochs (0:
    none between) and at the end: the representation getting better, while the loss alone says little.
    Bank and queries are fixed stratified samples (at most 10,000 and 2,000 images) of the labeled data's
    train and val splits."""

    at_start, main_only, timed, history_key = True, True, True, "knn"

    def __init__(self, spec: str, in_chans: int, img_size: tuple[int, int], mean: Stats, std: Stats,
                 every_epochs: int, seed: int, batch_size: int = 256, num_workers: int = 0, k: int = 20,
                 temperature: float = 0.07):
        train, val, self.description = labeled_splits(spec, None, in_chans, seed)
        self.bank_source, self.query_source = _spread(train, MONITOR_BANK, seed), _spread(val, MONITOR_QUERIES, seed)
        self.num_classes = max(num_classes_of(train), num_classes_of(val))
        self.transform = EvalTransform(img_size, mean, std)
        self.every, self.batch_size, self.num_workers = every_epochs, batch_size, num_workers
        self.k, self.temperature = k, temperature
        self.results: dict[str, Any] = {}

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        bank = encode_source(trainer.model, self.bank_source, self.transform, "cls", trainer.runtime,
                             self.batch_size, self.num_workers)
        queries = encode_source(trainer.model, self.query_source, self.transform, "cls", trainer.runtime,
                                self.batch_size, self.num_workers)
        labeled = queries.labels >= 0
        return knn_accuracy(bank.features, bank.labels, queries.features[labeled], queries.labels[labeled],
                            self.k, self.temperature, self.num_classes)

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {"knn/top1": entry["top1"], "knn/top5": entry["top5"]}

    def line(self, entry: dict[str, Any]) -> str:
        return f"kNN top-1 {entry['top1']:.2f}% (k={self.k}, {self.description})"

    def on_end(self, trainer: Trainer) -> None:
        super().on_end(trainer)
        if not trainer.dist.is_main:
            return
        history = self.history(trainer)
        self.results = {"knn": self.description, "knn_bank_images": len(self.bank_source),
                        "knn_query_images": len(self.query_source), "knn_top1_start": history[0]["top1"],
                        "knn_top1_end": history[-1]["top1"], "knn_history": history}

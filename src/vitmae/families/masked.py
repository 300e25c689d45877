"""What the masked-autoencoder families share, images (`mae`) and clips (`video`) alike, since they train
the same model: a fresh MAE recording its input normalisation, its units, and the objective, masked by a
strategy of either."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import Batch
from ..data.transforms import mix_seed
from ..model import MaskedAutoencoder, ModelConfig, Patching, make_noise
from .encoder import normalization


def build_mae(config: ModelConfig, data: str, seed: int) -> MaskedAutoencoder:
    """A fresh MAE of `config`, recording the input normalisation it trains with (`data`'s by default)."""
    mean, std = normalization(config, data)
    torch.manual_seed(seed)
    return MaskedAutoencoder(config.replace(mean=mean, std=std))


def mae_shard_units(model: MaskedAutoencoder) -> list[nn.Module]:
    return [*model.encoder.blocks, *model.decoder.decoder_blocks]


class MAEObjective:
    """Masked-patch reconstruction loss; the mask noise of each micro-batch is keyed by
    (seed, step, micro-batch, rank), so a resumed run masks exactly as the uninterrupted one. `masking`
    is an image strategy (random, block, grid) or a video one (tube, random); the model keeps as many
    tokens as that strategy's rule says (model.masking.num_kept_for)."""

    def __init__(self, mask_ratio: float, masking: str, patch_size: int | tuple[int, ...], seed: int, rank: int):
        self.mask_ratio, self.masking, self.patching = mask_ratio, masking, Patching(patch_size)
        self.seed, self.rank = seed, rank

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        images = batch.images
        grid = self.patching.grid_of(images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, step, micro, self.rank))
        noise = make_noise(self.masking, len(images), grid, self.mask_ratio, generator)
        noise = noise.to(images.device, non_blocking=True)  # a copy queued behind the step, not a sync
        return model(images, mask_ratio=self.mask_ratio, noise=noise, mask_type=self.masking).loss

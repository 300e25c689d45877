"""The masked autoencoder: mask, encode the visible patches, decode all of them, loss on the removed ones.

Reads top to bottom like the paper (He et al. 2021) and the official `models_mae.py`. The model holds an
encoder (`vit.ViTEncoder`) and a decoder; in files their parameters have the official flat names (see
flat_names), so an official checkpoint's state dict loads as it is.

The same model is VideoMAE (Tong et al. 2022) or MAE-ST (Feichtenhofer et al. 2022) when its config has
`num_frames`: clips (N, C, T, H, W) in t x p x p tubelets, tube or random masking, and VideoMAE's shape
where its config says so (no cls token, q/v biases, `decoder_embed` without bias: VideoMAE's
`encoder_to_decoder`, its own 1-D sin-cos tables). `pixel_target` says what the decoder predicts: the
image MAE's patches, or VideoMAE's (`videomae_target`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .grid import Grid
from .masking import Masking, make_noise, mask_from_noise, masking_from_mask, num_kept_for
from .positions import OwnsPositionTable
from .vit import Block, BlockCheckpointing, ViTEncoder, init_weights

VIDEOMAE_STD_EPS = 1e-6  # VideoMAE's target: (x - mean) / (unbiased std + 1e-6)


@dataclass
class MAEOutput:
    loss: Tensor  # scalar: mean squared error over the removed patches
    pred: Tensor  # (N, L, values) predicted patches (normalised targets' space when norm_pix_loss)
    mask: Tensor  # (N, L) 1 = removed, 0 = visible
    ids_restore: Tensor  # (N, L)


class MAEDecoder(OwnsPositionTable, BlockCheckpointing, nn.Module):
    """A light transformer over all P + L positions: the visible latents and a shared mask token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.grid_size = c.grid_size
        self.num_prefix_tokens = c.num_prefix_tokens
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=c.decoder_embed_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.init_position_table(c, c.decoder_embed_dim, "decoder_pos_embed")
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.decoder_mlp_ratio, c.qkv_bias, c.norm_eps,
                  k_bias=c.k_bias)
            for _ in range(c.decoder_depth)
        )
        norm_eps = c.norm_eps if c.decoder_norm_eps is None else c.decoder_norm_eps
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patching.values(c.in_chans))
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, ids_restore: Tensor, grid: Grid) -> Tensor:
        x = self.decoder_embed(latent)
        n, visible, dim = x.shape
        prefix = self.num_prefix_tokens
        mask_tokens = self.mask_token.expand(n, ids_restore.shape[1] + prefix - visible, -1)
        patches = torch.cat([x[:, prefix:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # unshuffle
        x = torch.cat([x[:, :prefix], patches], dim=1)
        x = x + self.position_table_for(grid)
        for block in self.decoder_blocks:
            x = self.run_block(block, x)
        return self.decoder_pred(self.decoder_norm(x))[:, prefix:]  # drop the cls position


class MaskedAutoencoder(nn.Module):
    flat_components = ("encoder", "decoder")  # files name their tensors without these prefixes

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = ViTEncoder(config)
        self.decoder = MAEDecoder(config)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def grid_of(self, images: Tensor) -> Grid:
        return self.encoder.grid_of(images)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of the encoder's and the decoder's blocks in backward."""
        self.encoder.set_grad_checkpointing(enable)
        self.decoder.set_grad_checkpointing(enable)

    def encode(self, images: Tensor) -> Tensor:
        """Deterministic features: all tokens, no masking, original order, cls first (N, 1 + L, D)."""
        return self.encoder.encode(images)

    # -- patches -------------------------------------------------------------------------------------
    def patchify(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, L, p*p*C); patches row-major, values ordered (row, col, channel). A clip
        (N, C, T, H, W) -> (N, L, t*p*p*C), values ordered (time, row, col, channel)."""
        return self.config.patching.patchify(images)

    def unpatchify(self, patches: Tensor, img_size: tuple[int, ...] | None = None) -> Tensor:
        """(N, L, p*p*C) -> (N, C, H, W); `img_size` ((T, H, W) for a clip) defaults to the size the model
        was built for."""
        patching = self.config.patching
        size = img_size or self.config.input_size
        return patching.unpatchify(patches, tuple(s // k for s, k in zip(size, patching.size)))

    # -- the method ----------------------------------------------------------------------------------
    def forward_encoder(self, images: Tensor, mask_ratio: float, noise: Tensor | None = None,
                        mask_type: str | None = None, mask: Tensor | None = None) -> tuple[Tensor, Masking]:
        """The visible tokens through the encoder. `mask_type` is the masking that made `noise` (default:
        the config's); it decides how many tokens are kept (masking.num_kept_for). A `mask` (N, L), true
        where removed, is used as it is (masking.masking_from_mask)."""
        x = self.encoder.embed_patches(images)  # position added before masking, as in the paper
        n, length, dim = x.shape
        grid = self.grid_of(images)
        if mask is not None:
            masking = masking_from_mask(mask.to(x.device))
        else:
            mask_type = mask_type or self.config.mask_type
            if noise is None:
                noise = make_noise(mask_type, n, grid, mask_ratio, device=x.device)
            masking = mask_from_noise(noise, mask_ratio, num_kept_for(mask_type, grid, mask_ratio))
        x = torch.gather(x, 1, masking.ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        return self.encoder.forward_tokens(x), masking

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor, grid: Grid) -> Tensor:
        return self.decoder(latent, ids_restore, grid)

    def target(self, images: Tensor) -> Tensor:
        """What `pred` is compared with: the patches, normalised per patch when norm_pix_loss (VideoMAE's
        definition when `config.pixel_target == "videomae"`: see videomae_target)."""
        if self.config.pixel_target == "videomae":
            return videomae_target(images, self.config)
        target = self.patchify(images)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        per_patch = ((pred.float() - self.target(images).float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None,
                mask_type: str | None = None, mask: Tensor | None = None) -> MAEOutput:
        """Mask (the tokens of lowest `noise` kept; drawn by `mask_type`, default the config's, when not
        given; or exactly the tokens where `mask` (N, L) is true, as transformers' `bool_masked_pos`),
        encode the visible tokens, decode all, score the removed ones."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        latent, masking = self.forward_encoder(images, ratio, noise, mask_type, mask)
        pred = self.forward_decoder(latent, masking.ids_restore, self.grid_of(images))
        mask = masking.mask
        if masking.ids_keep.shape[1] == mask.shape[1]:
            mask = torch.ones_like(mask)  # nothing removed: score the plain reconstruction instead
        loss = self.forward_loss(images, pred, mask)
        return MAEOutput(loss, pred, masking.mask, masking.ids_restore)


def videomae_target(clips: Tensor, config: ModelConfig) -> Tensor:
    """VideoMAE's target (N, L, t*p*p*C) of clips (N, C, T, H, W): the clips un-normalised (target_
    normalization), cut into tubelets with values in (time, row, col, channel) order; with norm_pix_loss,
    each tubelet normalised per channel over its t*p*p values: (x - mean) / (unbiased std + 1e-6)."""
    mean, std = target_normalization(config)
    if mean is not None:
        shape = (1, -1) + (1,) * (clips.dim() - 2)
        clips = clips * torch.tensor(std, dtype=clips.dtype, device=clips.device).view(shape) \
            + torch.tensor(mean, dtype=clips.dtype, device=clips.device).view(shape)
    patches = config.patching.patchify(clips)
    if not config.norm_pix_loss:
        return patches
    per_channel = patches.unflatten(-1, (-1, config.in_chans))  # (N, L, t*p*p, C)
    mean = per_channel.mean(dim=-2, keepdim=True)
    std = per_channel.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    return ((per_channel - mean) / (std + VIDEOMAE_STD_EPS)).flatten(-2)


def target_normalization(config: ModelConfig) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The (mean, std) VideoMAE's target un-normalises its inputs with: the recorded ones, else ImageNet's
    for 3 channels (VideoMAE's and transformers' assumption), else none (transformers leaves other channel
    counts as they are)."""
    if config.mean is not None and config.std is not None:
        return config.mean, config.std
    if config.in_chans == 3:
        # imported here: the model does not need the data stack loaded otherwise
        from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN, IMAGENET_STD
    return None, None


def create_model(name: str = "mae_vit_base_patch16", **overrides) -> MaskedAutoencoder:
    """A freshly initialised MAE from a preset, e.g. `create_model("mae_vit_tiny_patch16", img_size=32)`."""
    from .config import model_config

    return MaskedAutoencoder(model_config(name, **overrides))

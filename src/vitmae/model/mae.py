"""The masked autoencoder: mask, encode the visible patches, decode all of them, loss on the removed ones.

Reads top to bottom like the paper (He et al. 2021) and the official `models_mae.py`. The model holds an
encoder (`vit.ViTEncoder`) and a decoder; in files their parameters have the official flat names (see
flat_names), so an official checkpoint's state dict loads as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .masking import Masking, mask_from_noise, num_kept, random_noise
from .grid import Grid, position_table, sincos_pos_embed
from .vit import Block, BlockCheckpointing, ViTEncoder, init_weights


@dataclass
class MAEOutput:
    loss: Tensor  # scalar: mean squared error over the removed patches
    pred: Tensor  # (N, L, p*p*C) predicted patches (normalised targets' space when norm_pix_loss)
    mask: Tensor  # (N, L) 1 = removed, 0 = visible
    ids_restore: Tensor  # (N, L)


class MAEDecoder(BlockCheckpointing, nn.Module):
    """A light transformer over all L + 1 positions: the visible latents and a shared mask token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.grid_size = c.grid_size
        self.pos_embed_kind = "sincos"
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(c.decoder_embed_dim, self.grid_size)[None],
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.decoder_mlp_ratio, c.qkv_bias, c.norm_eps)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=c.norm_eps)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patching.values(c.in_chans))
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def learn_pos_embed(self) -> "MAEDecoder":
        """Make the position table a trained parameter (as `ViTEncoder.learn_pos_embed`)."""
        self.pos_embed_kind = "learned"
        self.decoder_pos_embed.requires_grad_(True)
        return self

    def forward(self, latent: Tensor, ids_restore: Tensor, grid: Grid) -> Tensor:
        x = self.decoder_embed(latent)
        n, visible, dim = x.shape
        mask_tokens = self.mask_token.expand(n, ids_restore.shape[1] + 1 - visible, -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # unshuffle
        x = torch.cat([x[:, :1], patches], dim=1)
        x = x + position_table(self.decoder_pos_embed, self.pos_embed_kind, self.config.pos_embed_resize,
                               self.grid_size, grid)
        for block in self.decoder_blocks:
            x = self.run_block(block, x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # drop the cls position


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
        """(N, C, H, W) -> (N, L, p*p*C); patches row-major, values ordered (row, col, channel)."""
        return self.config.patching.patchify(images)

    def unpatchify(self, patches: Tensor, img_size: tuple[int, ...] | None = None) -> Tensor:
        """(N, L, p*p*C) -> (N, C, H, W); `img_size` defaults to the size the model was built for."""
        patching = self.config.patching
        size = img_size or self.config.img_size
        return patching.unpatchify(patches, tuple(s // k for s, k in zip(size, patching.size)))

    # -- the method ----------------------------------------------------------------------------------
    def forward_encoder(self, images: Tensor, mask_ratio: float, noise: Tensor | None = None
                        ) -> tuple[Tensor, Masking]:
        x = self.encoder.embed_patches(images)  # position added before masking, as in the paper
        n, length, dim = x.shape
        if noise is None:
            noise = random_noise(n, self.grid_of(images), device=x.device)
        masking = mask_from_noise(noise, mask_ratio)
        x = torch.gather(x, 1, masking.ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        return self.encoder.forward_tokens(x), masking

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor, grid: Grid) -> Tensor:
        return self.decoder(latent, ids_restore, grid)

    def target(self, images: Tensor) -> Tensor:
        """What `pred` is compared with: the patches, normalised per patch when norm_pix_loss."""
        target = self.patchify(images)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        per_patch = ((pred.float() - self.target(images).float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: Tensor, mask_ratio: float | None = None, noise: Tensor | None = None
                ) -> MAEOutput:
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        latent, masking = self.forward_encoder(images, ratio, noise)
        pred = self.forward_decoder(latent, masking.ids_restore, self.grid_of(images))
        mask = masking.mask
        if num_kept(mask.shape[1], ratio) == mask.shape[1]:
            mask = torch.ones_like(mask)  # nothing removed: score the plain reconstruction instead
        loss = self.forward_loss(images, pred, mask)
        return MAEOutput(loss, pred, masking.mask, masking.ids_restore)


def create_model(name: str = "mae_vit_base_patch16", **overrides) -> MaskedAutoencoder:
    """A freshly initialised MAE from a preset, e.g. `create_model("mae_vit_tiny_patch16", img_size=32)`."""
    from .config import model_config

    return MaskedAutoencoder(model_config(name, **overrides))

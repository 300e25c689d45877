"""The position table a component (the encoder, the decoder) owns, whatever kind of model it is in.

- An image model: the official MAE's fixed 2-D sin-cos table (1, 1 + L, D), stored under the component's
  table name (`pos_embed`, `decoder_pos_embed`), fixed in pre-training and learned in fine-tuning.
- A video model, `pos_embed_type="sincos"`: VideoMAE's fixed 1-D sin-cos table over all tokens. As in
  VideoMAE it is not stored (a buffer outside the state dict) and stays fixed in fine-tuning too.
- A video model, `pos_embed_type="separable"`: MAE-ST's learned tables, `<name>_spatial` (1, H*W, D),
  `<name>_temporal` (1, T, D) and, with a cls token, `<name>_class` (1, 1, D).

At another grid than the one built for, a fixed sin-cos table is recomputed (or interpolated when
`pos_embed_resize="interpolate"`) and a learned one interpolated: space bicubically, time linearly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .grid import Grid, position_table, resample_table, separable_table, sincos_pos_embed, video_sincos_table

SEPARABLE_PARTS = ("_spatial", "_temporal", "_class")


class OwnsPositionTable:
    """Mixin of an nn.Module with a position table: `init_position_table` in its constructor, then
    `position_table_for(grid)` (1, P + L, D), `prefix_positions()` (1, P, D), `learn_pos_embed()`."""

    pos_embed_kind: str  # "sincos" (fixed) or "learned"
    table_name: str
    table_config: ModelConfig
    built_grid: Grid

    def init_position_table(self, config: ModelConfig, dim: int, name: str) -> None:
        self.table_name, self.table_config, self.built_grid = name, config, config.grid_size
        prefix = config.num_prefix_tokens
        if not config.is_video:
            self.pos_embed_kind = "sincos"
            setattr(self, name, nn.Parameter(sincos_pos_embed(dim, self.built_grid)[None], requires_grad=False))
        elif config.pos_embed_type == "sincos":
            self.pos_embed_kind = "sincos"
            self.register_buffer(name, video_sincos_table(dim, self.built_grid, prefix)[None], persistent=False)
        else:
            self.pos_embed_kind = "learned"
            t, h, w = self.built_grid
            for part, rows in zip(SEPARABLE_PARTS, (h * w, t, prefix)):
                if rows:
                    table = nn.Parameter(torch.zeros(1, rows, dim))
                    nn.init.trunc_normal_(table, std=0.02)  # MAE-ST's initialisation
                    setattr(self, name + part, table)

    def stored_tables(self) -> list[str]:
        """The names of the position tables in the state dict (none for VideoMAE's)."""
        if self.table_config.is_video and self.table_config.pos_embed_type == "sincos":
            return []
        if self.table_config.is_video:
            return [self.table_name + part for part in SEPARABLE_PARTS if hasattr(self, self.table_name + part)]
        return [self.table_name]

    def learn_pos_embed(self):
        """Make a stored table a trained parameter, as official MAE fine-tuning does. VideoMAE's table is
        not stored and stays fixed, as VideoMAE's fine-tuning keeps it; MAE-ST's tables are learned
        already."""
        if self.stored_tables() == [self.table_name]:
            self.pos_embed_kind = "learned"
            getattr(self, self.table_name).requires_grad_(True)
        return self

    def stored_tables_for(self, grid: Grid) -> dict[str, Tensor]:
        """The stored tables (by name) of this component built for `grid`, resized from this one's as
        `position_table_for` resizes them: what a model of another input size loads."""
        name, built = self.table_name, self.built_grid
        if not self.table_config.is_video:
            return {name: self.position_table_for(grid)}
        if self.table_config.pos_embed_type == "sincos":
            return {}
        tables = {name + "_spatial": resample_table(getattr(self, name + "_spatial"), built[1:], grid[1:]),
                  name + "_temporal": resample_table(getattr(self, name + "_temporal"), built[:1], grid[:1])}
        if hasattr(self, name + "_class"):
            tables[name + "_class"] = getattr(self, name + "_class")
        return tables

    def prefix_positions(self) -> Tensor:
        """The rows (1, P, D) of the prefix (cls) tokens."""
        if self.table_config.is_video and self.table_config.pos_embed_type == "separable":
            return getattr(self, self.table_name + "_class")
        return getattr(self, self.table_name)[:, :self.table_config.num_prefix_tokens]

    def position_table_for(self, grid: Grid) -> Tensor:
        """The table (1, P + L, D) for an input whose token grid is `grid`."""
        config, name, prefix = self.table_config, self.table_name, self.table_config.num_prefix_tokens
        if not config.is_video:
            return position_table(getattr(self, name), self.pos_embed_kind, config.pos_embed_resize,
                                  self.built_grid, grid)
        if config.pos_embed_type == "separable":
            patches = separable_table(getattr(self, name + "_spatial"), getattr(self, name + "_temporal"),
                                      self.built_grid, grid)
            return torch.cat([self.prefix_positions(), patches], dim=1) if prefix else patches
        table = getattr(self, name)
        if tuple(grid) == tuple(self.built_grid):
            return table
        if config.pos_embed_resize == "recompute":
            return video_sincos_table(table.shape[-1], grid, prefix)[None].to(table.device, table.dtype)
        return torch.cat([table[:, :prefix], resample_table(table[:, prefix:], self.built_grid, grid)], dim=1)

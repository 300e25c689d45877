"""The token grid: how an input is cut into patches, and what lives on the grid of patches.

An image (N, C, H, W) with p x p patches has the grid (H/p, W/p); a video (N, C, T, H, W) with t x p x p
tubelets has the grid (T/t, H/p, W/p). Tokens run row-major over the grid (the last axis fastest), and a
patch's values run over its own axes first, the channel last: (row, col, channel) for an image patch, the
official MAE's `nchpwq->nhwpqc`; (time, row, col, channel) for a tubelet, VideoMAE's order. Everything
else in the package that needs the grid's shape asks this module, so that a model's number of axes is a
parameter (`Patching`), not an assumption written into each user.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Grid = tuple[int, ...]


@dataclass(frozen=True)
class Patching:
    """The patch extent along each input axis after the channels: an int p is the square image patch
    (p, p); (t, p, p) is a video tubelet."""

    size: tuple[int, ...]

    def __init__(self, size: int | tuple[int, ...]):
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if not size or min(size) < 1:
            raise ValueError(f"a patch needs a positive extent along each axis, got {size}")
        object.__setattr__(self, "size", size)

    @property
    def ndim(self) -> int:
        """The input's axes after the channels: 2 for images, 3 for video."""
        return len(self.size)

    def values(self, channels: int) -> int:
        """Values in one patch vector (p * p * C for an image)."""
        return math.prod(self.size) * channels

    def grid(self, input_size: tuple[int, ...]) -> Grid:
        """The token grid of an input of `input_size` (H, W) or (T, H, W); each must be a multiple."""
        if len(input_size) != self.ndim or any(s % k for s, k in zip(input_size, self.size)):
            raise ValueError(f"input size {_x(input_size)} is not divisible by the patch size {_x(self.size)}")
        return tuple(s // k for s, k in zip(input_size, self.size))

    def grid_of(self, inputs: Tensor) -> Grid:
        """The token grid of a batch (N, C, *size) (or one input (C, *size))."""
        return self.grid(tuple(inputs.shape[-self.ndim:]))

    def input_size(self, grid: Grid) -> tuple[int, ...]:
        return tuple(g * k for g, k in zip(grid, self.size))

    def patchify(self, inputs: Tensor) -> Tensor:
        """(N, C, *size) -> (N, L, values): tokens row-major over the grid, each patch's values ordered
        over its own axes, then the channel."""
        n, c = inputs.shape[:2]
        grid = self.grid_of(inputs)
        split = [d for pair in zip(grid, self.size) for d in pair]  # g0, k0, g1, k1, ...
        x = inputs.reshape(n, c, *split)
        # (n, c, g0, k0, g1, k1, ...) -> (n, g0, g1, ..., k0, k1, ..., c)
        order = [0, *range(2, 2 + 2 * self.ndim, 2), *range(3, 3 + 2 * self.ndim, 2), 1]
        return x.permute(order).reshape(n, math.prod(grid), self.values(c))

    def unpatchify(self, patches: Tensor, grid: Grid) -> Tensor:
        """(N, L, values) on `grid` -> (N, C, *size): the inverse of `patchify`."""
        n, length, dim = patches.shape
        if length != math.prod(grid) or len(grid) != self.ndim:
            raise ValueError(f"{length} patches do not tile a {_x(self.input_size(grid))} input with patch size "
                             f"{_x(self.size)}")
        c = dim // math.prod(self.size)
        x = patches.reshape(n, *grid, *self.size, c)
        # (n, g0, g1, ..., k0, k1, ..., c) -> (n, c, g0, k0, g1, k1, ...)
        order = [0, 1 + 2 * self.ndim] + [a for i in range(self.ndim) for a in (1 + i, 1 + self.ndim + i)]
        return x.permute(order).reshape(n, c, *self.input_size(grid))

    def spread(self, values: Tensor, grid: Grid) -> Tensor:
        """One value per token (N, L) -> (N, 1, *size), each value over its patch's pixels (a mask's
        picture)."""
        x = tokens_to_map(values.unsqueeze(-1), grid)
        for axis, k in enumerate(self.size):
            x = x.repeat_interleave(k, dim=2 + axis)
        return x


def num_tokens(grid: Grid) -> int:
    return math.prod(grid)


def tokens_to_map(tokens: Tensor, grid: Grid) -> Tensor:
    """Tokens (N, L, D) -> a channels-first map (N, D, *grid): NCHW for images, NCTHW for video."""
    return tokens.transpose(1, 2).reshape(len(tokens), -1, *grid)


def map_to_tokens(feature_map: Tensor) -> Tensor:
    """A channels-first map (N, D, *grid) -> tokens (N, L, D), row-major over the grid."""
    return feature_map.flatten(2).transpose(1, 2)


def sincos_pos_embed(dim: int, grid: Grid, cls_token: bool = True) -> Tensor:
    """The fixed 2-D sin-cos table (1 + L, dim) of the official MAE: the first half of the channels
    encodes the column index, the second half the row index; each half is [sin, cos]. A zero row leads
    for the cls slot."""
    if len(grid) != 2:
        raise ValueError(f"the MAE sin-cos table is defined on a 2-D patch grid, not {_x(grid)}; a video "
                         "model brings its own table")
    gh, gw = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij"
    )

    def encode_1d(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode_1d(cols), encode_1d(rows)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table], dim=0)
    return table.float()


def resize_pos_embed(pos_embed: Tensor, old_grid: Grid, new_grid: Grid) -> Tensor:
    """Bicubic interpolation of a table (1, 1 + L, D) to another 2-D patch grid; the cls row is kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    if len(old_grid) != 2 or len(new_grid) != 2:
        raise ValueError(f"a position table is resized on 2-D patch grids only, not {_x(old_grid)} -> "
                         f"{_x(new_grid)}")
    return torch.cat([pos_embed[:, :1], resample_table(pos_embed[:, 1:], old_grid, new_grid)], dim=1)


def resample_table(table: Tensor, old_grid: Grid, new_grid: Grid) -> Tensor:
    """A table (1, L, D) with one row per token of `old_grid`, resampled to `new_grid` of as many axes:
    the spatial axes (the last two of a 2-D or 3-D grid) bicubically, time (the first of a 3-D grid, the
    only one of a 1-D grid) linearly; align_corners=False and no antialiasing, the official convention."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    x = tokens_to_map(table.float(), old_grid)  # (1, D, *grid)
    dim = x.shape[1]
    if len(old_grid) >= 2 and tuple(old_grid[-2:]) != tuple(new_grid[-2:]):
        frames = x.reshape(1, dim, -1, *old_grid[-2:]).transpose(1, 2).flatten(0, 1)  # (T, D, H, W)
        frames = F.interpolate(frames, size=tuple(new_grid[-2:]), mode="bicubic", align_corners=False)
        x = frames.unflatten(0, (1, -1)).transpose(1, 2).reshape(1, dim, *old_grid[:-2], *new_grid[-2:])
    if len(old_grid) != 2 and old_grid[0] != new_grid[0]:
        series = x.flatten(2).unflatten(2, (old_grid[0], -1)).transpose(2, 3).flatten(1, 2)  # (1, D*HW, T)
        series = F.interpolate(series, size=new_grid[0], mode="linear", align_corners=False)
        x = series.unflatten(1, (dim, -1)).transpose(2, 3).reshape(1, dim, *new_grid)
    return map_to_tokens(x).to(table.dtype)


def sincos_1d_table(dim: int, length: int) -> Tensor:
    """VideoMAE's fixed table (length, dim) over tokens 0..length-1: angle = pos / 10000^(2 * (j // 2) / dim),
    sin on the even channels and cos on the odd ones (interleaved), in float64, then cast to float32."""
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = torch.arange(length, dtype=torch.float64)[:, None] / torch.pow(10000.0, exponent)
    table = torch.empty_like(angles)
    table[:, 0::2], table[:, 1::2] = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    return table.float()


def video_sincos_table(dim: int, grid: Grid, num_prefix_tokens: int) -> Tensor:
    """A video model's table (P + L, dim): VideoMAE's 1-D sin-cos table over the L tokens of `grid` (in
    (time, row, column) order), after a zero row per prefix token, as the MAE's cls row."""
    return torch.cat([torch.zeros(num_prefix_tokens, dim), sincos_1d_table(dim, num_tokens(grid))])


def separable_table(spatial: Tensor, temporal: Tensor, built_grid: Grid, grid: Grid) -> Tensor:
    """MAE-ST's table (1, L, D) on a (T, H, W) grid: each token's spatial row (a (1, H*W, D) table) plus its
    time slice's row (a (1, T, D) table), both made for `built_grid` and resampled to `grid`."""
    t, h, w = grid
    spatial = resample_table(spatial, built_grid[1:], (h, w))
    temporal = resample_table(temporal, built_grid[:1], (t,))
    return (temporal[:, :, None] + spatial[:, None]).flatten(1, 2)


def position_table(table: Tensor, kind: str, resize: str, built_grid: Grid, grid: Grid) -> Tensor:
    """The position table (1, 1 + L, D) for `grid`: as built; else a fixed sin-cos table recomputed
    exactly (`resize="recompute"`), and any other table interpolated bicubically."""
    if tuple(grid) == tuple(built_grid):
        return table
    if kind == "sincos" and resize == "recompute":
        return sincos_pos_embed(table.shape[-1], grid)[None].to(table.device, table.dtype)
    return resize_pos_embed(table, built_grid, grid)


def _x(sizes: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in sizes)

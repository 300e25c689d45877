"""The Vision Transformer encoder: patch embedding, pre-norm blocks with SDPA attention, sin-cos tables.

Parameter names match the official MAE release and timm (`patch_embed.proj`, `blocks.N.attn.qkv`, ...),
so weights move between them without renaming.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from timm.layers import DropPath

from ..config import to_2tuple


def sincos_pos_embed(dim: int, grid_size: tuple[int, int], cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos table (1 + L, dim), official convention: first half of the channels encodes the
    column index, second half the row index; each half is [sin, cos]. A zero row leads for the cls slot."""
    gh, gw = grid_size
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


def resize_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Bicubic interpolation of a learned table (1, 1 + L, D) to another patch grid; the cls row is kept."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    cls_row, grid = pos_embed[:, :1], pos_embed[:, 1:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([cls_row, grid], dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, L, D), patches row-major


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, head_dim)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))

    def attention_probs(self, x: Tensor) -> Tensor:
        """Softmax attention weights (N, heads, L, L): for pictures, not for training."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """Official MAE initialisation for Linear and LayerNorm layers (apply with `Module.apply`)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """ViT encoder with a cls token and a (1, 1 + L, D) position table.

    The table is fixed sin-cos (no gradient) unless loaded weights made it learned; inputs at another
    resolution get a freshly computed sin-cos table, or a bicubically interpolated learned one.
    """

    def __init__(self, img_size: tuple[int, int] | int, patch_size: int, in_chans: int, embed_dim: int,
                 depth: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, drop_path_rate: float = 0.0):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = (to_2tuple(img_size)[0] // patch_size, to_2tuple(img_size)[1] // patch_size)
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, self.grid_size)[None], requires_grad=False)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_eps, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def init_encoder_weights(self) -> None:
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        self.pos_embed.data.copy_(sincos_pos_embed(self.embed_dim, self.grid_size)[None])

    def grid_of(self, images: Tensor) -> tuple[int, int]:
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        return (h // p, w // p)

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        return position_table(self.pos_embed, self.grid_size, grid)

    def embed_patches(self, images: Tensor) -> Tensor:
        """Patch tokens plus their position embedding, without the cls token: (N, L, D)."""
        pos = self.pos_embed_for(self.grid_of(images))
        return self.patch_embed(images) + pos[:, 1:]

    def prepend_cls(self, tokens: Tensor) -> Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward_blocks(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def encode(self, images: Tensor) -> Tensor:
        """All tokens, no masking, original patch order, cls first, after the final norm: (N, 1 + L, D)."""
        return self.norm(self.forward_blocks(self.prepend_cls(self.embed_patches(images))))


def position_table(table: Tensor, built_grid: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """The position table for `grid`: as built, recomputed exactly if fixed, interpolated if learned."""
    if tuple(grid) == tuple(built_grid):
        return table
    if table.requires_grad:
        return resize_pos_embed(table, built_grid, grid)
    return sincos_pos_embed(table.shape[-1], grid)[None].to(table.device, table.dtype)

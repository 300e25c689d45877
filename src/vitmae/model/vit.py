"""The Vision Transformer encoder: patch embedding, pre-norm blocks with SDPA attention, sin-cos tables.

Parameter names match the official MAE release and timm (`patch_embed.proj`, `blocks.N.attn.qkv`, ...),
so weights move between them without renaming. The encoder is a component: the masked autoencoder, the
classifier and the dense-task backbones hold one; files keep the flat names through the adapter in
flat_names.

The same encoder takes video (N, C, T, H, W) when its config has `num_frames`: a Conv3d cuts t x p x p
tubelets, and the same blocks follow. VideoMAE's attention has query and value biases but no key bias
(`k_bias=False`: the parameters `attn.q_bias`, `attn.v_bias`, as VideoMAE names them).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .flat_names import flat_named_parameters
from .grid import Grid, Patching, map_to_tokens, tokens_to_map
from .positions import OwnsPositionTable


class PatchEmbed(nn.Module):
    """Non-overlapping patches (an int p: p x p, Conv2d) or tubelets ((t, p, p): Conv3d) to tokens."""

    def __init__(self, patch_size: int | tuple[int, ...], in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        size = Patching(patch_size).size
        conv = nn.Conv2d if len(size) == 2 else nn.Conv3d
        self.proj = conv(in_chans, embed_dim, kernel_size=size, stride=size)

    def forward(self, x: Tensor) -> Tensor:
        return map_to_tokens(self.proj(x))  # (N, L, D), patches row-major over the grid


class Attention(nn.Module):
    """Multi-head self-attention. `qkv_bias` with `k_bias=False` is VideoMAE's: query and value biases
    (`q_bias`, `v_bias`), none for the key (it would cancel in the softmax anyway)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, k_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and k_bias)
        if qkv_bias and not k_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n, length, dim = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(n, length, 3, self.num_heads, dim // self.num_heads)
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
                 norm_eps: float = 1e-6, drop_path: float = 0.0, k_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, k_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BlockCheckpointing:
    """Activation checkpointing of a stack of blocks, switched with timm's `set_grad_checkpointing`: when
    on, a block run with gradients keeps only its input, and its activations are recomputed in backward
    (the same dropout and drop-path draws replayed), trading about a third more compute for memory."""

    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_block(self, block: nn.Module, x: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)


def init_weights(module: nn.Module) -> None:
    """Official MAE initialisation for Linear and LayerNorm layers (apply with `Module.apply`)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(OwnsPositionTable, BlockCheckpointing, nn.Module):
    """ViT encoder with a cls token (unless `config.cls_token` is off, as VideoMAE's) and a position
    table (positions.OwnsPositionTable), initialised as the official MAE.

    `pos_embed_kind` says what the table is: "sincos" (fixed, no gradient: pre-training) or "learned"
    (`learn_pos_embed`: fine-tuning trains it). At another input size a sin-cos table is recomputed
    exactly, or interpolated when `config.pos_embed_resize == "interpolate"`; a learned table is always
    interpolated. Freezing the encoder does not change its kind. `set_grad_checkpointing()` recomputes
    each block's activations in backward (see BlockCheckpointing). Tokens are (N, P + L, D): P prefix
    tokens (the cls token, or none), then the patch tokens.
    """

    def __init__(self, config: ModelConfig, drop_path_rate: float = 0.0):
        super().__init__()
        c = self.config = config
        self.patch_size, self.grid_size, self.embed_dim = c.patch_size, c.grid_size, c.embed_dim
        self.patching = c.patching
        self.num_prefix_tokens = c.num_prefix_tokens
        self.patch_embed = PatchEmbed(self.patching.size if c.is_video else c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.cls_token else None
        self.init_position_table(c, c.embed_dim, "pos_embed")
        rates = [drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.norm_eps, rate, c.k_bias) for rate in rates
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.encoder_norm else nn.Identity()
        self.apply(init_weights)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def grid_of(self, images: Tensor) -> Grid:
        return self.patching.grid_of(images)

    def pos_embed_for(self, grid: Grid) -> Tensor:
        """The position table (1, P + L, D) for the token grid `grid`."""
        return self.position_table_for(grid)

    def embed_patches(self, images: Tensor) -> Tensor:
        """Patch tokens plus their position embedding, without the cls token: (N, L, D)."""
        pos = self.pos_embed_for(self.grid_of(images))
        return self.patch_embed(images) + pos[:, self.num_prefix_tokens:]

    def prepend_cls(self, tokens: Tensor) -> Tensor:
        """The cls token (with its position) before `tokens`; `tokens` as they are without one."""
        if self.cls_token is None:
            return tokens
        cls = (self.cls_token + self.prefix_positions()).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward_tokens(self, patch_tokens: Tensor) -> Tensor:
        """cls + the given (embedded, possibly masked) patch tokens through the blocks and the final norm."""
        x = self.prepend_cls(patch_tokens)
        for block in self.blocks:
            x = self.run_block(block, x)
        return self.norm(x)

    def encode(self, images: Tensor) -> Tensor:
        """All tokens, no masking, original patch order, cls first, after the final norm: (N, P + L, D)."""
        return self.forward_tokens(self.embed_patches(images))

    forward = encode

    def forward_intermediates(self, images: Tensor, indices: int | list[int] | tuple[int, ...] | None = None,
                              norm: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              return_prefix_tokens: bool = False, stop_early: bool = False
                              ) -> list[Any] | tuple[Tensor, list[Any]]:
        """Outputs of chosen blocks, with timm's meaning of the arguments: `indices` an int n takes the
        last n blocks, a sequence takes those block indices (negative ones count from the end), None all.
        Each intermediate is the patch tokens as a (N, D, *grid) map ("NCHW": (N, D, H/p, W/p) for an
        image, (N, D, T/t, H/p, W/p) for a clip) or (N, L, D) ("NLC"), with the final norm applied when
        `norm`; with `return_prefix_tokens` a (patches, prefix (N, P, D)) pair. Returns the list, or (the
        final normed tokens (N, P + L, D), the list)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', not {output_fmt!r}")
        take = self.take_indices(indices)
        grid = self.grid_of(images)
        x = self.prepend_cls(self.embed_patches(images))
        blocks = self.blocks[:max(take) + 1] if stop_early or intermediates_only else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = self.run_block(block, x)
            if i in take:
                out = self.norm(x) if norm else x
                prefix, patches = out[:, :self.num_prefix_tokens], out[:, self.num_prefix_tokens:]
                if output_fmt == "NCHW":
                    patches = tokens_to_map(patches, grid)
                intermediates.append((patches, prefix) if return_prefix_tokens else patches)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def take_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        """Block indices as timm's `feature_take_indices`: an int n means the last n blocks."""
        depth = len(self.blocks)
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int):
            if not 0 < indices <= depth:
                raise ValueError(f"cannot take the last {indices} of {depth} blocks")
            return list(range(depth - indices, depth))
        taken = [i + depth if i < 0 else i for i in indices]
        if not all(0 <= i < depth for i in taken):
            raise ValueError(f"block indices {list(indices)} are outside 0..{depth - 1}")
        return taken


def vit_layer_id(name: str, num_layers: int) -> int:
    """The official `get_layer_id_for_vit` on flat names: patch_embed, cls_token, the position tables
    (pos_embed, MAE-ST's pos_embed_*) -> 0; block i -> i + 1; anything else (norms, heads) -> num_layers
    (depth + 1), trained at the full rate."""
    if name == "cls_token" or name.startswith(("patch_embed", "pos_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups(model: nn.Module, weight_decay: float, layer_id: Callable[[str], int] | None = None,
                 layer_decay: float = 1.0, num_layers: int = 0, no_decay: Collection[str] = ()) -> list[dict]:
    """Optimizer groups of the official recipes: no weight decay on biases, 1-D parameters (norms) and the
    parameters named in `no_decay` (flat state-dict names); frozen parameters are left out. With
    `layer_id`, each group also gets `lr_scale = layer_decay ** (num_layers - id)` (layer-wise lr decay)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in flat_named_parameters(model):
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(".bias") or name in no_decay
        layer = layer_id(name) if layer_id else num_layers
        group = groups.setdefault((layer, exempt), {
            "params": [], "weight_decay": 0.0 if exempt else weight_decay,
            "lr_scale": layer_decay ** (num_layers - layer),
        })
        group["params"].append(param)
    return list(groups.values())

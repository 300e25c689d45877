"""Which patches the encoder sees.

Every strategy is expressed as per-sample `noise` (N, L) with the official / Hugging Face meaning: the
patches with the smallest noise are kept. `mask_from_noise` then does what the paper says, for all of them.

How many are kept follows each method's own rule (`num_kept_for`): int(L * (1 - ratio)) for the image MAE
and MAE-ST's random masking (156 of 1,568 tokens at 0.9); VideoMAE's tube masking removes int(ratio * S)
of the S positions of a time slice and keeps the rest in every slice (20 x 8 = 160 of 1,568 at 0.9).
A mask given from outside (transformers' `bool_masked_pos`) is reproduced by `noise_from_mask` (with the
count of the method that drew it) or, whatever its count, by `masking_from_mask`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import ConfigError
from .grid import Grid, num_tokens

STRATEGIES = ("random", "block", "grid")
VIDEO_STRATEGIES = ("tube", "random")


class Masking(NamedTuple):
    ids_keep: Tensor  # (N, len_keep) indices of the visible patches, in shuffled order
    ids_restore: Tensor  # (N, L) argsort of the shuffle: puts shuffled tokens back in patch order
    mask: Tensor  # (N, L) 1 = removed, 0 = visible, in the original patch order


def num_kept(num_patches: int, mask_ratio: float) -> int:
    return int(num_patches * (1 - mask_ratio))


def num_kept_for(strategy: str, grid: Grid, mask_ratio: float) -> int:
    """Tokens a `strategy` keeps visible on `grid` (VideoMAE's rule for tube masking, else the MAE's)."""
    if strategy == "tube":
        per_slice = num_tokens(grid[1:])
        return grid[0] * (per_slice - int(mask_ratio * per_slice))
    return num_kept(num_tokens(grid), mask_ratio)


def mask_from_noise(noise: Tensor, mask_ratio: float, len_keep: int | None = None) -> Masking:
    """The `len_keep` tokens of lowest noise kept (default: the MAE's count for `mask_ratio`)."""
    n, length = noise.shape
    len_keep = num_kept(length, mask_ratio) if len_keep is None else len_keep
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(n, length, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :len_keep], ids_restore, mask)


def masking_from_mask(mask: Tensor) -> Masking:
    """The masking that removes exactly the tokens where `mask` (N, L) is true, as transformers'
    `bool_masked_pos`: every sample must remove as many. The visible tokens keep their token order, as
    transformers keeps them, and no random number is drawn."""
    n, length = mask.shape
    removed = mask.sum(dim=1)
    if n and not bool((removed == removed[0]).all()):
        raise ValueError(f"a mask must remove as many tokens in every sample, not {sorted(set(removed.tolist()))}")
    rank = torch.arange(length, device=mask.device) / (2 * length)  # in [0, 0.5): token order within each side
    return mask_from_noise(mask.float() + rank, 0.0, length - int(removed[0]) if n else length)


def random_noise(n: int, grid: Grid, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    return torch.rand(n, num_tokens(grid), generator=generator, device=device)


def noise_from_mask(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Noise that removes exactly the patches where `mask` (N, L) is 1, visible ones in random order."""
    return mask.float() + 0.5 * torch.rand(mask.shape, generator=generator, device=mask.device)


def tube_noise(n: int, grid: Grid, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """VideoMAE's tube masking on a (T, H, W) grid: one noise value per spatial position, the same in every
    time slice, so the kept (and removed) positions are the same in every slice."""
    if len(grid) != 3:
        raise ConfigError(f"tube masking is defined on a video's (time, row, column) grid, not on a "
                          f"{len(grid)}-D one")
    spatial = torch.rand(n, 1, num_tokens(grid[1:]), generator=generator, device=device)
    return spatial.expand(-1, grid[0], -1).flatten(1)


def block_noise(n: int, grid: Grid, mask_ratio: float, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Block-wise masking (BEiT): removes rectangles of random size and aspect until the ratio is met."""
    gh, gw = planar(grid, "block")
    target = gh * gw - num_kept(gh * gw, mask_ratio)
    masks = torch.zeros(n, gh, gw)
    for i in range(n):
        while int(masks[i].sum()) < target:
            left = target - int(masks[i].sum())
            area = int(torch.randint(min(16, left), max(min(16, left), left) + 1, (1,), generator=generator))
            log_aspect = (torch.rand(1, generator=generator) * 2 - 1) * torch.log(torch.tensor(3.0))
            aspect = float(torch.exp(log_aspect))
            h = max(1, min(gh, round((area * aspect) ** 0.5)))
            w = max(1, min(gw, round((area / aspect) ** 0.5)))
            top = int(torch.randint(0, gh - h + 1, (1,), generator=generator))
            lft = int(torch.randint(0, gw - w + 1, (1,), generator=generator))
            masks[i, top:top + h, lft:lft + w] = 1
    # Blocks overshoot the target: the extra patches become visible again through the noise ranking,
    # where a block patch is preferred for removal over a never-masked one.
    return noise_from_mask(masks.flatten(1), generator).to(device)


def grid_noise(n: int, grid: Grid, mask_ratio: float, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """Regular grid masking (the paper's 'grid' ablation): keep one patch in every s x s cell, with s
    chosen from the ratio (0.75 -> 2x2) and a random offset per sample."""
    step = max(1, round((1 / max(1e-6, 1 - mask_ratio)) ** 0.5))
    gh, gw = planar(grid, "grid")
    rows = torch.arange(gh).view(gh, 1)
    cols = torch.arange(gw).view(1, gw)
    offsets = torch.randint(0, step, (n, 2), generator=generator)
    keep = ((rows[None] - offsets[:, 0, None, None]) % step == 0) & ((cols[None] - offsets[:, 1, None, None]) % step == 0)
    return noise_from_mask((~keep).flatten(1).float(), generator).to(device)


def planar(grid: Grid, strategy: str) -> tuple[int, int]:
    """The (rows, columns) of a 2-D patch grid; the image masks' shapes mean nothing on another grid."""
    if len(grid) != 2:
        raise ConfigError(f"{strategy} masking is defined on a 2-D patch grid (images), not on a "
                          f"{len(grid)}-D one")
    return grid[0], grid[1]


def make_noise(strategy: str, n: int, grid: Grid, mask_ratio: float,
               generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    if strategy == "random":
        return random_noise(n, grid, generator, device)
    if strategy == "block":
        return block_noise(n, grid, mask_ratio, generator, device)
    if strategy == "grid":
        return grid_noise(n, grid, mask_ratio, generator, device)
    if strategy == "tube":
        return tube_noise(n, grid, generator, device)
    raise ConfigError(f"unknown masking strategy {strategy!r}; choose from: {', '.join(STRATEGIES + ('tube',))}")

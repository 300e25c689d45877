"""The token grid seam: patches, token maps, tables and noise on 2-D (image) and 3-D (video) grids."""
import numpy as np
import pytest
import torch

from vitmae.errors import ConfigError
from vitmae.model import Patching, make_noise, mask_from_noise, sincos_pos_embed
from vitmae.model.grid import map_to_tokens, num_tokens, position_table, resize_pos_embed, tokens_to_map
from vitmae.model.masking import random_noise


def official_sincos(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """The official release's numpy recipe (meshgrid(w, h); the first half encodes w), with a cls row."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    table = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], axis=0)


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (14, 14)])
def test_sincos_table_follows_official_convention(grid):
    ours = sincos_pos_embed(64, grid).numpy()
    np.testing.assert_allclose(ours, official_sincos(64, *grid), atol=1e-6)


def test_an_int_is_the_square_image_patch():
    assert Patching(16) == Patching((16, 16)) and Patching(16).ndim == 2
    assert Patching((2, 16, 16)).ndim == 3 and Patching((2, 16, 16)).values(3) == 1536
    with pytest.raises(ValueError, match="positive"):
        Patching((2, 0, 16))


def test_image_patches_follow_the_official_einsum():
    images = torch.randn(2, 5, 24, 40)
    p = 8
    official = torch.einsum("nchpwq->nhwpqc", images.reshape(2, 5, 3, p, 5, p)).reshape(2, 15, p * p * 5)
    patching = Patching(p)
    assert patching.grid_of(images) == (3, 5)
    assert torch.equal(patching.patchify(images), official)
    assert torch.equal(patching.unpatchify(official, (3, 5)), images)


def test_video_tubelets_run_time_row_column_channel():
    """VideoMAE's order: tokens (T/t, H/p, W/p) row-major; a tubelet's values (time, row, column,
    channel)."""
    clips = torch.randn(2, 3, 4, 8, 12)  # (N, C, T, H, W)
    patching = Patching((2, 4, 4))
    grid = patching.grid_of(clips)
    assert grid == (2, 2, 3) and num_tokens(grid) == 12
    patches = patching.patchify(clips)
    assert patches.shape == (2, 12, 2 * 4 * 4 * 3)
    t, h, w = 1, 0, 2  # token (time slice 1, row 0, column 2)
    token = t * 2 * 3 + h * 3 + w
    expected = clips[1, :, 2 * t:2 * t + 2, 4 * h:4 * h + 4, 4 * w:4 * w + 4].permute(1, 2, 3, 0).reshape(-1)
    assert torch.equal(patches[1, token], expected)
    assert torch.equal(patching.unpatchify(patches, grid), clips)


def test_a_conv3d_embedding_lists_its_tokens_in_patch_order():
    """A Conv3d patch embedding's map, as tokens, is the linear map of `patchify`'s vectors: the token
    order of the grid and the value order of a tubelet agree with the convolution's."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 8, kernel_size=(2, 4, 4), stride=(2, 4, 4), dtype=torch.float64)
    clips = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    tokens = map_to_tokens(conv(clips))
    weight = conv.weight.permute(0, 2, 3, 4, 1).reshape(8, -1)  # (D, time, row, column, channel)
    assert torch.allclose(tokens, Patching((2, 4, 4)).patchify(clips) @ weight.T + conv.bias, atol=1e-12)
    assert torch.equal(tokens_to_map(tokens, (2, 2, 2)), conv(clips))


def test_spread_paints_each_token_over_its_patch():
    patching = Patching((2, 4, 4))
    values = torch.arange(12.0).reshape(1, 12)
    painted = patching.spread(values, (2, 2, 3))
    assert painted.shape == (1, 1, 4, 8, 12)
    assert torch.equal(patching.patchify(painted)[0], values[0, :, None].expand(-1, 32))
    image_mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert torch.equal(Patching(2).spread(image_mask, (2, 2))[0, 0],
                       torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32))


def test_an_input_the_patches_do_not_tile_is_a_clear_error():
    with pytest.raises(ValueError, match="input size 5x8x8 is not divisible by the patch size 2x4x4"):
        Patching((2, 4, 4)).grid_of(torch.zeros(1, 3, 5, 8, 8))
    with pytest.raises(ValueError, match="12 patches do not tile"):
        Patching((2, 4, 4)).unpatchify(torch.zeros(1, 12, 96), (2, 2, 2))


def test_noise_on_a_video_grid_keeps_the_image_semantics():
    """One value per token of the whole grid, drawn as for an image; the smallest are kept."""
    grid = (2, 3, 4)
    noise = random_noise(3, grid, torch.Generator().manual_seed(5))
    assert torch.equal(noise, torch.rand(3, 24, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(make_noise("random", 3, grid, 0.75, torch.Generator().manual_seed(5)), noise)
    masking = mask_from_noise(noise, 0.75)
    assert torch.equal(masking.ids_keep.sort(1).values, noise.topk(6, dim=1, largest=False).indices.sort(1).values)


@pytest.mark.parametrize("strategy", ["block", "grid"])
def test_image_mask_shapes_refuse_a_video_grid(strategy):
    with pytest.raises(ConfigError, match=f"{strategy} masking is defined on a 2-D patch grid"):
        make_noise(strategy, 2, (2, 4, 4), 0.75)


def test_position_tables_are_two_dimensional_until_a_video_model_brings_its_own():
    with pytest.raises(ValueError, match="2-D patch grid"):
        sincos_pos_embed(64, (2, 4, 4))
    table = torch.randn(1, 33, 64)
    with pytest.raises(ValueError, match="2-D patch grids only"):
        resize_pos_embed(table, (2, 4, 4), (4, 4, 4))
    assert position_table(table, "learned", "interpolate", (2, 4, 4), (2, 4, 4)) is table


def test_token_maps_round_trip():
    tokens = torch.randn(2, 24, 8)
    for grid in [(4, 6), (2, 3, 4)]:
        feature_map = tokens_to_map(tokens, grid)
        assert feature_map.shape == (2, 8, *grid)
        assert torch.equal(map_to_tokens(feature_map), tokens)

"""The feature pyramids hold to their one contract: `output_shape()` says the channels and the stride (input
pixels per cell) of each map `forward` gives; mmseg's pyramid has its levels at 4-32 px per cell whatever
the patch size."""
from __future__ import annotations

import pytest
import torch

from vitmae.model import ModelConfig, ViTEncoder
from vitmae.model.detection import ViTDetBackbone
from vitmae.model.necks import FeaturePyramid, ShapeSpec, SimpleFeaturePyramid


@pytest.mark.parametrize("patch_size, size", [(4, (32, 32)), (8, (32, 48)), (16, (64, 32)), (4, (28, 20))])
def test_pyramid_levels_are_4_8_16_32_pixels_per_cell(patch_size, size):
    torch.manual_seed(0)
    pyramid = FeaturePyramid(32, patch_size).eval()
    grid = (size[0] // patch_size, size[1] // patch_size)
    levels = pyramid([torch.randn(2, 32, *grid) for _ in range(4)])
    for level, stride in zip(levels, (4, 8, 16, 32)):
        expected = tuple(max(1, -(-s // stride)) for s in size)  # ceil: a partial cell counts
        assert tuple(level.shape[-2:]) == expected
    assert [level.shape[1] for level in levels] == pyramid.channels
    assert pyramid.channels[-2:] == [32, 32] and pyramid.channels[0] <= pyramid.channels[1] <= 32


@pytest.mark.parametrize("patch_size", [4, 8, 16])
def test_each_pyramid_gives_the_maps_its_output_shape_says(patch_size):
    torch.manual_seed(0)
    size = (128, 64)  # every stride tiles it
    grid = (size[0] // patch_size, size[1] // patch_size)
    images = torch.zeros(1, 1, *size)
    mmseg = FeaturePyramid(32, patch_size).eval()
    simple = SimpleFeaturePyramid(32, patch_size, out_channels=8).eval()
    levels = mmseg([torch.randn(1, 32, *grid) for _ in range(4)])
    for maps, pyramid in ((list(zip(mmseg.output_shape(), levels)), mmseg),
                          (list(simple(torch.randn(1, 32, *grid)).items()), simple)):
        shapes = pyramid.output_shape()
        assert {n: ShapeSpec(m.shape[1], size[0] // m.shape[2]) for n, m in maps} == shapes
        assert all(size[1] // m.shape[3] == shapes[n].stride for n, m in maps)
    assert [s.stride for s in mmseg.output_shape().values()] == [4, 8, 16, 32]
    assert list(simple.output_shape()) == ["0", "1", "2", "3", "pool"]
    # the detector's backbone says what its pyramid says, and torchvision reads its width from it
    encoder = ViTEncoder(ModelConfig(img_size=size, patch_size=patch_size, in_chans=1, embed_dim=32, depth=1,
                                     num_heads=2))
    backbone = ViTDetBackbone(encoder, out_channels=8).eval()
    with torch.no_grad():
        maps = backbone(images)
    assert {n: ShapeSpec(m.shape[1], size[0] // m.shape[2]) for n, m in maps.items()} == backbone.output_shape()
    assert backbone.out_channels == 8 and backbone.size_divisible == 4 * patch_size

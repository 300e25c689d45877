"""The ViTDet backbone: pyramid strides and widths at any input shape, window attention, the detectors."""
from __future__ import annotations

import pytest
import torch

from vitmae.model import ModelConfig, ViTEncoder
from vitmae.model.detection import (ViTDetBackbone, build_detector, default_global_blocks, detector_param_groups,
                                    window_partition, window_unpartition)
from tests.model.checkpointing import assert_checkpointing_keeps_the_gradients

CONFIG = ModelConfig(img_size=(32, 32), patch_size=8, in_chans=3, embed_dim=32, depth=4, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def encoder(config: ModelConfig = CONFIG) -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(config).eval()


def test_default_global_blocks_are_evenly_spaced():
    assert default_global_blocks(12) == [2, 5, 8, 11]
    assert default_global_blocks(24) == [5, 11, 17, 23]
    assert default_global_blocks(2) == [0, 1]


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (40, 24)])
@pytest.mark.parametrize("patch", [8, 16])
def test_pyramid_strides_and_channels(size, patch):
    config = CONFIG.replace(patch_size=patch, img_size=(64, 64))
    backbone = ViTDetBackbone(encoder(config), window_size=2).eval()
    assert backbone.strides == (patch // 4, patch // 2, patch, 2 * patch, 4 * patch)
    h, w = size[0] // patch * patch, size[1] // patch * patch  # the encoder takes multiples of the patch
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, h, w))
    assert list(maps) == ["0", "1", "2", "3", "pool"] and backbone.out_channels == 256
    gh, gw = h // patch, w // patch
    expected = [(gh * 4, gw * 4), (gh * 2, gw * 2), (gh, gw), ((gh + 1) // 2, (gw + 1) // 2)]
    expected.append(((expected[-1][0] + 1) // 2, (expected[-1][1] + 1) // 2))  # max-pool kernel 1, stride 2
    for (name, fmap), shape in zip(maps.items(), expected):
        assert fmap.shape == (2, 256, *shape), name


def test_window_partition_round_trips_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, (2, 3))
    assert padded == (6, 9) and windows.shape == (2 * 3 * 3, 6, 3)
    assert torch.equal(window_unpartition(windows, (2, 3), padded, (5, 7)), x)


def test_window_covering_the_grid_equals_global_attention():
    images = torch.randn(2, 3, 32, 48)  # a 4 x 6 grid
    windowed = ViTDetBackbone(encoder(), window_size=6, global_blocks=[]).eval()
    global_ = ViTDetBackbone(encoder(), window_size=6, global_blocks=[0, 1, 2, 3]).eval()
    global_.load_state_dict(windowed.state_dict())
    small = ViTDetBackbone(encoder(), window_size=2, global_blocks=[]).eval()
    small.load_state_dict(windowed.state_dict())
    with torch.no_grad():
        a, b, c = windowed.blocks_forward(images), global_.blocks_forward(images), small.blocks_forward(images)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c, atol=1e-3)  # smaller windows do change the result


# Proposal and detection counts for 32-px images (torchvision's defaults are for 800-px ones).
SMALL = dict(rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
             rpn_post_nms_top_n_test=50, box_batch_size_per_image=64, box_detections_per_img=20)


@pytest.mark.parametrize("masks", [False, True])
def test_detector_trains_and_predicts(masks):
    torch.manual_seed(0)
    backbone = ViTDetBackbone(encoder(CONFIG.replace(patch_size=4)), window_size=4, drop_path=0.1)
    model = build_detector(backbone, 2, masks, (32, 48), (0.5,) * 3, (0.25,) * 3, **SMALL)
    images = [torch.rand(3, 32, 48), torch.rand(3, 32, 48)]
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 16.0]]), "labels": torch.tensor([1])}
    if masks:
        mask = torch.zeros(1, 32, 48, dtype=torch.uint8)
        mask[:, 4:16, 4:20] = 1
        target["masks"] = mask
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    if masks:
        empty["masks"] = torch.zeros(0, 32, 48, dtype=torch.uint8)
    losses = model.train()(images, [target, empty])
    assert ("loss_mask" in losses) == masks and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert backbone.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert backbone.encoder.cls_token.grad is None  # unused by ViTDet, frozen
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "labels", "scores"} | ({"masks"} if masks else set())


def test_param_groups_decay_by_layer_and_spare_norms():
    backbone = ViTDetBackbone(encoder(), window_size=2)
    model = build_detector(backbone, 2, False, (32, 32), (0.5,) * 3, (0.25,) * 3)
    groups = detector_param_groups(model, 0.1, 0.7)
    by_param = {id(p): g for g in groups for p in g["params"]}
    depth = len(backbone.encoder.blocks)
    patch = by_param[id(backbone.encoder.patch_embed.proj.weight)]
    assert patch["lr_scale"] == pytest.approx(0.7 ** (depth + 1)) and patch["weight_decay"] == 0.1
    assert by_param[id(backbone.encoder.blocks[1].attn.qkv.weight)]["lr_scale"] == pytest.approx(0.7 ** (depth - 1))
    assert by_param[id(backbone.encoder.blocks[1].norm1.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.roi_heads.box_predictor.cls_score.weight)]["lr_scale"] == 1.0
    assert id(backbone.encoder.cls_token) not in by_param  # frozen: not optimised


def test_grad_checkpointing_of_windowed_and_global_blocks_keeps_the_gradients():
    backbone = ViTDetBackbone(encoder().train(), window_size=2, global_blocks=[1, 3], drop_path=0.2)
    images = torch.randn(2, 3, 32, 48)
    assert_checkpointing_keeps_the_gradients(backbone, lambda m: sum(x.square().mean() for x in m(images).values()))
    assert backbone.encoder.grad_checkpointing

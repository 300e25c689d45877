import math

import pytest
import torch

from vitmae.config import PRESETS, ModelConfig, model_config
from vitmae.model import MaskedAutoencoder, create_model, make_noise, mask_from_noise, sincos_pos_embed
from tests.model.checkpointing import assert_checkpointing_keeps_the_gradients


def tiny_config(**overrides) -> ModelConfig:
    base = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize("img_size,chans", [((32, 32), 3), ((24, 40), 1), ((16, 32), 5)])
def test_patchify_round_trip_and_layout(img_size, chans):
    model = MaskedAutoencoder(tiny_config(img_size=img_size, in_chans=chans))
    images = torch.randn(2, chans, *img_size)
    patches = model.patchify(images)
    p = 8
    assert patches.shape == (2, (img_size[0] // p) * (img_size[1] // p), p * p * chans)
    # Patch 1 is the second patch of the first row; its values run (row, col, channel).
    expected = images[0, :, 0:p, p:2 * p].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 1], expected)
    assert torch.equal(model.unpatchify(patches), images)


def test_masking_invariants():
    noise = torch.rand(5, 49)
    for ratio in (0.0, 0.5, 0.75, 0.9):
        ids_keep, ids_restore, mask = mask_from_noise(noise, ratio)
        keep = int(49 * (1 - ratio))
        assert ids_keep.shape == (5, keep)
        assert torch.equal(mask.sum(1), torch.full((5,), 49.0 - keep))
        shuffle = torch.argsort(noise, dim=1)
        assert torch.equal(torch.gather(shuffle, 1, ids_restore), torch.arange(49).expand(5, -1))
        # The kept patches are exactly the ones with the smallest noise.
        assert torch.equal(mask.gather(1, ids_keep), torch.zeros(5, keep))
        smallest = noise.topk(keep, dim=1, largest=False).indices
        assert torch.equal(ids_keep.sort(1).values, smallest.sort(1).values)
    assert mask_from_noise(noise, 0.0).mask.sum() == 0


@pytest.mark.parametrize("strategy", ["random", "block", "grid"])
def test_masking_strategies_remove_the_requested_share(strategy):
    g = torch.Generator().manual_seed(0)
    noise = make_noise(strategy, 4, (8, 8), 0.75, generator=g)
    mask = mask_from_noise(noise, 0.75).mask
    assert torch.equal(mask.sum(1), torch.full((4,), 48.0))
    if strategy == "grid":  # one visible patch in every 2x2 cell
        cells = mask.view(4, 4, 2, 4, 2).sum(dim=(2, 4))
        assert torch.equal(cells, torch.full((4, 4, 4), 3.0))
    if strategy == "block":  # blocks: masked patches mostly have masked neighbours
        m = mask.view(4, 8, 8)
        neighbours = m[:, 1:, :] * m[:, :-1, :]
        assert neighbours.sum() > 0.5 * m[:, 1:, :].sum()


def test_forward_shapes_loss_and_noise_semantics():
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny_config(norm_pix_loss=False)).eval()
    images = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 16)
    out = model(images, noise=noise)
    assert out.pred.shape == (3, 16, 8 * 8 * 3) and out.mask.shape == (3, 16)
    assert torch.equal(out.mask, mask_from_noise(noise, 0.75).mask)
    again = model(images, noise=noise)
    assert torch.equal(out.pred, again.pred) and out.loss == again.loss
    per_patch = ((out.pred - model.patchify(images)) ** 2).mean(-1)
    assert torch.allclose(out.loss, (per_patch * out.mask).sum() / out.mask.sum())


def test_loss_ignores_visible_patches():
    model = MaskedAutoencoder(tiny_config())
    images = torch.randn(2, 3, 32, 32)
    out = model(images)
    pred = out.pred.detach().requires_grad_(True)
    model.forward_loss(images, pred, out.mask).backward()
    visible = out.mask == 0
    assert pred.grad[visible].abs().sum() == 0
    assert pred.grad[~visible].abs().sum() > 0


def test_norm_pix_target_is_standardised_per_patch():
    model = MaskedAutoencoder(tiny_config(norm_pix_loss=True))
    target = model.target(torch.rand(2, 3, 32, 32) * 5 + 3)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 16), atol=1e-3)


def test_mask_ratio_zero_keeps_everything_and_scores_reconstruction():
    model = MaskedAutoencoder(tiny_config())
    out = model(torch.randn(2, 3, 32, 32), mask_ratio=0.0)
    assert out.mask.sum() == 0
    assert torch.isfinite(out.loss) and out.loss > 0


def test_encode_is_deterministic_in_original_order():
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny_config()).eval()
    images = torch.randn(2, 3, 32, 32)
    feats = model.encode(images)
    assert feats.shape == (2, 17, 64)
    assert torch.equal(feats, model.encode(images))
    # Encoding equals the masked path with nothing removed and the identity order.
    latent, masking = model.forward_encoder(images, 0.0, noise=torch.arange(16.0).expand(2, -1))
    assert torch.allclose(latent, feats, atol=1e-6)


def test_other_resolution_recomputes_sincos_exactly():
    model = MaskedAutoencoder(tiny_config())
    images = torch.randn(2, 3, 48, 64)
    out = model(images)
    assert out.pred.shape == (2, 48, 192)
    assert model.encode(images).shape == (2, 49, 64)
    assert torch.equal(model.encoder.pos_embed_for((6, 8))[0], sincos_pos_embed(64, (6, 8)))
    assert model.unpatchify(out.pred, (48, 64)).shape == (2, 3, 48, 64)


def test_learned_table_is_interpolated_bicubically():
    model = MaskedAutoencoder(tiny_config())
    model.encoder.pos_embed.data.normal_()
    model.encoder.learn_pos_embed()
    table = model.encoder.pos_embed_for((8, 8))
    assert table.shape == (1, 65, 64)
    assert torch.equal(table[:, 0], model.encoder.pos_embed[:, 0])
    grid = model.encoder.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    assert torch.allclose(table[0, 1:], expected.permute(0, 2, 3, 1).reshape(64, 64), atol=1e-6)


def test_indivisible_image_is_a_clear_error():
    model = MaskedAutoencoder(tiny_config())
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        model(torch.randn(1, 3, 30, 32))


def test_initialisation_follows_official_recipe():
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny_config(embed_dim=192, num_heads=3))
    w = model.encoder.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))  # xavier_uniform over the fused qkv matrix
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.all(model.encoder.blocks[0].attn.qkv.bias == 0)
    assert 0.015 < model.encoder.cls_token.std() < 0.025 and 0.015 < model.decoder.mask_token.std() < 0.025
    assert not model.encoder.pos_embed.requires_grad and not model.decoder.decoder_pos_embed.requires_grad


@pytest.mark.parametrize("name,encoder_millions", [
    ("mae_vit_tiny_patch16", 5.7), ("mae_vit_small_patch16", 22), ("mae_vit_base_patch16", 86),
    ("mae_vit_large_patch16", 304), ("mae_vit_huge_patch14", 632),
])
def test_presets_match_published_encoder_sizes(name, encoder_millions):
    with torch.device("meta"):
        model = create_model(name)
    encoder = sum(p.numel() for n, p in model.named_parameters()
                  if not n.startswith(("decoder", "mask_token")) and p.requires_grad)
    head = model.config.embed_dim * 1000 + 1000  # published counts include an ImageNet-1k classifier
    assert abs((encoder + head) / 1e6 - encoder_millions) / encoder_millions < 0.02
    assert model.config.decoder_embed_dim == 512 and model.config.decoder_depth == 8


def test_overrides_and_unknown_names():
    config = model_config("mae_vit_tiny_patch16", img_size=(64, 96), patch_size=8, in_chans=4)
    assert config.img_size == (64, 96) and config.grid_size == (8, 12)
    with pytest.raises(ValueError, match="unknown model option"):
        model_config("mae_vit_tiny_patch16", depht=3)
    with pytest.raises(ValueError, match="unknown model"):
        model_config("mae_vit_gigantic")
    assert set(PRESETS) >= {"mae_vit_base_patch16", "mae_vit_micro_patch4_28"}


def test_grad_checkpointing_of_encoder_and_decoder_keeps_the_gradients():
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny_config())
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert_checkpointing_keeps_the_gradients(model, lambda m: m(images, noise=noise).loss)
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing

"""The video family: registered, it builds video MAEs only, masks each micro-batch as the model's config
says (keyed by the step), shards and groups the parameters as the image MAE, says the target a run used,
and trains through the engine."""
from __future__ import annotations

import pytest
import torch

from vitmae.data.transforms import mix_seed
from vitmae.errors import ConfigError
from vitmae.families import family
from vitmae.families.video import objective, target_line, target_record
from vitmae.model import MaskedAutoencoder, ModelConfig, make_noise
from vitmae.data import Batch
from vitmae.train import Trainer
from vitmae.train.config import TrainOptions

CLIP = ModelConfig(num_frames=4, tubelet_size=2, img_size=16, patch_size=8, in_chans=1, embed_dim=32, depth=2,
                   num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.75,
                   norm_pix_loss=False)


class RandomClips(torch.utils.data.Dataset):
    """Clips (C, T, H, W) as a pre-training dataset gives them: (clip, -1, index)."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(index)), -1, index


def test_the_video_family_is_registered_and_builds_video_models_only():
    spec = family("video")
    model = spec.build_model(CLIP, "moving-fashion-mnist", seed=0)
    assert isinstance(model, MaskedAutoencoder) and model.config.is_video
    assert model.config.mean is not None and len(model.config.mean) == 1  # the normalisation recorded
    with pytest.raises(ConfigError, match="the video family trains video models"):
        spec.build_model(ModelConfig(), "fashion-mnist", seed=0)
    units = spec.shard_units(model)
    assert units == [*model.encoder.blocks, *model.decoder.decoder_blocks]
    groups = spec.param_groups(model, 0.05, 1.0)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.encoder.blocks[0].attn.q_bias) in no_decay
    assert id(model.encoder.blocks[0].attn.qkv.weight) not in no_decay


# a (2, 2, 2) grid at 0.75: tube removes int(0.75 * 4) of each slice's 4 positions, random keeps int(8 * 0.25)
@pytest.mark.parametrize("mask_type, removed", [("tube", 3 * 2), ("random", 8 - 2)])
def test_the_objective_masks_as_the_config_says_keyed_by_the_step(mask_type, removed):
    config = CLIP.replace(mask_type=mask_type)
    torch.manual_seed(0)
    model = MaskedAutoencoder(config).eval()
    clips = torch.randn(3, 1, 4, 16, 16)
    batch = Batch(clips, torch.full((3,), -1), torch.arange(3), [])
    loss = objective(config, seed=5, rank=1)
    generator = torch.Generator().manual_seed(mix_seed(5, 7, 0, 1))
    noise = make_noise(mask_type, 3, config.grid_size, 0.75, generator)
    with torch.no_grad():
        expected = model(clips, noise=noise, mask_type=mask_type)
        assert loss(model, batch, 7, 0) == expected.loss
        assert loss(model, batch, 8, 0) != expected.loss
    assert expected.mask.sum(1).tolist() == [removed] * 3
    if mask_type == "tube":
        assert torch.equal(expected.mask[:, :4], expected.mask[:, 4:])  # the same positions in both slices


def test_a_run_says_which_target_it_used():
    videomae = CLIP.replace(pixel_target="videomae", norm_pix_loss=True, in_chans=3, mean=None, std=None)
    record = target_record(videomae)
    assert record["pixel_target"] == "videomae" and record["mask_type"] == "tube"
    assert record["unnormalized_with"]["mean"] == [0.485, 0.456, 0.406]
    assert target_line(videomae) == ("target: VideoMAE's, un-normalised inputs, 2x8x8 tubelets, each channel "
                                     "normalised over the tubelet (unbiased std + 1e-6); tube masking at 0.75")
    assert target_record(CLIP) == {"pixel_target": "mae", "norm_pix_loss": False, "mask_type": "tube",
                                   "mask_ratio": 0.75}
    assert target_line(CLIP) == "target: the image MAE's, each 2x8x8x1 tubelet as pixels; tube masking at 0.75"


def test_a_video_mae_trains_through_the_engine_with_grad_checkpointing(tmp_path):
    spec = family("video")
    model = spec.build_model(CLIP, "moving-fashion-mnist", seed=0)
    options = TrainOptions(output=str(tmp_path / "run"), batch_size=4, epochs=1, max_steps=2, num_workers=0,
                           device="cpu", grad_checkpointing=True)
    before = [p.detach().clone() for p in model.parameters()]
    summary = Trainer(model, objective(model.config, options.seed), RandomClips(), options).fit()
    assert summary["steps"] == 2 and summary["images"] == 8 and summary["checkpoint"]
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.requires_grad]
    assert all(torch.isfinite(p).all() for p in model.parameters()) and all(changed)

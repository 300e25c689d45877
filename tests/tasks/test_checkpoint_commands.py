"""Every command that loads a checkpoint takes the heads and eps a plain file does not record."""
from __future__ import annotations

import json

import pytest
import torch

from vitmae.model import MaskedAutoencoder, ModelConfig
from vitmae.model.flat_names import flat_state_dict

NARROW = ModelConfig(img_size=(32, 32), patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
                     decoder_depth=1, decoder_num_heads=2)


def test_info_convert_and_reconstruct_take_the_heads_of_a_plain_official_file(run_cli, tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(0)
    path = tmp_path / "plain.pth"
    torch.save({"model": flat_state_dict(MaskedAutoencoder(NARROW))}, path)  # no record of heads or eps
    refused = run_cli("info", path, check=False)
    assert refused.returncode == 2 and "--num-heads" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    heads = ["--num-heads", "4", "--decoder-num-heads", "2", "--norm-eps", "1e-6"]
    info = json.loads(run_cli("info", path, *heads).stdout)
    assert info["architecture"]["num_heads"] == 4 and info["architecture"]["decoder_num_heads"] == 2
    run_cli("convert", path, tmp_path / "hf", "--to", "hf", *heads)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["num_attention_heads"] == 4
    Image.new("RGB", (40, 30), (90, 140, 200)).save(tmp_path / "image.png")
    run_cli("reconstruct", tmp_path / "image.png", "--checkpoint", path, "--out", tmp_path / "grid.png", *heads)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_models_lists_the_video_presets_and_info_and_convert_read_a_videomae_directory(run_cli, tmp_path):
    transformers = pytest.importorskip("transformers")
    listing = run_cli("models").stdout
    assert "videomae_vit_base_patch16    16x224x224 tubelet 2x16x16 chans 3" in listing
    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, hidden_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                         decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                         decoder_num_attention_heads=2, decoder_intermediate_size=32,
                                         use_mean_pooling=False)
    transformers.VideoMAEForPreTraining(config).save_pretrained(tmp_path / "hf")
    info = json.loads(run_cli("info", tmp_path / "hf").stdout)
    assert info["layout"] == "videomae_hub" and info["architecture"]["num_frames"] == 4
    run_cli("convert", tmp_path / "hf", tmp_path / "model.pth", "--to", "official")
    assert "encoder.blocks.0.attn.q_bias" in torch.load(tmp_path / "model.pth", weights_only=True)["model"]

"""Every command that loads a checkpoint takes the heads and eps a plain file does not record."""
from __future__ import annotations

import json

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

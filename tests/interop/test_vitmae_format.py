"""Our format: round trips (file and directory), run directories, atomic writes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from vitmae.interop import (CheckpointError, MissingDecoderWarning, detect_format, export, load_pretrained,
                            load_vitmae, resolve_checkpoint, save_vitmae)
from vitmae.interop import vitmae_format
from vitmae.model import MaskedAutoencoder
from vitmae.model.flat_names import flat_state_dict

from .conftest import TINY, assert_same_mae, caught

# values the weights do not tell exactly (heads, eps, a ratio that int() rounds), so the test shows that
# the config travels with the weights
CONFIG = TINY.replace(img_size=(32, 16), num_heads=4, decoder_num_heads=2, norm_eps=1e-5, mask_ratio=0.6,
                      mlp_ratio=4.3)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(CONFIG).eval()


def test_file_round_trip(tmp_path, model):
    path = save_vitmae(model, tmp_path / "m.safetensors")
    with safe_open(path, "pt") as f:
        assert f.metadata()["format"] == "vitmae"
        assert json.loads(f.metadata()["vitmae_config"]) == CONFIG.to_dict()
    state, config = load_vitmae(path)
    assert config == CONFIG
    assert all(torch.equal(state[k], v) for k, v in flat_state_dict(model).items())
    assert detect_format(path) == "vitmae"
    assert_same_mae(model, load_pretrained(path))


def test_dir_round_trip(tmp_path, model):
    save_vitmae(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "manifest.json",
                                                                       "model.safetensors"]
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == CONFIG.to_dict()
    assert load_vitmae(tmp_path / "ckpt")[1] == CONFIG
    assert detect_format(tmp_path / "ckpt") == "vitmae"
    assert_same_mae(model, load_pretrained(tmp_path / "ckpt"))


def test_a_damaged_directory_is_named_by_its_manifest(tmp_path, model):
    save_vitmae(model, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 1  # one bit inside the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 differs from its manifest"):
        load_pretrained(tmp_path / "ckpt")


def test_encoder_only_export_stays_encoder_only(tmp_path, model):
    path = export(model, tmp_path / "enc.safetensors", "vitmae", encoder_only=True)
    assert "mask_token" not in load_vitmae(path)[0]
    loaded, warned = caught(MissingDecoderWarning, load_pretrained, path)
    assert len(warned) == 1 and loaded.config == CONFIG


def test_run_dir_resolution(tmp_path, model):
    root = tmp_path / "run" / "checkpoints"
    for name in ("step-9", "step-10"):
        save_vitmae(model, root / name)
    (root / "step-11").mkdir()  # incomplete: no weights
    save_vitmae(model, root / ".tmp-step-12")  # still being written
    assert resolve_checkpoint(tmp_path / "run") == root / "step-10"  # no `latest`: natural name order
    (root / "latest").write_text("step-9\n")
    assert resolve_checkpoint(tmp_path / "run") == root / "step-9"
    assert resolve_checkpoint(root) == root / "step-9"
    assert resolve_checkpoint(root / "step-10") == root / "step-10"
    assert detect_format(tmp_path / "run") == "vitmae"
    assert_same_mae(model, load_pretrained(tmp_path / "run"))


def test_run_dir_errors(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoint in it"):
        resolve_checkpoint(tmp_path / "run")
    (root / "latest").write_text("step-5\n")
    with pytest.raises(CheckpointError, match="names 'step-5'"):
        load_pretrained(tmp_path / "run")


def test_save_is_atomic(tmp_path, model, monkeypatch):
    path = save_vitmae(model, tmp_path / "ckpt")
    before = path.read_bytes()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]

    def dies_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(vitmae_format, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_vitmae(model, tmp_path / "ckpt")
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "manifest.json",
                                                                       "model.safetensors"]
    load_pretrained(tmp_path / "ckpt")  # the old files still match their manifest

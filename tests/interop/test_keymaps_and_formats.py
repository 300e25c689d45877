"""Key tables in both directions, format detection and its errors, describe and convert."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vitmae.interop import (CheckpointError, MissingDecoderWarning, convert, describe, detect_format,
                            load_pretrained)
from vitmae.interop.keymaps import LAYOUTS, from_ours, hf_layout, mlp_ratio, to_ours
from vitmae.model.vit import flat_named_parameters

from .conftest import TINY, TINY_HEADS, assert_same_mae, caught, encoder_state


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_round_trips(tiny_model, layout):
    ours = tiny_model.state_dict()
    theirs = from_ours(ours, layout)
    back = to_ours(theirs, layout)
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], v) for k, v in ours.items())
    if layout.startswith("hf"):
        assert hf_layout(theirs) == layout
        assert not set(theirs) & set(ours)  # every key renamed


def test_qkv_is_split_by_rows(tiny_model):
    hub = from_ours(tiny_model.state_dict(), "hf_hub")
    qkv = tiny_model.encoder.blocks[1].attn.qkv.weight
    prefix = "vit.encoder.layer.1.attention.attention"
    assert torch.equal(hub[f"{prefix}.key.weight"], qkv[128:256])
    assert torch.equal(hub[f"{prefix}.value.weight"], qkv[256:])


@pytest.mark.parametrize("hidden, width", [(256, 64), (61, 28), (15, 44), (4304, 1152)])
def test_mlp_ratio_gives_back_the_hidden_width(hidden, width):
    assert int(width * mlp_ratio(hidden, width)) == hidden


def test_incomplete_qkv_is_reported_by_its_names(tmp_path, tiny_model):
    hub = from_ours(tiny_model.state_dict(), "hf_hub")
    del hub["vit.encoder.layer.0.attention.attention.value.bias"]
    save_file({k: v.contiguous() for k, v in hub.items()}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path / "w.safetensors", **TINY_HEADS)
    assert "missing (1): blocks.0.attn.qkv.bias" in str(err.value)
    assert "vit.encoder.layer.0.attention.attention.query.bias" in str(err.value)


def test_detection_errors_name_the_path_and_what_was_seen(tmp_path):
    cases = {"missing": tmp_path / "nope.pth", "empty file": tmp_path / "empty.safetensors"}
    cases["empty file"].write_bytes(b"")
    save_file({"encoder.weight": torch.zeros(2)}, tmp_path / "bert.safetensors")
    cases["no vit keys"] = tmp_path / "bert.safetensors"
    (tmp_path / "emptydir").mkdir()
    cases["empty dir"] = tmp_path / "emptydir"
    (tmp_path / "bertdir").mkdir()
    (tmp_path / "bertdir" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases["other model type"] = tmp_path / "bertdir"
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases["not a state dict"] = tmp_path / "list.pth"
    for what, path in cases.items():
        with pytest.raises(CheckpointError) as err:
            detect_format(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, what
    for path, seen in ((tmp_path / "bert.safetensors", "encoder.weight"), (tmp_path / "bertdir", "'bert'")):
        with pytest.raises(CheckpointError, match=seen):
            detect_format(path)


def test_content_decides_not_the_extension(tmp_path, tiny_model):
    path = tmp_path / "weights.bin"  # safetensors under a torch extension
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, path)
    assert detect_format(path) == "official"  # official keys with a decoder, no wrapper


def test_describe(tmp_path, tiny_model):
    torch.save({"model": tiny_model.state_dict()}, tmp_path / "m.pth")
    info = describe(tmp_path / "m.pth", **TINY_HEADS)
    assert info["format"] == "official" and info["decoder_present"] is True
    assert info["architecture"] == TINY.to_dict()
    counts = info["parameters"]
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())
    assert counts["decoder"] == sum(p.numel() for n, p in flat_named_parameters(tiny_model)
                                    if n == "mask_token" or n.startswith("decoder_"))
    json.dumps(info)  # `vitmae info` prints it


@pytest.mark.parametrize("to", ["hf", "timm", "official", "vitmae"])
def test_convert_round_trip(tmp_path, tiny_model, to):
    torch.save({"model": tiny_model.state_dict()}, tmp_path / "m.pth")
    out = convert(tmp_path / "m.pth", tmp_path / "out" / ("x.safetensors" if to == "timm" else "x"), to,
                  **TINY_HEADS)
    assert detect_format(out) == to
    if to == "timm":
        return  # encoder only: checked in test_timm
    assert_same_mae(tiny_model, load_pretrained(out))


def test_convert_keeps_a_missing_decoder_missing(tmp_path, tiny_model):
    torch.save({"model": encoder_state(tiny_model)}, tmp_path / "enc.pth")
    out, warned = caught(MissingDecoderWarning, convert, tmp_path / "enc.pth", tmp_path / "hf", "hf", num_heads=2)
    assert len(warned) == 1 and "encoder only" in str(warned[0].message)
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not any(k.startswith("decoder.") for k in f.keys())
    assert describe(out)["decoder_present"] is False

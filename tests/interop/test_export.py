"""`convert`: any checkpoint to any format, a missing decoder kept missing."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from vitmae.interop import MissingDecoderWarning, convert, describe, detect_format, load_pretrained
from vitmae.model.flat_names import flat_state_dict

from .conftest import TINY_HEADS, assert_same_mae, caught, encoder_state


@pytest.mark.parametrize("to", ["hf", "timm", "official", "vitmae"])
def test_convert_round_trip(tmp_path, tiny_model, to):
    torch.save({"model": flat_state_dict(tiny_model)}, tmp_path / "m.pth")
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

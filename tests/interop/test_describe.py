"""`describe` (what `vitmae info` prints)."""
from __future__ import annotations

import json

import torch

from vitmae.interop import describe
from vitmae.model.flat_names import flat_named_parameters, flat_state_dict

from .conftest import TINY, TINY_HEADS


def test_describe(tmp_path, tiny_model):
    torch.save({"model": flat_state_dict(tiny_model)}, tmp_path / "m.pth")
    info = describe(tmp_path / "m.pth", **TINY_HEADS)
    assert info["format"] == "official" and info["decoder_present"] is True
    assert info["architecture"] == TINY.to_dict()
    counts = info["parameters"]
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())
    assert counts["decoder"] == sum(p.numel() for n, p in flat_named_parameters(tiny_model)
                                    if n == "mask_token" or n.startswith("decoder_"))
    json.dumps(info)  # `vitmae info` prints it

"""Key tables in both directions: every layout round-trips, qkv splits by rows, incomplete triples are named."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vitmae.interop import CheckpointError, load_pretrained
from vitmae.interop.keymaps import LAYOUTS, VIDEO_LAYOUTS, from_ours, hf_layout, mlp_ratio, to_ours
from vitmae.model import MaskedAutoencoder
from vitmae.model.flat_names import flat_state_dict

from .conftest import TINY_HEADS, TINY_VIDEO


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_round_trips(tiny_model, layout):
    model = MaskedAutoencoder(TINY_VIDEO) if layout in VIDEO_LAYOUTS else tiny_model  # a layout of its kind
    ours = flat_state_dict(model)
    theirs = from_ours(ours, layout)
    back = to_ours(theirs, layout)
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], v) for k, v in ours.items())
    if layout.startswith("hf"):
        assert hf_layout(theirs) == layout
        assert not set(theirs) & set(ours)  # every key renamed
    if layout.startswith("videomae"):
        assert layout == "videomae_official" or hf_layout(theirs) == layout
        assert set(theirs) & set(ours) == {"mask_token"}  # VideoMAE's only name that is ours


def test_qkv_is_split_by_rows(tiny_model):
    hub = from_ours(flat_state_dict(tiny_model), "hf_hub")
    qkv = tiny_model.encoder.blocks[1].attn.qkv.weight
    prefix = "vit.encoder.layer.1.attention.attention"
    assert torch.equal(hub[f"{prefix}.key.weight"], qkv[128:256])
    assert torch.equal(hub[f"{prefix}.value.weight"], qkv[256:])


@pytest.mark.parametrize("hidden, width", [(256, 64), (61, 28), (15, 44), (4304, 1152)])
def test_mlp_ratio_gives_back_the_hidden_width(hidden, width):
    assert int(width * mlp_ratio(hidden, width)) == hidden


def test_incomplete_qkv_is_reported_by_its_names(tmp_path, tiny_model):
    hub = from_ours(flat_state_dict(tiny_model), "hf_hub")
    del hub["vit.encoder.layer.0.attention.attention.value.bias"]
    save_file({k: v.contiguous() for k, v in hub.items()}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path / "w.safetensors", **TINY_HEADS)
    assert "missing (1): blocks.0.attn.qkv.bias" in str(err.value)
    assert "vit.encoder.layer.0.attention.attention.query.bias" in str(err.value)

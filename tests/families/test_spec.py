"""The family registry: the built-in families, their shard units (what FSDP will wrap one by one), and a
slot a family leaves empty saying so in one line."""
from __future__ import annotations

import pytest
import torch

from vitmae.errors import ConfigError
from vitmae.families import FAMILIES, FamilySpec, family, register_family
from vitmae.families import classify, mae
from vitmae.model import ModelConfig
from vitmae.model.vit import Block

TINY = ModelConfig(img_size=28, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=16,
                   decoder_depth=1, decoder_num_heads=2)


def blocks_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, Block)]


@pytest.mark.parametrize("name, build", [
    ("mae", lambda: mae.build_model(TINY, "fashion-mnist", seed=0)),
    ("classify", lambda: classify.build_model(None, TINY, 3, "mean", 0.0, seed=0)),
])
def test_the_shard_units_are_every_transformer_block_once(name, build):
    model = build()
    units = family(name).shard_units(model)
    assert len(units) == len({id(u) for u in units}) == len(blocks_of(model))
    assert all(isinstance(u, Block) for u in units)


def test_a_family_is_registered_once_and_an_empty_slot_says_what_takes_it():
    assert {"mae", "classify"} <= set(FAMILIES)
    assert register_family(FAMILIES["mae"]) is FAMILIES["mae"]  # the same spec again: nothing changes
    with pytest.raises(ValueError, match="registered already"):
        register_family(FamilySpec("mae", "another"))
    with pytest.raises(ConfigError, match="predict is not for a mae model; it takes:"):
        family("mae").slot("predict", "predict")
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        family("nope")

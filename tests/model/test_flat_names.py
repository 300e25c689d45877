"""The name adapter: module paths inside the process, flat names in files. Module paths are what
torch.distributed.checkpoint (and FSDP) address parameters by, so a model round-trips through DCP as it
is; files keep the official flat names both ways."""
from __future__ import annotations

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from vitmae.model import MaskedAutoencoder, ViTClassifier, ViTEncoder, model_config
from vitmae.model.flat_names import flat_named_parameters, flat_state_dict, from_flat, load_flat_state_dict
from vitmae.model.segmentation import Segmenter

CONFIG = model_config("mae_vit_micro_patch4_28", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                      decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, in_chans=3)
MODELS = {
    "mae": lambda: MaskedAutoencoder(CONFIG),
    "classifier": lambda: ViTClassifier(CONFIG, num_classes=5),
    "segmenter": lambda: Segmenter(ViTEncoder(CONFIG), num_classes=3),
}


def two(kind: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    source = MODELS[kind]()
    torch.manual_seed(1)
    return source, MODELS[kind]()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process, on purpose
@pytest.mark.parametrize("kind", list(MODELS))
def test_a_model_round_trips_through_distributed_checkpoint(tmp_path, kind):
    """One process, no process group: get_model_state_dict, dcp.save, dcp.load, set_model_state_dict."""
    source, target = two(kind)
    state = get_model_state_dict(source)
    assert list(state) == list(source.state_dict())  # the module paths: encoder.blocks.0...
    dcp.save(state, checkpoint_id=tmp_path, no_dist=True)
    loaded = get_model_state_dict(target)
    dcp.load(loaded, checkpoint_id=tmp_path, no_dist=True)
    result = set_model_state_dict(target, loaded)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_weights(source, target)
    assert flat_state_dict(target).keys() == flat_state_dict(source).keys()


@pytest.mark.parametrize("kind", list(MODELS))
def test_flat_names_drop_the_component_prefixes_and_load_back(kind):
    source, target = two(kind)
    flat = flat_state_dict(source)
    assert "blocks.0.attn.qkv.weight" in flat and "pos_embed" in flat
    assert not any(k.startswith("encoder.") for k in flat)
    assert list(from_flat(source, flat)) == list(source.state_dict())  # the same tensors, in the same order
    load_flat_state_dict(target, flat)
    assert_same_weights(source, target)


def test_mae_flat_names_are_the_official_ones():
    flat = flat_state_dict(MaskedAutoencoder(CONFIG))
    assert {"mask_token", "decoder_pos_embed", "decoder_blocks.0.mlp.fc1.weight", "decoder_pred.bias",
            "norm.weight", "cls_token"} <= flat.keys()
    assert not any(k.startswith("decoder.") for k in flat)


def test_a_model_without_components_keeps_its_names():
    encoder = ViTEncoder(CONFIG)
    assert list(flat_state_dict(encoder)) == list(encoder.state_dict())
    assert [n for n, _ in flat_named_parameters(encoder)] == [n for n, _ in encoder.named_parameters()]


def test_a_key_of_no_component_is_left_for_the_loader_to_report():
    model = MaskedAutoencoder(CONFIG)
    state = {**flat_state_dict(model), "head.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="head.weight"):
        load_flat_state_dict(model, state)

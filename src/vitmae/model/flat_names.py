"""The name adapter: module paths inside the process, flat names in files.

A model built from components names its tensors by module path, as torch does everywhere:
`encoder.blocks.0.attn.qkv.weight`, `decoder.decoder_blocks.0.norm1.weight`. `torch.distributed.checkpoint`
and FSDP address parameters that way, so `state_dict()` must not rename them.

Files do not: the official release, timm and every vitmae checkpoint use the flat names of the official
code, where the components' prefixes are dropped (`blocks.0.attn.qkv.weight`, `decoder_blocks.0...`).
A model lists the children whose prefixes the flat names drop in its class attribute `flat_components`
(MaskedAutoencoder: encoder and decoder; ViTClassifier and Segmenter: the encoder); a model without one
(the encoder alone, the detectors) has the same names in both. Whatever reads or writes a file of
weights goes through `flat_state_dict` and `load_flat_state_dict`.
"""
from __future__ import annotations

from torch import Tensor, nn


def flat_components(model: nn.Module) -> tuple[str, ...]:
    return getattr(model, "flat_components", ())


def flat_name(model: nn.Module, path: str) -> str:
    """The flat name of the tensor at module path `path` of `model`."""
    first, _, rest = path.partition(".")
    return rest if rest and first in flat_components(model) else path


def flat_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """`model.state_dict()` under the flat names, in the same order."""
    return {flat_name(model, path): value for path, value in model.state_dict().items()}


def from_flat(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict in flat names under `model`'s module paths. A key of no component (a head, or one
    `model` does not have) keeps its name, for the loader to report."""
    owners = {name: component for component in flat_components(model)
              for name in _top_level_names(getattr(model, component))}
    out = {}
    for key, value in state.items():
        owner = owners.get(key.split(".", 1)[0])
        out[f"{owner}.{key}" if owner else key] = value
    return out


def load_flat_state_dict(model: nn.Module, state: dict[str, Tensor], strict: bool = True):
    """`model.load_state_dict` of a state dict in flat names."""
    return model.load_state_dict(from_flat(model, state), strict=strict)


def flat_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """`named_parameters` under the flat names, in the order the official (flat) module lists them:
    top-level tensors first, then submodules. Optimizer states follow this order, so a training
    checkpoint keeps its meaning whatever components the model is built from."""
    named = [(flat_name(model, path), p) for path, p in model.named_parameters()]
    return sorted(named, key=lambda item: "." in item[0]) if flat_components(model) else named


def _top_level_names(module: nn.Module) -> set[str]:
    return set(module._parameters) | set(module._buffers) | set(module._modules)

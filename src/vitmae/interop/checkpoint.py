"""What a reader of any format returns: a `Checkpoint`, the weights as stored and what the file says
about them.

The weights keep their stored key names; `layout` (a key of keymaps.LAYOUTS) says how to turn them into
ours. `stated` holds the ModelConfig values the file states (all of them for vitmae and Hugging Face files
and for our timm and official exports, which record them; a few for an official training checkpoint's
`args`; none for plain weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..model.config import to_2tuple
from .keymaps import add_vit_prefix, config_from_hf, config_from_videomae, hf_layout, is_decoder_key, is_videomae
from .safe_load import CheckpointError, name_list

FORMATS = ("vitmae", "official", "hf", "timm")


@dataclass
class Checkpoint:
    path: Path  # the weights file
    format: str  # one of FORMATS
    layout: str  # a key of keymaps.LAYOUTS
    state_dict: dict[str, Tensor]
    stated: dict[str, Any] = field(default_factory=dict)  # ModelConfig values the file states
    class_names: list[str] | None = None  # a classifier's, when the file records them
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} of its inputs
    assumed: dict[str, str] = field(default_factory=dict)  # values by convention, not from the file: why

    def take_record(self, record: dict[str, Any]) -> "Checkpoint":
        """Use what a vitmae_format.model_record says about the model."""
        if "config" in record:
            self.stated = {**record["config"], "img_size": to_2tuple(record["config"]["img_size"])}
        self.class_names = record.get("class_names") or self.class_names
        self.normalization = record.get("normalization") or self.normalization
        return self


def from_state_dict(path: Path, state: dict[str, Tensor]) -> Checkpoint:
    """A plain state dict, judged by its keys: Hugging Face names (transformers' VideoMAE's among them),
    official VideoMAE pre-training names (`encoder.*`, `decoder.*`), or official / timm ones (a plain
    state dict is official with a decoder or a video embedding, timm without: timm models have none).
    Hugging Face weights without config.json get its defaults."""
    if is_videomae(state):
        state = add_vit_prefix(state, "videomae")
        return Checkpoint(path, "hf", hf_layout(state), state, config_from_videomae({}))
    if "encoder.patch_embed.proj.weight" in state:
        return Checkpoint(path, "official", "videomae_official", state)
    if any(k.startswith(("vit.", "embeddings.", "decoder.decoder_")) for k in state):
        state = add_vit_prefix(state)
        return Checkpoint(path, "hf", hf_layout(state), state, config_from_hf({}))
    if "patch_embed.proj.weight" in state:
        video = state["patch_embed.proj.weight"].dim() == 5
        fmt = "official" if video or any(is_decoder_key(k) for k in state) else "timm"
        return Checkpoint(path, fmt, fmt, state)
    raise CheckpointError(f"{path}: no ViT weights found (no patch_embed.proj.weight, no vit.*; "
                          f"{len(state)} keys: {name_list(list(state))})")

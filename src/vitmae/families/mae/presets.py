"""The architecture presets (`vitmae models`): the MAEs a pre-training run starts from."""
from __future__ import annotations

from typing import Any

from ...model import PRESETS


def presets() -> dict[str, dict[str, Any]]:
    return {name: config.to_dict() for name, config in PRESETS.items()}


def preset_lines(presets: dict[str, dict[str, Any]]) -> list[str]:
    """One line per preset: input, patch (a video model's clip and tubelet), channels, encoder and decoder
    sizes."""
    return [f"{name:28s} {_input(c)} chans {c['in_chans']}  encoder {c['embed_dim']}x{c['depth']} "
            f"({c['num_heads']} heads)  decoder {c['decoder_embed_dim']}x{c['decoder_depth']}"
            for name, c in presets.items()]


def _input(c: dict[str, Any]) -> str:
    """224x224 patch 16; a video model's clip and tubelet: 16x224x224 tubelet 2x16x16."""
    size = "x".join(str(s) for s in c["img_size"])
    if c.get("num_frames") is None:
        return f"{size} patch {c['patch_size']}"
    return f"{c['num_frames']}x{size} tubelet {c['tubelet_size']}x{c['patch_size']}x{c['patch_size']}"

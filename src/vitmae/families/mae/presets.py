"""The architecture presets (`vitmae models`): the MAEs a pre-training run starts from."""
from __future__ import annotations

from typing import Any

from ...model import PRESETS


def presets() -> dict[str, dict[str, Any]]:
    return {name: config.to_dict() for name, config in PRESETS.items()}


def preset_lines(presets: dict[str, dict[str, Any]]) -> list[str]:
    """One line per preset: input, patch, channels, encoder and decoder sizes."""
    return [f"{name:28s} {c['img_size'][0]}x{c['img_size'][1]} patch {c['patch_size']} chans {c['in_chans']}  "
            f"encoder {c['embed_dim']}x{c['depth']} ({c['num_heads']} heads)  "
            f"decoder {c['decoder_embed_dim']}x{c['decoder_depth']}" for name, c in presets.items()]

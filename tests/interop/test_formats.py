"""Format detection: the content decides, and an error names the path and what was seen."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vitmae.interop import CheckpointError, detect_format
from vitmae.model.flat_names import flat_state_dict


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
    save_file({k: v.contiguous() for k, v in flat_state_dict(tiny_model).items()}, path)
    assert detect_format(path) == "official"  # official keys with a decoder, no wrapper

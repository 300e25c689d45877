"""Pickles are loaded weights-only: a file that would run code is refused before anything runs."""
from __future__ import annotations

import argparse
import builtins
import pickle

import pytest
import torch

from vitmae.interop import CheckpointError, UnsafeCheckpointError, load_pretrained, load_torch_file


class CreatesFile:
    """Unpickling this creates `path`: the payload a malicious checkpoint would carry."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def write(path, obj, how):
    if how == "torch":
        torch.save(obj, path)
    elif how == "torch-legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle of the current protocol, which torch.load cannot even parse weights-only
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def test_the_payload_is_real(tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(CreatesFile(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("how", ["torch", "torch-legacy", "pickle"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, how):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pth"
    write(path, {"model": {"cls_token": torch.zeros(1, 1, 8)}, "args": CreatesFile(marker)}, how)
    for load in (load_torch_file, load_pretrained):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        assert "builtins.open" in message or "io.open" in message
        assert "not executed" in message
    assert not marker.exists()


def test_training_checkpoint_globals_are_allowed(tmp_path):
    path = tmp_path / "checkpoint-0.pth"
    torch.save({"model": {}, "epoch": 0, "args": argparse.Namespace(input_size=224, norm_pix_loss=True)}, path)
    assert load_torch_file(path)["args"].input_size == 224


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_damaged_file_is_one_line_checkpoint_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_torch_file(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not isinstance(err.value, UnsafeCheckpointError)

"""Sharded (DCP) weights read back whole in one process, and never run code from a crafted file."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from vitmae.interop import CheckpointError
from vitmae.interop.sharded import is_sharded, load_sharded_into, read_sharded, save_sharded
from vitmae.interop.vitmae_format import verify_manifest, write_manifest


@pytest.fixture
def sharded(tmp_path):
    state = {"model": {"blocks.0.attn.qkv.weight": torch.randn(6, 2), "cls_token": torch.randn(1, 1, 2)},
             "optimizer": {"state.encoder.cls_token.exp_avg": torch.ones(1, 1, 2), "state.encoder.cls_token.step":
                           torch.tensor(3.0)}}
    save_sharded(tmp_path, state)
    return tmp_path, state


def test_tensors_come_back_whole_by_name_and_in_place(sharded):
    path, state = sharded
    assert is_sharded(path) and not is_sharded(path / "sharded")
    for group in ("model", "optimizer"):
        back = read_sharded(path, group)
        assert back.keys() == state[group].keys()
        assert all(torch.equal(back[k], state[group][k]) for k in back)
    target = {"model": {k: torch.zeros_like(v) for k, v in state["model"].items()}}
    load_sharded_into(path, target)
    assert all(torch.equal(target["model"][k], state["model"][k]) for k in state["model"])


def test_a_value_that_is_not_a_tensor_is_refused(tmp_path):
    with pytest.raises(TypeError, match="only tensors"):  # DCP would store it as a pickle
        save_sharded(tmp_path, {"optimizer": {"param_groups.x.lr": 0.1}})


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_crafted_metadata_is_refused_without_running_it(sharded, monkeypatch):
    path, _ = sharded
    monkeypatch.chdir(path)
    (path / "sharded" / ".metadata").write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(CheckpointError, match="refers to posix.system"):
        read_sharded(path, "model")
    assert not (path / "should-not-exist").exists()
    (path / "sharded" / ".metadata").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="unreadable DCP metadata"):
        read_sharded(path, "model")


def test_the_manifest_covers_the_shards_and_dcp_metadata(sharded):
    path, _ = sharded
    write_manifest(path)
    verify_manifest(path)
    shard = next((path / "sharded").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_manifest(path)
    (path / "sharded" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify_manifest(path)

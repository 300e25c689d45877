"""Hugging Face ids resolve through the local hub cache, offline; a model that is not there is one clear
error saying where we looked and how to fetch it."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import try_to_load_from_cache

from vitmae.interop import CheckpointError, MissingDecoderWarning, describe, export, load_pretrained

from .conftest import TINY, assert_same_mae, caught, images


def cache_model(cache: Path, repo: str, files: Path) -> Path:
    """`files` (a directory) put into `cache` as huggingface_hub lays a download out: blobs named by their
    hash, a snapshot of symlinks to them, and refs/main naming the snapshot."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for f in files.iterdir():
        blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no relative path of the id's name exists here
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_transformers_id_loads_from_the_cache(tmp_path, cache, tiny_model):
    snapshot = cache_model(cache, "someone/tiny-mae", export(tiny_model, tmp_path / "export", "hf"))
    # the layout is the one huggingface_hub itself reads (offline lookup)
    assert Path(try_to_load_from_cache("someone/tiny-mae", "config.json", cache_dir=cache)) == snapshot / "config.json"
    assert_same_mae(tiny_model, load_pretrained("someone/tiny-mae"))
    assert describe("someone/tiny-mae")["format"] == "hf"


def test_hf_home_is_the_fallback(tmp_path, cache, tiny_model, monkeypatch):
    cache_model(tmp_path / "home" / "hub", "someone/tiny-mae", export(tiny_model, tmp_path / "export", "hf"))
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert_same_mae(tiny_model, load_pretrained("someone/tiny-mae"))


def test_a_timm_hub_id_loads_its_weights(tmp_path, cache, tiny_model):
    files = tmp_path / "timm"
    files.mkdir()
    export(tiny_model, files / "model.safetensors", "timm")
    (files / "config.json").write_text('{"architecture": "vit_base_patch16_224", "num_classes": 0}\n')
    cache_model(cache, "someone/tiny-vit", files)
    model, _ = caught(MissingDecoderWarning, load_pretrained, "hf-hub:someone/tiny-vit")
    x = images(TINY)
    with torch.no_grad():
        assert torch.equal(model.encode(x), tiny_model.encode(x))


@pytest.mark.parametrize("name", ["facebook/vit-mae-base", "hf-hub:timm/vit_base_patch16_224.mae"])
def test_a_model_not_in_the_cache_says_where_it_looked_and_how_to_fetch_it(cache, name):
    with pytest.raises(CheckpointError) as err:
        load_pretrained(name)
    message = str(err.value)
    assert "\n" not in message and str(cache) in message
    assert f"huggingface-cli download {name.removeprefix('hf-hub:')}" in message


def test_a_missing_path_that_is_no_model_id_is_a_missing_file(cache):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_pretrained("runs/a/missing-run")

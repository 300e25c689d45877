"""Fuzzing the readers: valid files, mutated (bytes, JSON values, the safetensors header), fed to the
public readers. Only the project's own errors may escape, and no read may take longer than READ_LIMIT_S.

The bounded run here is derandomized; VITMAE_FUZZ_EXAMPLES raises the example count of each test for a
longer search (docs/reliability.md, "Fuzzing the readers")."""
from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import struct
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitmae import load_pretrained
from vitmae.options import read_options_file as load_config_file
from vitmae.config import ConfigError, ModelConfig, PretrainOptions
from vitmae.data import DataError
from vitmae.interop import CheckpointError, describe, export, save_vitmae
from vitmae.model import MaskedAutoencoder

OWN_ERRORS = (CheckpointError, ConfigError, DataError)
READ_LIMIT_S = 5
EXAMPLES = int(os.environ.get("VITMAE_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# 64-wide encoder heads and 16 decoder heads: the official conventions, so files without a config load too.
MICRO = ModelConfig(img_size=16, patch_size=8, in_chans=1, embed_dim=64, depth=1, num_heads=1,
                    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=16)


class ReadTooSlow(BaseException):
    """Not an Exception, so that no reader's `except Exception` can turn it into an error of its own."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM stops a read that runs Python too long; faulthandler ends the whole run (with every
    thread's stack) if one is stuck where no signal handler runs, in native code."""
    def too_slow(signum, frame):
        raise ReadTooSlow(f"the read took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds * 6, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def read_fails_cleanly_or_works(read, path: Path) -> None:
    with time_limit(READ_LIMIT_S), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a missing decoder: a warning, not a failure
        try:
            read(path)
        except OWN_ERRORS as err:
            assert len(str(err).splitlines()) == 1, f"not one line: {err!r}"


# -- mutations ----------------------------------------------------------------------------------------

def _byte_edit():
    """(kind, position as a fraction of the length, bytes) of one edit."""
    return st.tuples(st.sampled_from(["overwrite", "insert", "delete", "truncate"]),
                     st.floats(0, 1), st.binary(min_size=1, max_size=16))


def mutate_bytes(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, where, payload in edits:
        i = int(where * len(out))
        if kind == "overwrite":
            out[i:i + len(payload)] = payload
        elif kind == "insert":
            out[i:i] = payload
        elif kind == "delete":
            del out[i:i + len(payload)]
        else:
            del out[i:]
    return bytes(out)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 1, 2**31, 10**12])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def json_edit(keys: list[str]):
    """(path of keys, new value or None to delete it) into a JSON object; keys may also be new ones."""
    return st.tuples(st.sampled_from(keys) | st.text(max_size=8), JSON_VALUES, st.booleans())


def mutate_json(obj: dict, edits, nested: bool = False) -> dict:
    obj = json.loads(json.dumps(obj))
    for key, value, delete in edits:
        target = obj
        if nested and isinstance(obj.get(key), dict) and obj[key]:  # a tensor entry: change one field
            target, key = obj[key], sorted(obj[key])[hash(json.dumps(value, default=str)) % len(obj[key])]
        if delete:
            target.pop(key, None)
        else:
            target[key] = value
    return obj


# -- valid files ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro_model() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(MICRO)


@pytest.fixture(scope="module")
def valid(micro_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid")
    save_vitmae(micro_model, root / "vitmae")
    export(micro_model, root / "hf", "hf")
    export(micro_model, root / "official.pth", "official")
    recipe = {"model": "mae_vit_micro_patch4_28", "epochs": 2, "batch-size": 16, "blr": 1.5e-4,
              "img_size": "28,28", "warmup_epochs": 0.5, "norm_pix_loss": False, "data": "fashion-mnist"}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for path in (root / "vitmae", root / "hf", root / "official.pth"):  # the fuzzing starts from files that load
        describe(path)
    load_config_file(root / "recipe.yaml", PretrainOptions)
    return {"vitmae": root / "vitmae", "hf": root / "hf", "official": root / "official.pth",
            "yaml": root / "recipe.yaml"}


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header: dict, body: bytes, length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body


READERS = {"load_pretrained": load_pretrained, "describe": describe}


# -- the fuzzers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
@FUZZ
@given(edits=st.lists(_byte_edit(), min_size=1, max_size=4))
def test_vitmae_checkpoint_dir_with_damaged_bytes(valid, tmp_path_factory, reader, name, edits):
    folder = copy_dir(valid["vitmae"], tmp_path_factory.mktemp("ckpt"))
    (folder / name).write_bytes(mutate_bytes((folder / name).read_bytes(), edits))
    read_fails_cleanly_or_works(READERS[reader], folder)


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(data=st.data())
def test_safetensors_header_length_json_and_data(valid, tmp_path_factory, reader, data):
    """A vitmae weights file with its header length, its JSON header (tensor dtypes, shapes, offsets, the
    metadata with the model config) or its data changed."""
    source = (valid["vitmae"] / "model.safetensors").read_bytes()
    header, body = split_safetensors(source)
    part = data.draw(st.sampled_from(["length", "header", "metadata", "body"]))
    length = None
    if part == "length":
        length = data.draw(st.integers(0, 2**64 - 1) | st.integers(0, len(source) + 16))
    elif part == "header":
        header = mutate_json(header, data.draw(st.lists(json_edit(sorted(header)), min_size=1, max_size=3)),
                             nested=True)
    elif part == "metadata":
        config = json.loads(header["__metadata__"]["vitmae_config"])
        config = mutate_json(config, data.draw(st.lists(json_edit(sorted(config)), min_size=1, max_size=3)))
        header["__metadata__"]["vitmae_config"] = json.dumps(config)
    else:
        body = mutate_bytes(body, data.draw(st.lists(_byte_edit(), min_size=1, max_size=3)))
    path = tmp_path_factory.mktemp("st") / "micro.safetensors"
    path.write_bytes(join_safetensors(header, body, length))
    read_fails_cleanly_or_works(READERS[reader], path)


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(data=st.data())
def test_hf_export_with_a_changed_config(valid, tmp_path_factory, reader, data):
    folder = copy_dir(valid["hf"], tmp_path_factory.mktemp("hf"))
    config = json.loads((folder / "config.json").read_text())
    if data.draw(st.booleans()):
        text = json.dumps(mutate_json(config, data.draw(st.lists(json_edit(sorted(config)), min_size=1,
                                                                 max_size=3))))
    else:
        text = mutate_bytes(json.dumps(config).encode(), data.draw(st.lists(_byte_edit(), min_size=1,
                                                                            max_size=3))).decode("latin-1")
    (folder / "config.json").write_text(text, encoding="latin-1")
    read_fails_cleanly_or_works(READERS[reader], folder)


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(edits=st.lists(_byte_edit(), min_size=1, max_size=4))
def test_official_pth_with_damaged_bytes(valid, tmp_path_factory, reader, edits):
    path = tmp_path_factory.mktemp("pth") / "checkpoint.pth"
    path.write_bytes(mutate_bytes(valid["official"].read_bytes(), edits))
    read_fails_cleanly_or_works(READERS[reader], path)


@FUZZ
@given(data=st.data())
def test_yaml_config_file(valid, tmp_path_factory, data):
    recipe = yaml.safe_load(valid["yaml"].read_text())
    if data.draw(st.booleans()):
        edits = data.draw(st.lists(json_edit(sorted(recipe)), min_size=1, max_size=3))
        text = yaml.safe_dump(mutate_json(recipe, edits))
    else:
        edits = data.draw(st.lists(_byte_edit(), min_size=1, max_size=4))
        text = mutate_bytes(valid["yaml"].read_bytes(), edits).decode("latin-1")
    path = tmp_path_factory.mktemp("yaml") / "recipe.yaml"
    path.write_text(text, encoding="latin-1")
    read_fails_cleanly_or_works(lambda p: load_config_file(p, PretrainOptions), path)

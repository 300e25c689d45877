"""`vitmae embed`: one row per readable image, with its path; deterministic; equal to the encoder's output."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitmae.config import ConfigError, EmbedOptions
from vitmae.data import EvalTransform, load_image
from vitmae.interop import export, load_encoder
from vitmae.model import create_model
from vitmae.tasks.embed import embed

TINY_RGB = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=1, num_heads=2,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    (root / "a" / "b").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    files = [root / "a" / "one.png", root / "a" / "b" / "two.jpg", root / "three.png", root / "a" / "gray.png"]
    sizes = [(40, 36), (32, 32), (64, 48), (30, 30)]
    for path, (h, w) in zip(files, sizes):
        pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        img = Image.fromarray(pixels)
        (img.convert("L") if "gray" in path.name else img).save(path)
    (root / "a" / "broken.png").write_bytes(b"not an image")
    return root


def test_embed_writes_one_row_per_readable_image_and_is_deterministic(run_cli, tmp_path, images):
    torch.manual_seed(0)
    checkpoint = export(create_model("mae_vit_micro_patch4_28", **TINY_RGB), tmp_path / "mae", "vitmae").parent
    out = tmp_path / "embed"
    result = run_cli("embed", "--checkpoint", checkpoint, "--data", images, "--batch-size", "2",
                     "--num-workers", "0", "--output", out)
    assert "4 x 32 features (cls)" in result.stdout and "skipped 1" in result.stdout
    features = np.load(out / "embeddings.npy")
    assert features.shape == (4, 32) and features.dtype == np.float32
    with open(out / "embeddings.csv") as f:
        rows = list(csv.DictReader(f))
    names = [row["path"].split("images/", 1)[1] for row in rows]
    assert names == ["a/b/two.jpg", "a/gray.png", "a/one.png", "three.png"]  # sorted, broken one left out
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3] and {r["label"] for r in rows} == {"-1"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["dim"] == 32
    assert [s["path"].endswith("broken.png") for s in metrics["skipped_files"]] == [True]

    # Deterministic: the same bytes again (in this process, another batch size and worker count), and each
    # row is the encoder's cls token of that image after the evaluation transform, without masking.
    again = tmp_path / "again"
    embed(EmbedOptions(output=str(again), checkpoint=str(checkpoint), data=str(images), batch_size=3,
                      num_workers=2))
    assert np.array_equal(np.load(again / "embeddings.npy"), features)
    model = load_encoder(checkpoint).eval()
    transform = EvalTransform(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = torch.stack([transform(load_image(row["path"], 3)) for row in rows])
    with torch.no_grad():
        tokens = model.encode(x)
    assert np.allclose(features, tokens[:, 0].numpy(), atol=1e-5)

    mean = tmp_path / "mean"
    embed(EmbedOptions(output=str(mean), checkpoint=str(checkpoint), data=str(images), pool="mean", num_workers=0))
    assert np.allclose(np.load(mean / "embeddings.npy"), tokens[:, 1:].mean(dim=1).numpy(), atol=1e-5)


def test_embed_of_a_labeled_csv_keeps_labels(tmp_path, images):
    torch.manual_seed(0)
    checkpoint = export(create_model("mae_vit_micro_patch4_28", **TINY_RGB), tmp_path / "mae", "vitmae").parent
    (tmp_path / "list.csv").write_text("path,label\nimages/three.png,bird\nimages/a/one.png,cat\n")
    s = embed(EmbedOptions(output=str(tmp_path / "e"), checkpoint=str(checkpoint), data=str(tmp_path / "list.csv"),
                          num_workers=0))
    assert s["images"] == 2
    with open(tmp_path / "e" / "embeddings.csv") as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["0", "1"]  # class names numbered in sorted order


def test_embed_to_parquet_holds_the_same_rows(tmp_path, images):
    pq = pytest.importorskip("pyarrow.parquet")
    torch.manual_seed(0)
    checkpoint = export(create_model("mae_vit_micro_patch4_28", **TINY_RGB), tmp_path / "mae", "vitmae").parent
    common = dict(checkpoint=str(checkpoint), data=str(images), num_workers=0)
    embed(EmbedOptions(output=str(tmp_path / "npy"), **common))
    s = embed(EmbedOptions(output=str(tmp_path / "pq"), format="parquet", **common))
    assert s["format"] == "parquet" and s["embeddings"].endswith("embeddings.parquet")
    table = pq.read_table(tmp_path / "pq" / "embeddings.parquet")
    assert table.column_names == ["path", "label", "embedding"]
    with open(tmp_path / "npy" / "embeddings.csv") as f:
        assert table.column("path").to_pylist() == [row["path"] for row in csv.DictReader(f)]
    assert table.column("label").to_pylist() == [-1] * 4
    features = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.array_equal(features, np.load(tmp_path / "npy" / "embeddings.npy"))


def test_embed_format_errors(tmp_path, images, monkeypatch):
    import sys

    with pytest.raises(ConfigError, match="unknown --format 'hdf5'"):
        embed(EmbedOptions(output=str(tmp_path / "e"), checkpoint="none", data=str(images), format="hdf5"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(ConfigError, match="needs pyarrow"):
        embed(EmbedOptions(output=str(tmp_path / "e"), checkpoint="none", data=str(images), format="parquet"))

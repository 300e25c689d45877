from __future__ import annotations

import gzip
import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from vitmae.data import (
    FASHION_MNIST_CLASSES,
    CsvSource,
    DataError,
    EvalTransform,
    FashionMNISTSource,
    ImageFolderSource,
    PhotosSource,
    PretrainTransform,
    ShardSource,
    build_dataset,
    build_loader,
    build_source,
    expand_braces,
)
from vitmae.data.sources import FASHION_MNIST_ROOT, SHARD_STRIDE

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist"
)


@needs_fashion_mnist
def test_fashion_mnist_splits():
    train, test = FashionMNISTSource("train"), FashionMNISTSource("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    img, label = train[0]
    assert img.mode == "L" and img.size == (28, 28) and 0 <= label <= 9
    assert np.asarray(img).std() > 10  # a real garment, not a blank frame
    assert Counter(int(label) for label in test.labels) == {c: 1000 for c in range(10)}
    assert train.paths[59999] == "fashion-mnist/train/59999"
    rgb, _ = FashionMNISTSource("test", in_chans=3)[0]
    assert rgb.mode == "RGB"
    assert len(build_source("fashion-mnist", split="val")) == 10000


@needs_fashion_mnist
def test_fashion_mnist_reads_raw_idx_and_validates(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((Path(FASHION_MNIST_ROOT) / f"{name}.gz").read_bytes()))
    raw, packaged = FashionMNISTSource("test", root=tmp_path), FashionMNISTSource("test")
    assert np.array_equal(raw.images, packaged.images) and np.array_equal(raw.labels, packaged.labels)

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        FashionMNISTSource("test", root=tmp_path)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNISTSource("train", root=tmp_path)
    assert "\n" not in str(info.value)


def test_photos():
    photos = PhotosSource()
    assert len(photos) > 3
    for i in range(len(photos)):
        img, label = photos[i]
        assert img.mode == "RGB" and min(img.size) >= 100 and label == -1
    assert any(p.endswith("astronaut.png") for p in photos.paths)
    assert PhotosSource(in_chans=1)[0][0].mode == "L"


def test_folder_scan_is_recursive_sorted_and_filtered(tmp_path, photo):
    files = ["cat/a.png", "cat/deep/b.JPG", "dog/c.webp", "dog/d.bmp", "dog/e.tif", "dog/f.gif"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        photo(12, 10).save(tmp_path / name)
    (tmp_path / "dog/readme.txt").write_text("not an image")
    (tmp_path / "dog/.hidden.png").write_bytes(b"macOS resource fork")
    (tmp_path / ".cache").mkdir()
    photo(12, 10).save(tmp_path / ".cache/thumb.png")

    unlabeled = ImageFolderSource(tmp_path)
    assert unlabeled.paths == [str(tmp_path / f) for f in files]
    assert unlabeled.classes is None and all(unlabeled[i][1] == -1 for i in range(len(files)))
    img, _ = unlabeled[1]
    assert img.mode == "RGB" and img.size == (12, 10)

    labeled = ImageFolderSource(tmp_path, labeled=True)
    assert labeled.classes == ["cat", "dog"]
    assert [labeled[i][1] for i in range(len(files))] == [0, 0, 1, 1, 1, 1]

    photo(12, 10).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="have no class folder"):
        ImageFolderSource(tmp_path, labeled=True)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found: .*nowhere"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no images"):
        ImageFolderSource(tmp_path)
    with pytest.raises(DataError, match="is not 'fashion-mnist', 'photos'"):
        build_source(str(tmp_path / "nowhere"))


def test_build_source_picks_the_split_folder(tmp_path, photo):
    for split, n in (("train", 3), ("val", 2)):
        (tmp_path / split / "x").mkdir(parents=True)
        for i in range(n):
            photo(8, 8).save(tmp_path / split / "x" / f"{i}.png")
    assert len(build_source(str(tmp_path))) == 3
    assert len(build_source(str(tmp_path), split="val", labeled=True)) == 2
    assert len(build_source(str(tmp_path / "val"))) == 2


def test_csv_source(tmp_path, photo):
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        photo(9, 9).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "list.csv").write_text("path,label\nimg/a.png,zebra\nimg/b.png,ant\nimg/c.png,zebra\n")
    source = build_source(str(tmp_path / "list.csv"))
    assert isinstance(source, CsvSource)
    assert source.classes == ["ant", "zebra"]
    assert [source[i][1] for i in range(3)] == [1, 0, 1]
    assert source.paths[0] == str(tmp_path / "img" / "a.png") and source[0][0].size == (9, 9)

    (tmp_path / "ids.csv").write_text("img/a.png,3\nimg/b.png,\nimg/c.png,0\n")
    ids = CsvSource(tmp_path / "ids.csv", in_chans=1)
    assert ids.classes is None and ids.labels == [3, -1, 0] and ids[0][0].mode == "L"
    with pytest.raises(DataError, match="CSV file not found"):
        CsvSource(tmp_path / "missing.csv")


def test_expand_braces():
    assert expand_braces("s/train-{000..002}.tar") == ["s/train-000.tar", "s/train-001.tar", "s/train-002.tar"]
    assert expand_braces("{a,b}-{8..10}.tar") == ["a-8.tar", "a-9.tar", "a-10.tar", "b-8.tar", "b-9.tar", "b-10.tar"]
    assert expand_braces("one.tar") == ["one.tar"]


def write_shards(folder: Path, photo, shards: int = 4, per_shard: int = 5) -> str:
    """WebDataset layout: members <key>.png and <key>.cls; shard 1 holds one corrupt image."""
    folder.mkdir()
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:03d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}/sample{i:02d}"
                image = io.BytesIO()
                photo(20 + i, 16, seed=s * 100 + i).save(image, format="PNG")
                data = b"<html>oops</html>" if (s, i) == (1, 2) else image.getvalue()
                for name, payload in ((f"{key}.png", data), (f"{key}.cls", str(s).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return str(folder / f"train-{{000..{shards - 1:03d}}}.tar")


def read_all(dataset, num_workers: int) -> tuple[dict[int, tuple[torch.Tensor, int]], list[str]]:
    samples, skipped = {}, []
    for batch in build_loader(dataset, batch_size=3, num_workers=num_workers, drop_last=False):
        for image, index, label in zip(batch.images, batch.indices.tolist(), batch.targets.tolist()):
            assert index not in samples
            samples[index] = (image, label)
        skipped += [path for path, _ in batch.skipped]
    return samples, skipped


def test_shards_each_sample_once_across_workers_and_ranks(tmp_path, photo):
    pattern = write_shards(tmp_path / "shards", photo)
    transform = PretrainTransform(16, (0.5,) * 3, (0.5,) * 3)
    everything = {s * SHARD_STRIDE + i for s in range(4) for i in range(5)} - {1 * SHARD_STRIDE + 2}
    bad = str(tmp_path / "shards" / "train-001.tar") + "#s1/sample02"

    single, skipped = read_all(build_dataset(build_source(pattern), transform, seed=3), num_workers=0)
    assert set(single) == everything and skipped == [bad]
    assert all(label == index // SHARD_STRIDE for index, (_, label) in single.items())

    two_workers, skipped = read_all(build_dataset(ShardSource(pattern), transform, seed=3), num_workers=2)
    assert set(two_workers) == everything and skipped == [bad]
    assert all(torch.equal(single[i][0], two_workers[i][0]) for i in everything)  # per-sample seeds

    per_rank = [read_all(build_dataset(ShardSource(pattern, rank=r, world_size=2), transform, 3), 2) for r in (0, 1)]
    seen = [set(samples) for samples, _ in per_rank]
    assert seen[0] and seen[1] and not seen[0] & seen[1] and seen[0] | seen[1] == everything
    assert sum(len(skips) for _, skips in per_rank) == 1


def test_shard_epochs_reshuffle_shards_and_crops(tmp_path, photo):
    shards = ShardSource(write_shards(tmp_path / "shards", photo, shards=6, per_shard=1))
    dataset = build_dataset(shards, PretrainTransform(16, (0.5,) * 3, (0.5,) * 3), seed=0)
    first = [sample[2] for sample in dataset]
    dataset.set_epoch(1)
    second = [sample[2] for sample in dataset]
    assert sorted(first) == sorted(second) and first != second
    assert [n for n, _ in shards.shards_for(0, 0, 1)] != [n for n, _ in shards.shards_for(1, 0, 1)]


def test_shards_written_by_webdataset(tmp_path, photo):
    wds = pytest.importorskip("webdataset")
    with wds.TarWriter(str(tmp_path / "wds-0.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "jpg": photo(30, 20, seed=i), "cls": i})
    dataset = build_dataset(build_source(str(tmp_path / "wds-{0..0}.tar")), EvalTransform(16, (0.5,) * 3, (0.5,) * 3))
    samples = list(dataset)
    assert [(index, label) for _, label, index in samples] == [(0, 0), (1, 1), (2, 2)]
    assert samples[0][0].shape == (3, 16, 16)


def test_shard_errors(tmp_path, photo):
    with pytest.raises(DataError, match="2 of 2 shards not found"):
        ShardSource(str(tmp_path / "x-{0..1}.tar"))
    one = write_shards(tmp_path / "one", photo, shards=1)
    with pytest.raises(DataError, match="1 shards cannot feed 2 ranks"):
        ShardSource(one, world_size=2, rank=0)
    with pytest.raises(RuntimeError, match="no transform"):
        next(iter(ShardSource(one)))

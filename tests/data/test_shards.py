"""WebDataset shards: brace patterns, each sample once across workers and ranks, per-epoch order."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from vitmae.data import (DataError, EvalTransform, PretrainTransform, ShardSource, build_dataset, build_loader,
                         expand_braces, open_source)
from vitmae.data.shards import SHARD_STRIDE


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

    single, skipped = read_all(build_dataset(open_source(pattern), transform, seed=3), num_workers=0)
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
    dataset = build_dataset(open_source(str(tmp_path / "wds-{0..0}.tar")), EvalTransform(16, (0.5,) * 3, (0.5,) * 3))
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

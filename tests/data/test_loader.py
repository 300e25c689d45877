from __future__ import annotations

import logging
import tarfile

import pytest
import torch

from vitmae.data import (
    EpochSampler,
    ImageFolderSource,
    PretrainTransform,
    ShardSource,
    Skipped,
    TransformedDataset,
    build_dataset,
    build_loader,
    collate,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def dataset_of(root, seed: int = 0) -> TransformedDataset:
    return TransformedDataset(ImageFolderSource(root), PretrainTransform(16, MEAN, STD), seed=seed)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_files_are_skipped_and_reported(folder_with_two_bad_files, num_workers):
    root, good, bad = folder_with_two_bad_files
    dataset = dataset_of(root)
    loader = build_loader(dataset, batch_size=4, sampler=EpochSampler(len(dataset), seed=1), num_workers=num_workers)
    batches = list(loader)
    assert len(batches) == 3  # 12 files in batches of 4: skipping does not change the batch count
    seen = [dataset.source.paths[i] for batch in batches for i in batch.indices.tolist()]
    assert sorted(seen) == good
    assert sorted(path for batch in batches for path, _ in batch.skipped) == bad
    assert sum(len(batch) for batch in batches) == 10
    assert all(batch.images.shape[1:] == (3, 16, 16) and batch.targets.eq(-1).all() for batch in batches)


def test_worker_count_does_not_change_the_batches(folder_with_two_bad_files):
    root, _, _ = folder_with_two_bad_files
    epochs = {}
    for workers in (0, 2):
        dataset = dataset_of(root, seed=5)
        sampler = EpochSampler(len(dataset), seed=5)
        loader = build_loader(dataset, batch_size=3, sampler=sampler, num_workers=workers)  # persistent workers
        epochs[workers] = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            epochs[workers].append(list(loader))
    for zero, two in zip(epochs[0], epochs[2]):
        for a, b in zip(zero, two):
            assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images) and a.skipped == b.skipped
    # The epoch reached the persistent workers: same samples, new crops.
    first = {i: img for batch in epochs[2][0] for i, img in zip(batch.indices.tolist(), batch.images)}
    second = {i: img for batch in epochs[2][1] for i, img in zip(batch.indices.tolist(), batch.images)}
    assert first.keys() == second.keys() and all(not torch.equal(first[i], second[i]) for i in first)


def test_resume_mid_epoch_gives_the_rest_of_the_same_epoch(folder_with_two_bad_files):
    root, _, _ = folder_with_two_bad_files
    dataset = dataset_of(root, seed=2)
    dataset.set_epoch(3)
    sampler = EpochSampler(len(dataset), seed=2, drop_last=True)
    sampler.set_epoch(3)
    full = list(build_loader(dataset, batch_size=2, sampler=sampler))

    k = 2
    resumed_sampler = EpochSampler(len(dataset), seed=2)
    resumed_sampler.set_epoch(3)
    resumed_sampler.skip(k * 2)
    assert len(resumed_sampler) == len(dataset) - k * 2
    rest = list(build_loader(dataset, batch_size=2, sampler=resumed_sampler, num_workers=2))
    assert len(full) == k + len(rest)
    for a, b in zip(full[k:], rest):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images) and a.skipped == b.skipped

    resumed_sampler.set_epoch(4)  # a new epoch starts from its beginning again
    assert len(resumed_sampler) == len(dataset)


def test_sampler_is_a_fixed_permutation_per_epoch():
    sampler = EpochSampler(100, seed=0)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(100)) and epoch0 != list(range(100))
    assert list(EpochSampler(100, seed=0)) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    assert list(EpochSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("num_samples", "world_size"), [(100, 2), (10, 3)])
def test_ranks_are_disjoint_and_cover_the_epoch(num_samples, world_size):
    parts = [list(EpochSampler(num_samples, seed=4, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(p) for p in parts}) == 1
    flat = [i for part in parts for i in part]
    assert len(flat) == len(set(flat)) == num_samples - num_samples % world_size

    padded = [
        list(EpochSampler(num_samples, seed=4, rank=r, world_size=world_size, drop_last=False))
        for r in range(world_size)
    ]
    assert len({len(p) for p in padded}) == 1
    assert set(i for part in padded for i in part) == set(range(num_samples))


def test_unreadable_file_is_logged_once(folder_with_two_bad_files, caplog):
    root, _, bad = folder_with_two_bad_files
    dataset = dataset_of(root)
    index = dataset.source.paths.index(bad[0])
    with caplog.at_level(logging.WARNING, logger="vitmae.data"):
        markers = [dataset[index] for _ in range(3)]
    assert markers[0] == Skipped(bad[0], markers[0].reason) and markers[0].reason
    assert [r.getMessage() for r in caplog.records] == [f"skipping unreadable image {bad[0]}: {markers[0].reason}"]


def test_collate_of_only_skipped_samples():
    batch = collate([Skipped("a.jpg", "truncated"), Skipped("b.jpg", "empty file")])
    assert len(batch) == 0 and batch.images.numel() == 0
    assert batch.skipped == [("a.jpg", "truncated"), ("b.jpg", "empty file")]


def test_sampler_and_loader_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        EpochSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="cannot skip 11"):
        EpochSampler(10).skip(11)
    with tarfile.open(tmp_path / "a.tar", "w"):
        pass
    shards = build_dataset(ShardSource(str(tmp_path / "a.tar")), PretrainTransform(8, MEAN, STD))
    with pytest.raises(ValueError, match="takes no sampler"):
        build_loader(shards, batch_size=2, sampler=EpochSampler(4))

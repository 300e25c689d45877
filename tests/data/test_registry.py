"""The registry of source kinds: which spec gives which source, for which target, and the one-line
refusals of a spec that names nothing a target accepts."""
from __future__ import annotations

import pytest

from vitmae.data import DataError, build_source, open_source
from vitmae.data.coco import CocoSource, SceneDetectionSource
from vitmae.data.files import CsvSource, ImageFolderSource
from vitmae.data.photos import PhotosSource
from vitmae.data.registry import SOURCE_KINDS
from vitmae.data.scenes import FashionScenesSource
from vitmae.data.segmentation import SegmentationFolderSource

from ..synthetic_coco import write_coco


def test_a_folder_gives_its_split_sub_folder(tmp_path, photo):
    for split, n in (("train", 3), ("val", 2)):
        (tmp_path / split / "x").mkdir(parents=True)
        for i in range(n):
            photo(8, 8).save(tmp_path / split / "x" / f"{i}.png")
    assert len(open_source(str(tmp_path))) == 3
    assert len(open_source(str(tmp_path), "val", "class")) == 2
    assert len(open_source(str(tmp_path / "val"))) == 2
    # build_source, as vitmae.data has long offered it: the same sources
    assert build_source(str(tmp_path)).paths == open_source(str(tmp_path), "train", "image").paths
    labeled = build_source(str(tmp_path), split="val", labeled=True)
    assert labeled.classes == ["x"] and labeled.labels == open_source(str(tmp_path), "val", "class").labels
    assert build_source(str(tmp_path), split="val").classes is None


def test_the_built_in_names_and_their_channels():
    photos = open_source("photos")
    assert isinstance(photos, PhotosSource) and photos[0][0].mode == "RGB"
    assert open_source("photos", in_chans=1)[0][0].mode == "L"
    scenes = open_source("fashion-scenes", "val", "mask", scene_size=32, seed=2)
    assert isinstance(scenes, FashionScenesSource) and scenes[0][1].shape == (32, 32)
    assert scenes[0][0].mode == "L" and len(scenes) == 1000
    detection = open_source("fashion-scenes", "train", "detection", in_chans=3, scenes=10, scene_size=32, seed=2)
    assert isinstance(detection, SceneDetectionSource) and len(detection) == 10 and detection[0][0].mode == "RGB"
    assert len(open_source("fashion-scenes", "val", "detection", scenes=10)) == 2  # a fifth as many
    assert len(open_source("fashion-scenes", "val", "mask", scenes=10, val_scenes=3)) == 3


def test_a_folder_is_read_as_the_target_asks(tmp_path, photo):
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    for folder in ("train/images", "train/masks"):
        (tmp_path / folder).mkdir(parents=True)
    photo(8, 6).save(tmp_path / "train/images/a.png")
    photo(8, 6, mode="L").save(tmp_path / "train/masks/a.png")
    assert isinstance(open_source(str(tmp_path), "train", "mask"), SegmentationFolderSource)
    images = open_source(str(tmp_path), "train", "class")
    assert isinstance(images, ImageFolderSource) and images.classes == ["images", "masks"]
    with pytest.raises(DataError, match=r"expected one .*/annotations/instances_train\*.json, found none"):
        open_source(str(tmp_path), "train", "detection")


def test_a_coco_folder_and_its_json_file_give_the_same_images(tmp_path):
    json_path = write_coco(tmp_path, "val2017", 3)
    from_folder = open_source(str(tmp_path), "val", "detection")
    from_file = open_source(str(json_path), "val", "detection", images=tmp_path / "val2017")
    assert isinstance(from_file, CocoSource) and from_file.paths == from_folder.paths
    assert from_file.category_ids == from_folder.category_ids == [3, 7]
    beside = tmp_path / "val2017" / "instances.json"  # without `images`, the file's own folder
    beside.write_text(json_path.read_text())
    assert open_source(str(beside), target="detection").paths == from_folder.paths
    named_otherwise = tmp_path / "annotations.txt"  # given with its image folder, any name is a COCO file
    named_otherwise.write_text(json_path.read_text())
    assert open_source(str(named_otherwise), "val", "detection", images=tmp_path / "val2017").paths == from_folder.paths


def test_the_first_kind_that_gives_the_target_wins(tmp_path, photo):
    folder = tmp_path / "looks.csv"  # a folder whose name ends in .csv
    (folder / "x").mkdir(parents=True)
    photo(8, 8).save(folder / "x" / "a.png")
    (tmp_path / "list.csv").write_text("looks.csv/x/a.png,cat\n")
    assert isinstance(open_source(str(tmp_path / "list.csv"), "train", "class"), CsvSource)
    with pytest.raises(DataError, match="CSV file not found: .*looks.csv"):  # the CSV kind comes first ...
        open_source(str(folder), "train", "class")
    with pytest.raises(DataError, match="segmentation data needs .*looks.csv/train/images/"):
        open_source(str(folder), "train", "mask")  # ... but gives no masks: the folder kind reads it


@pytest.mark.parametrize("spec, target, message", [
    ("nowhere", "image", "data source 'nowhere' is not 'fashion-mnist', 'photos', a .tar shard pattern, a .csv "
                         "file nor an existing folder"),
    ("nowhere", "class", "data source 'nowhere' is not 'fashion-mnist', a .tar shard pattern, a .csv file nor an "
                         "existing folder"),
    ("nowhere", "mask", "segmentation data 'nowhere' is not 'fashion-scenes' nor an existing folder "
                        "(DIR/{train,val}/{images,masks}/)"),
    ("nowhere", "detection", "detection data 'nowhere' is not 'fashion-scenes', a COCO .json file nor a folder in "
                             "COCO 2017's layout (DIR/annotations/instances_SPLIT*.json)"),
    ("photos", "class", "data source 'photos' is 'photos', which gives images, not class labels: give "
                        "'fashion-mnist', a .tar shard pattern, a .csv file or an existing folder"),
    ("fashion-mnist", "mask", "segmentation data 'fashion-mnist' is 'fashion-mnist', which gives images or class "
                              "labels, not segmentation masks: give 'fashion-scenes' or an existing folder "
                              "(DIR/{train,val}/{images,masks}/)"),
    ("fashion-scenes", "image", "data source 'fashion-scenes' is 'fashion-scenes', which gives segmentation masks "
                                "or object boxes, not images: give 'fashion-mnist', 'photos', a .tar shard pattern, "
                                "a .csv file or an existing folder"),
    ("list.csv", "detection", "detection data 'list.csv' is a .csv file, which gives images or class labels, not "
                              "object boxes: give 'fashion-scenes', a COCO .json file or a folder in COCO 2017's "
                              "layout (DIR/annotations/instances_SPLIT*.json)"),
])
def test_specs_a_target_does_not_accept_are_one_line(spec, target, message):
    with pytest.raises(DataError) as err:
        open_source(spec, "train", target)
    assert str(err.value) == message


def test_every_kind_is_listed_once_per_target_and_unknown_targets_are_bugs():
    for target in ("image", "class", "mask", "detection", "clip"):
        accepted = [kind.accepts for kind in SOURCE_KINDS if target in kind.targets]
        assert len(accepted) == len(set(accepted)) >= 2
    with pytest.raises(ValueError, match="unknown target 'audio'"):
        open_source("photos", "train", "audio")
    with pytest.raises(DataError, match="unknown split 'dev' for fashion-mnist"):
        open_source("fashion-mnist", "dev")

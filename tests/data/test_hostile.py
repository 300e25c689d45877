"""Issue 14, the data side: hostile files are skipped and listed (or refused with one clear line), never
a traceback, a huge allocation or a run that trains on nothing. The files come from tests/hostile_files.py."""
from __future__ import annotations

import logging
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import hostile_files as hostile
from tests.train.test_engine import TINY
from vitmae.cli import main
from vitmae.config import PretrainOptions
from vitmae.data import (CsvSource, DataError, ImageFolderSource, PretrainTransform, ShardSource, UnreadableImage,
                         build_dataset, build_loader, load_image)
from vitmae.data import shards
from vitmae.data.labels import labeled_splits, num_classes_of
from vitmae.model import MaskedAutoencoder
from vitmae.families.mae import MAEObjective
from vitmae.train import Trainer

TRANSFORM = PretrainTransform(16, (0.5,) * 3, (0.5,) * 3)


def read_all(dataset, batch_size: int = 4) -> tuple[int, dict[str, str]]:
    """(images read, {skipped path: reason}) of one pass over a dataset, nothing dropped."""
    images, skipped = 0, {}
    for batch in build_loader(dataset, batch_size=batch_size, num_workers=0, drop_last=False):
        images += len(batch)
        skipped.update(batch.skipped)
    return images, skipped


# -- 1. .npy files --------------------------------------------------------------------------------------

def test_hostile_npy_files_are_skipped_and_listed_with_their_reason(tmp_path):
    folder = hostile.rgb_folder(tmp_path / "data", 3)
    expected = {
        hostile.npy_empty(folder): "empty array of shape (0, 0, 3)",
        hostile.npz_renamed_npy(folder): "not a .npy array (the magic string is not correct",
        hostile.npy_huge_header(folder): "100000x100000 = 10000000000 pixels, over the limit of 89478485 pixels",
        hostile.npy_nonfinite(folder): "1 of 768 values are NaN or infinite",
        hostile.npy_nonfinite(folder, float("inf")): "1 of 768 values are NaN or infinite",
    }
    images, skipped = read_all(build_dataset(ImageFolderSource(folder), TRANSFORM))
    assert images == 3 and sorted(skipped) == sorted(map(str, expected))
    for path, reason in expected.items():
        assert skipped[str(path)].startswith(reason), skipped[str(path)]


def test_an_npy_header_is_checked_against_the_file_before_anything_is_read(tmp_path):
    # 9000 x 9000 is under the pixel limit: only the file size shows the header lies (243 MB promised).
    claims = hostile.npy_huge_header(tmp_path, shape=(9000, 9000, 3))
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImage, match=r"promises 243000000 bytes \(uint8, shape \(9000, 9000, 3\)\); "
                                                  r"the file holds 0"):
            load_image(claims, 3)
        with pytest.raises(UnreadableImage, match="over the limit"):
            load_image(hostile.npy_huge_header(tmp_path), 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing near the claimed sizes was allocated

    array = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    np.save(tmp_path / "good.npy", array)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:-1])
    with pytest.raises(UnreadableImage, match="promises 90 bytes .* the file holds 89"):
        load_image(tmp_path / "cut.npy", 3)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(array))  # Fortran order is read as numpy reads it
    np.testing.assert_array_equal(load_image(tmp_path / "fortran.npy", 3), (array / 255).astype(np.float32))


# -- the one pixel limit --------------------------------------------------------------------------------

def test_one_pixel_limit_for_the_loader_reconstruct_and_the_demo(tmp_path, capsys):
    bomb = hostile.png_claiming_size(tmp_path, 11000, 11000)
    limit = "11000x11000 = 121000000 pixels, over the limit of 89478485 pixels"
    with pytest.raises(UnreadableImage, match=limit):
        load_image(bomb, 3)

    from functools import partial

    from tests.viz.conftest import tiny_model
    from vitmae.demo import detect_upload, reconstruct_upload, segment_upload
    from vitmae.families.dense.detect import detect_image
    from vitmae.families.dense.segment import segment_image
    from vitmae.interop import save_vitmae
    from vitmae.model import ViTEncoder
    from vitmae.model.detection import vitdet
    from vitmae.model.segmentation import Segmenter

    model = tiny_model()
    save_vitmae(model, tmp_path / "checkpoint")
    assert main(["reconstruct", "--checkpoint", str(tmp_path / "checkpoint"), str(bomb),
                 "--out", str(tmp_path / "grid.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitmae reconstruct: error: ") and err.count("\n") == 1 and limit in err

    upload = Image.new("L", (11000, 11000))  # what gradio hands the demo: it decodes uploads itself
    with pytest.raises(DataError, match=limit):
        reconstruct_upload(model, (0.5,), (0.5,), upload, 0.75, 0, "random")
    with pytest.raises(DataError, match=limit):  # the view of a segmentation run
        segmenter = Segmenter(ViTEncoder(model.config), 2)
        segment_upload(partial(segment_image, segmenter, ["background", "item"], 28, 18), model.config, upload)
    with pytest.raises(DataError, match=limit):  # and of a detection run
        encoder = ViTEncoder(model.config.replace(mean=(0.5,), std=(0.5,)))
        detector = vitdet(encoder, 1, False, (28, 28), 7, pyramid_channels=8)
        detect_upload(partial(detect_image, detector, {1: "item"}), detector.config, upload)


def test_the_device_path_leaves_images_over_the_pixel_limit_to_load_image(monkeypatch):
    from vitmae.data import decode
    from vitmae.data.device_augment import jpeg_size

    jpeg = hostile.encoded("JPEG")  # 24x20
    assert jpeg_size(jpeg, 3) == (20, 24)
    monkeypatch.setattr(decode, "MAX_PIXELS", 479)  # the one limit, lowered: the GPU decoder must not take it
    assert jpeg_size(jpeg, 3) is None
    with pytest.raises(UnreadableImage, match="24x20 = 480 pixels, over the limit of 479 pixels"):
        load_image(jpeg, 3)


# -- 2. tar shards --------------------------------------------------------------------------------------

def test_shards_read_only_image_members_and_list_oversized_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 1 << 20)  # read at call time: an affordable test size
    url = hostile.shard_with_big_members(tmp_path, text_bytes=64 << 20, image_bytes=(1 << 20) + 1)
    tracemalloc.start()
    try:
        images, skipped = read_all(build_dataset(ShardSource(str(url)), TRANSFORM), batch_size=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images == 3 and peak < 16 << 20  # the 64 MiB caption was streamed past, never held
    assert skipped == {f"{url}#c": "member c.png (1048577 bytes) is over the limit of 1048576 bytes"}


def test_shard_member_names_never_touch_the_disk(tmp_path, monkeypatch):
    url = hostile.shard_with_traversal_names(tmp_path)
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # where a relative '../../escape.png' would land
    before = sorted(tmp_path.rglob("*"))
    dataset = build_dataset(ShardSource(str(url)), TRANSFORM)
    assert [index for _, _, index in dataset] == [0, 1]  # the two named samples; the link is no file
    assert sorted(tmp_path.rglob("*")) == before and not Path("/tmp/absolute.png").exists()


def test_a_skip_in_the_last_partial_batch_of_a_shard_is_listed(tmp_path, one_thread):
    """7 samples, the last unreadable; batches of 3 and 9 samples an epoch: the stream's last, partial
    batch is dropped (as always), but its skipped sample still reaches the run's skipped_files."""
    png = hostile.encoded("PNG")
    url = hostile.shard(tmp_path / "s.tar", [(f"k{i}.png", png if i < 6 else b"<html>") for i in range(7)])
    cfg = PretrainOptions(output=str(tmp_path / "run"), batch_size=3, num_workers=0, epochs=1, in_chans=3,
                         img_size=16, patch_size=4, samples_per_epoch=9, **TINY)
    model = MaskedAutoencoder(cfg.model_config())
    summary = Trainer(model, MAEObjective(0.75, "random", 4, seed=0, rank=0),
                      build_dataset(ShardSource(str(url)), TRANSFORM), cfg, samples_per_epoch=9).fit()
    assert summary["steps"] == 3 and summary["images"] == 9
    assert summary["skipped_files"] == [{"path": f"{url}#k6", "reason": "not an image in a format PIL can read"}]


# -- 3. CSV lists ---------------------------------------------------------------------------------------

@pytest.fixture
def listed(tmp_path) -> list[str]:
    hostile.rgb_folder(tmp_path / "img", 4, size=8)
    return [f"img/img{i:02d}.png" for i in range(4)]


def test_csv_that_is_not_utf8_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"latin1.csv is not UTF-8 text: byte 0xe9 on line 2 \(save it as UTF-8\)"):
        CsvSource(hostile.csv_not_utf8(tmp_path))


@pytest.mark.parametrize("header", ["filename,label", "path", "image,class_id", "file"])
def test_csv_header_rows_are_recognised_not_read_as_samples(tmp_path, listed, header):
    source = CsvSource(hostile.csv_with_header(tmp_path, listed, header))
    assert source.paths == [str(tmp_path / p) for p in listed] and source.labels == [0, 1, 0, 1]
    assert source.classes is None and num_classes_of(source) == 2


def test_a_first_row_that_names_a_file_or_has_an_integer_label_is_data(tmp_path, listed):
    (tmp_path / "a.csv").write_text("img/missing.png,1\n" + "".join(f"{p},0\n" for p in listed))
    assert len(CsvSource(tmp_path / "a.csv")) == 5  # a missing file is a skipped sample, not a header
    (tmp_path / "b.csv").write_text("".join(f"{p},{name}\n" for p, name in zip(listed, "xyxy")))
    assert CsvSource(tmp_path / "b.csv").classes == ["x", "y"]  # first row's path exists: data


@pytest.mark.parametrize("label, message", [
    (999999999, "line 2: label 999999999 would make 1000000000 classes for 3 distinct labels"),
    (5000, "line 2: label 5000 would make 5001 classes for 3 distinct labels"),
    (-3, "line 2: label -3 is negative"),
])
def test_csv_labels_that_would_size_a_huge_classifier_are_refused(tmp_path, listed, label, message):
    csv_path = hostile.csv_with_label(tmp_path, listed, label)
    with pytest.raises(DataError, match=message):
        CsvSource(csv_path)
    with pytest.raises(DataError, match=message):  # what finetune and linprobe build: stopped before a model
        labeled_splits(str(csv_path), None, 3)


def test_sparse_class_ids_are_accepted_up_to_the_documented_rule(tmp_path, listed):
    assert num_classes_of(CsvSource(hostile.csv_with_label(tmp_path, listed, 999))) == 1000  # <= 1000: always
    assert num_classes_of(CsvSource(hostile.csv_with_label(tmp_path, listed, 29))) == 30  # 3 distinct x 10


# -- 4. the folder walker -------------------------------------------------------------------------------

def test_link_loops_never_repeat_an_image_and_are_reported(tmp_path, caplog):
    root = hostile.folder_with_link_loops(tmp_path / "data")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="vitmae.data.files"):
        source = ImageFolderSource(root)
    assert time.perf_counter() - start < 5
    # a file reached under two names is listed under the first one of the sorted walk
    assert [os.path.relpath(p, root) for p in source.paths] == [
        "a/again.png", "a/img01.png", "a/img02.png", "b/only.png"]
    assert len({os.path.realpath(p) for p in source.paths}) == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"{root}: 2 symbolic link loop(s) not followed; 1 folder(s) and 1 file(s) reached again through links, "
        "scanned once"]


# -- 5. a run with no readable image --------------------------------------------------------------------

def test_a_run_on_unreadable_data_stops_with_the_reason(tmp_path, capsys):
    folder = hostile.rgb_folder(tmp_path / "rgb", 12)
    assert main(["pretrain", "--data", str(folder), "--in-chans", "4", "--img-size", "16", "--patch-size", "4",
                 "--batch-size", "4", "--heldout-samples", "8", "--num-workers", "0",
                 "--output", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "vitmae pretrain: error: no readable image in the held-out sample: 8 skipped "
        "(8x: 4 channels requested from PNG files (RGB); only .npy arrays can have 4)"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_engine_stops_when_an_epoch_trained_on_nothing(tmp_path, one_thread):
    folder = hostile.rgb_folder(tmp_path / "rgb", 8, size=16)
    for path in list(folder.iterdir())[:3]:
        path.write_bytes(b"")
    cfg = PretrainOptions(output=str(tmp_path / "run"), data=str(folder), batch_size=4, num_workers=0,
                         epochs=3, in_chans=4, img_size=16, patch_size=4, **TINY)
    dataset = build_dataset(ImageFolderSource(folder, in_chans=4), PretrainTransform(16, (0.5,) * 4, (0.5,) * 4))
    trainer = Trainer(MaskedAutoencoder(cfg.model_config()), MAEObjective(0.75, "random", 4, 0, 0), dataset, cfg)
    with pytest.raises(DataError, match=rf"^no readable image in {folder}: 8 skipped \(5x: 4 channels requested "
                                        r"from PNG files \(RGB\); only .npy arrays can have 4; 3x: empty file\)$"):
        trainer.fit()
    assert trainer.progress.step == 2 and not (tmp_path / "run" / "checkpoints").exists()

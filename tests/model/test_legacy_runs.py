"""Segmentation and detection runs written before the run records became typed (tests/fixtures/legacy,
made by the code of commit 3334152 with make_dense_legacy.py): their records, without a version, read as
version 0 and still rebuild the same models, which compute the same outputs (to float32 rounding, as the
legacy checkpoints)."""
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from vitmae.families import load_run
from vitmae.families.dense import DetectRecord, SegmentRecord
from vitmae.families.dense.segment import sliding_window_logits

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
CLOSE = dict(rtol=1.3e-6, atol=1e-5)


def test_a_legacy_segmentation_run_gives_the_same_logits():
    expected = load_file(LEGACY / "expected_dense.safetensors")
    run = load_run(LEGACY / "segment_run")
    assert run.kind == "segment" and run.checkpoint.name == "best"
    record = run.record
    assert isinstance(record, SegmentRecord) and record.version == 0 and record.num_classes == 11
    with torch.no_grad():
        for images, logits in (("segment_images", "segment_logits"), ("segment_large", "segment_large_logits")):
            assert_close(sliding_window_logits(run.model, expected[images], record.num_classes, record.crop_size,
                                               record.stride), expected[logits], **CLOSE)


def test_a_legacy_detection_run_gives_the_same_features_and_detections():
    expected = load_file(LEGACY / "expected_dense.safetensors")
    run = load_run(LEGACY / "detect_run")
    assert run.kind == "detect" and run.checkpoint.name == "step-00000002"
    record = run.record
    assert isinstance(record, DetectRecord) and record.version == 0 and record.files_recorded
    assert record.category_names == dict(zip(range(1, 11), record.classes))
    pictures = expected["detect_images"]
    with torch.no_grad():
        for name, level in run.model.backbone(pictures).items():
            assert_close(level, expected[f"detect_features_{name}"], **CLOSE)
        (found,) = run.model(list(pictures))
    assert set(found) == {"boxes", "labels", "scores", "masks"}
    assert torch.equal(found["labels"], expected["detect_0_labels"])
    for key in ("boxes", "scores", "masks"):
        assert_close(found[key], expected[f"detect_0_{key}"], rtol=1e-5, atol=1e-4)

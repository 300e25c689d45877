"""The dense runs' typed records: written and read back the same, the records of older runs read as version
0 with the keys added since at the values those runs had, and anything else refused in one line."""
from __future__ import annotations

import dataclasses
import json

import pytest

from vitmae.families import FAMILIES, run_family
from vitmae.families.dense import DetectRecord, SegmentRecord
from vitmae.families.run import find_record
from vitmae.interop import CheckpointError

VERSION = SegmentRecord.VERSION

COMMON = dict(classes=["background", "item"], pos_embed="sincos", data="fashion-scenes", scenes=16, val_scenes=4,
              scene_size=32, seed=0, model={"embed_dim": 16})
SEGMENT = SegmentRecord(num_classes=2, head="upernet", out_indices=[0, 0, 0, 1], crop_size=32, stride=21,
                        ignore_index=255, reduce_zero_label=False, head_channels=32, aux_channels=16, **COMMON)
DETECT = DetectRecord(**{**COMMON, "classes": ["item"]}, category_ids=[1], masks=True, img_size=[32, 32],
                      window_size=4, global_blocks=[0, 1], pyramid_channels=8, proposals=100, detections_per_image=10,
                      files=None)


@pytest.mark.parametrize("record", [SEGMENT, DETECT])
def test_a_record_reads_back_as_written_and_names_its_family(tmp_path, record):
    path = record.write(tmp_path / "run")
    assert path.name == record.FILE and json.loads(path.read_text())["version"] == record.VERSION
    assert "files_recorded" not in path.read_text()  # what the version says is not written
    (tmp_path / "run" / "checkpoints" / "step-1").mkdir(parents=True)
    spec, found = run_family(tmp_path / "run" / "checkpoints" / "step-1")
    assert found == record and spec is FAMILIES[record.KIND] and spec.record is type(record)


def test_records_from_before_the_version_read_as_version_0(tmp_path):
    old = {k: v for k, v in SEGMENT.to_dict().items() if k not in ("version", "pos_embed", "val_scenes")}
    (tmp_path / SegmentRecord.FILE).write_text(json.dumps(old))
    record = find_record(tmp_path, (SegmentRecord,))
    assert record.version == 0 and record.pos_embed == "sincos" and record.val_scenes is None
    assert record.class_names == ["background", "item"]
    assert SegmentRecord.from_dict({**old, "classes": None}, "x").class_names == ["0", "1"]
    # a detection record from before `files` was written says so; one written after has them
    old = {k: v for k, v in DETECT.to_dict().items() if k not in ("version", "files")}
    assert not DetectRecord.from_dict(old, "x").files_recorded
    assert DetectRecord.from_dict({**old, "files": None}, "x").files_recorded
    assert DETECT.category_names == {1: "item"}


def test_version_1_records_read_without_the_sizes_added_in_version_2():
    """Version 2 added how the sizes were chosen (the recipe, what was sized) and a detection run's RoIs per
    image; a version-1 record has none of them and reads with None."""
    for record, added in ((SEGMENT, ("recipe", "sized")), (DETECT, ("recipe", "sized", "rois_per_image"))):
        v1 = {k: v for k, v in record.to_dict().items() if k not in added} | {"version": 1}
        read = type(record).from_dict(v1, "x")
        assert read.version == 1 and all(getattr(read, name) is None for name in added)
    sized = dataclasses.replace(SEGMENT, recipe="auto", sized={"stride": "2/3 of the crop"})
    assert SegmentRecord.from_dict(json.loads(json.dumps(sized.to_dict())), "x") == sized


def test_anything_else_is_refused_in_one_line(tmp_path):
    values = SEGMENT.to_dict()
    with pytest.raises(CheckpointError, match=f"record version {VERSION + 1}; this vitmae reads up to {VERSION}: upgrade"):
        SegmentRecord.from_dict({**values, "version": VERSION + 1}, "segmenter.json")
    with pytest.raises(CheckpointError, match=rf"not a version-{VERSION} segmenter.json \(unknown keys \['colour'\]; "
                                              r"missing keys \['head'\]\)"):
        SegmentRecord.from_dict({**{k: v for k, v in values.items() if k != "head"}, "colour": 1}, "segmenter.json")
    (tmp_path / DetectRecord.FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        run_family(tmp_path)
    assert run_family(tmp_path / "elsewhere") is None  # no record: not a run of a family that keeps one

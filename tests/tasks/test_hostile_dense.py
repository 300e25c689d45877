"""Issue 24 at the task level: every hostile dense input the issue lists, run through `segment`, `detect`,
`evaluate` and `predict`, ends in exit code 2 and ONE line on stderr (no traceback), the output directory
not created. One row per case: (command, what to write, the flags, a fragment of the line). Most rows fail
before a model is built; the runs that evaluate and predict take are tiny."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from tests.synthetic_coco import write_coco
from tests.tasks.binary_masks import write_binary_masks
from vitmae.cli import main

ENCODER = ["--checkpoint", "none", "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--num-workers", "0",
           "--device", "cpu"]
SEGMENT = ["segment", *ENCODER, "--crop-size", "32", "--batch-size", "2", "--max-steps", "1"]
DETECT = ["detect", *ENCODER, "--img-size", "32", "--window-size", "4", "--pyramid-channels", "16",
          "--rois-per-image", "16", "--proposals", "20", "--detections-per-image", "5", "--batch-size", "2",
          "--max-steps", "1"]


# -- what the rows write ----------------------------------------------------------------------------------

def masks(edit: Callable[[Path], None] = lambda root: None) -> Callable[[Path], Path]:
    """A 2-class folder of 0/255 masks (read with --binary-masks), then `edit(root)`."""
    def write(tmp: Path) -> Path:
        root = write_binary_masks(tmp / "data", train=2, val=1)
        edit(root)
        return root
    return write


def classes_txt(data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / "classes.txt").write_bytes(data)


def every_train_mask(write_mask: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        for path in sorted((root / "train" / "masks").iterdir()):
            path.unlink()
            write_mask(path)
    return edit


def negative_tiff(path: Path) -> None:
    Image.fromarray(np.full((32, 32), -1, np.int32), mode="I").save(path.with_suffix(".tif"))


def rgb_mask(path: Path) -> None:
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path)


def empty_train(root: Path) -> None:
    for folder in ("images", "masks"):
        for path in (root / "train" / folder).iterdir():
            path.unlink()


def coco(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    """COCO 2017's layout (3 training, 2 validation images), the training file changed by `edit(data)`;
    returns the folder (its training JSON is ROOT/annotations/instances_train2017.json)."""
    def write(tmp: Path) -> Path:
        root = tmp / "coco"
        path = write_coco(root, "train2017", 3)
        write_coco(root, "val2017", 2, seed=1)
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return root
    return write


def train_json(root: Path) -> Path:
    return root / "annotations" / "instances_train2017.json"


def drop(key: str, index: int, field: str) -> Callable[[dict], None]:
    return lambda data: data[key][index].pop(field)


def put(key: str, index: int, **fields) -> Callable[[dict], None]:
    return lambda data: data[key][index].update(fields)


class Case(NamedTuple):
    command: str  # segment, detect, evaluate-segment, evaluate-detect, predict-detect
    write: Callable[[Path], Path]  # the data
    flags: tuple[str, ...]
    fragment: str  # of the one line
    env: dict[str, str] = {}


CASES = {
    # segmentation folders
    "classes.txt binary": Case("segment", masks(classes_txt(b"background\nob\0ject\n")), ("--binary-masks",),
                               "holds binary data (a NUL byte on line 2)"),
    "classes.txt Latin-1": Case("segment", masks(classes_txt("fond\nobjet élevé\n".encode("latin-1"))),
                                ("--binary-masks",), "is not UTF-8 text: byte 0xe9 on line 2"),
    "classes.txt of a million lines": Case("segment", masks(classes_txt(b"c\n" * 1_000_000)), (),
                                           "is over 1048576 bytes: not a list of at most"),
    "--num-classes in the billions": Case("segment", masks(lambda root: (root / "classes.txt").unlink()),
                                          ("--num-classes", "3000000000"), "the number of classes must be 1 to"),
    "16-bit TIFF masks of negative values": Case("segment", masks(every_train_mask(negative_tiff)), (),
                                                 "none of the 2 training masks can be read as classes"),
    "colour masks": Case("segment", masks(every_train_mask(rgb_mask)), ("--binary-masks",),
                         "none of the 2 training masks can be read as classes"),
    "an empty train/": Case("segment", masks(empty_train), ("--binary-masks",), "no image and mask pairs in"),
    "no train/": Case("segment", masks(lambda root: [p.rename(root / f"old-{p.name}")
                                                     for p in [root / "train"]]), ("--binary-masks",),
                      "segmentation data needs"),
    "0/255 masks read with 255 ignored": Case("segment", masks(), (), "pass --binary-masks to read 255 as class 1"),
    "--binary-masks with --mask-values": Case("segment", masks(), ("--binary-masks", "--mask-values", "0,255"),
                                              "give --binary-masks or --mask-values, not both"),
    "--out-indices negative": Case("segment", masks(), ("--binary-masks", "--out-indices=-1,0,1,1"),
                                   "--out-indices takes four block indices of the encoder's 2 blocks (0-1), each "
                                   "once; not -1,0,1,1: negative"),
    "--out-indices past the depth": Case("segment", masks(), ("--binary-masks", "--out-indices", "0,1,1,9"),
                                         "not 0,1,1,9: past the last block (1)"),
    "--out-indices repeated": Case("segment", masks(), ("--binary-masks", "--out-indices", "0,0,1,1"),
                                   "not 0,0,1,1: repeated"),
    "evaluate: classes.txt binary": Case("evaluate-segment", masks(classes_txt(b"\0\n")), (),
                                         "holds binary data"),
    "evaluate: an empty split": Case("evaluate-segment", masks(empty_train), (), "no image and mask pairs in"),
    # COCO files
    "a category without id": Case("detect", coco(drop("categories", 0, "id")), (), "categories[0] has no 'id'"),
    "category ids mixed": Case("detect", coco(put("categories", 1, id="7")), (),
                               "ids must be all integers or all strings"),
    "images an object": Case("detect", coco(lambda d: d.update(images={"0": d["images"][0]})), (),
                             "'images' is an object, not a list"),
    "images null": Case("detect", coco(lambda d: d.update(images=None)), (), "'images' is null, not a list"),
    "a file_name escaping the folder": Case("detect", coco(put("images", 1, file_name="../../etc/passwd")), (),
                                            "../../etc/passwd"),
    "a file over the size limit": Case("detect", coco(lambda d: None), (), "VITMAE_MAX_COCO_JSON_BYTES",
                                       {"VITMAE_MAX_COCO_JSON_BYTES": "100"}),
    "--global-blocks past the depth": Case("detect", coco(lambda d: None), ("--global-blocks", "0,9"),
                                           "--global-blocks takes block indices of the encoder's 2 blocks (0-1), "
                                           "each once; not 0,9: past the last block (1)"),
    "--global-blocks repeated": Case("detect", coco(lambda d: None), ("--global-blocks", "1,1"),
                                     "not 1,1: repeated"),
    "evaluate: images null": Case("evaluate-detect", coco(lambda d: d.update(images=None)), (),
                                  "'images' is null, not a list"),
    "evaluate: a category without id": Case("evaluate-detect", coco(drop("categories", 0, "id")), (),
                                            "categories[0] has no 'id'"),
    "predict: images an object": Case("predict-detect", coco(lambda d: d.update(images={"0": d["images"][0]})), (),
                                      "'images' is an object, not a list"),
    "predict: a file_name escaping the folder": Case("predict-detect",
                                                     coco(put("images", 0, file_name="/etc/passwd")), (),
                                                     "/etc/passwd"),
}


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory) -> Path:
    """One step of --binary-masks on a tiny folder: the run evaluate takes."""
    root = tmp_path_factory.mktemp("segment-run")
    data = write_binary_masks(root / "data", train=2, val=1)
    assert main([*SEGMENT, "--data", str(data), "--binary-masks", "--output", str(root / "run")]) == 0
    return root / "run"


def argv(case: Case, data: Path, out: Path, runs: dict[str, Callable[[], Path]]) -> list[str]:
    if case.command in ("segment", "detect"):
        return [*(SEGMENT if case.command == "segment" else DETECT), "--data", str(data), *case.flags,
                "--output", str(out)]
    run = runs[case.command.split("-")[1]]()
    if case.command.startswith("evaluate"):
        spec = train_json(data) if case.command == "evaluate-detect" else data
        return ["evaluate", "--checkpoint", str(run), "--data", str(spec), "--split", "train", "--device", "cpu",
                "--num-workers", "0", *case.flags, "--output", str(out)]
    return ["predict", str(train_json(data)), "--checkpoint", str(run), "--device", "cpu", "--num-workers", "0",
            *case.flags, "--out", str(out)]


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_dense_input_is_one_line_and_exit_2(name, tmp_path, capsys, caplog, monkeypatch, request,
                                                      one_thread):
    case = CASES[name]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    data = case.write(tmp_path)
    runs = {"segment": lambda: request.getfixturevalue("segment_run"),
            "detect": lambda: request.getfixturevalue("detection_run")}
    args = argv(case, data, tmp_path / "out", runs)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code = main(args)
    err = capsys.readouterr().err
    command = args[0]
    assert code == 2, err
    assert err.startswith(f"vitmae {command}: error: ") and err.count("\n") == 1, err
    assert case.fragment in err and "Traceback" not in err
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # nothing else said
    assert not (tmp_path / "out").exists()


def test_an_existing_output_directory_is_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*SEGMENT, "--data", str(masks()(tmp_path)), "--output", str(out)]) == 2
    assert "pass --binary-masks" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("batch_size, broken", [(1, False), (2, True)])
def test_upernet_trains_on_a_batch_of_one(tmp_path, batch_size, broken, one_thread):
    """Batch size 1, and batches of 2 that each lose one image to an unreadable file: the UperNet head's
    BatchNorm takes the single image (model/segmentation.py, HeadBatchNorm)."""
    data = write_binary_masks(tmp_path / "data", train=2, val=1)
    if broken:
        (data / "train" / "images" / "000.png").write_bytes(b"not a png")
    assert main([*SEGMENT, "--data", str(data), "--binary-masks", "--batch-size", str(batch_size),
                 "--max-steps", "2", "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["steps"] == 2 and summary["mIoU"] is not None


def test_malformed_annotations_are_left_out_warned_once_and_listed(tmp_path, caplog, one_thread):
    def two_bad(data: dict) -> None:
        data["annotations"][0].pop("bbox")
        data["annotations"][1]["segmentation"] = [[1, 2, 3]]

    root = coco(two_bad)(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert main([*DETECT, "--data", str(root), "--output", str(tmp_path / "run")]) == 0
    warned = [r.getMessage() for r in caplog.records if "malformed annotations" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"2 malformed annotations of {train_json(root)} left out")
    dropped = json.loads((tmp_path / "run" / "metrics.json").read_text())["annotations_dropped"]
    assert dropped["val"] == {"count": 0, "examples": []} and dropped["train"]["count"] == 2
    assert [e["annotation"] for e in dropped["train"]["examples"]] == [0, 1]
    assert all(e["reason"] for e in dropped["train"]["examples"])

"""`vitmae detect`, and `vitmae predict` and `vitmae evaluate` on its runs, end to end on small synthetic COCO
sets and the built-in scenes: a detector from scratch learns, a killed run resumes exactly, detections
round-trip through the COCO results JSON, evaluate measures what the run measured."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitmae.config import ConfigError, DetectOptions, EvaluateOptions, MakeDatasetOptions, PredictOptions
from vitmae.data.coco import coco_ground_truth, coco_metrics
from vitmae.data.fashion_mnist import FASHION_MNIST_CLASSES
from vitmae.tasks.detect import detect_run
from vitmae.tasks.evaluate import evaluate
from vitmae.tasks.make_dataset import make_dataset
from vitmae.tasks.predict import predict
from vitmae.train.checkpoint import load_checkpoint

from ..conftest import ROOT
from ..synthetic_coco import write_coco

# A detector small enough for a few steps per second on a 2-core CPU, on 32-px scenes (4-px patches: a
# pyramid of strides 1-16).
TINY = ["--checkpoint", "none", "--in-chans", "3", "--img-size", "32", "--patch-size", "4", "--embed-dim", "64",
        "--depth", "4", "--num-heads", "4", "--window-size", "4", "--batch-size", "8", "--jitter-scale", "1,1",
        "--num-workers", "0", "--pyramid-channels", "16", "--rois-per-image", "64", "--proposals", "100",
        "--detections-per-image", "20", "--device", "cpu"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_coco(root, "train2017", 48, seed=0, negatives=2)
    write_coco(root, "val2017", 16, seed=1)
    return root


@pytest.mark.slow  # about a minute on the shared 2-core machine
def test_a_detector_from_scratch_learns_and_its_detections_round_trip(run_cli, tmp_path, scenes):
    run = tmp_path / "run"
    result = run_cli("detect", "--data", scenes, "--output", run, *TINY, "--epochs", "8", "--lr", "1e-3",
                     "--warmup-epochs", "1", "--drop-path", "0", "--eval-every-epochs", "4")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["masks"] and metrics["classes"] == ["red-box", "green-ellipse"]  # --masks auto: Mask R-CNN
    assert metrics["box"]["AP50"] > 30 and metrics["mask"]["AP50"] > 15, (metrics["box"], metrics["mask"])
    assert [h["step"] for h in metrics["history"]] == [24, 48]
    assert metrics["history"][0]["box"]["AP"] < metrics["box"]["AP"]  # it was still learning
    assert set(metrics["box"]["per_class"]) == {"red-box", "green-ellipse"}
    assert metrics["train_data"]["images_without_objects"] == 2 and metrics["strides"] == [1, 2, 4, 8, 16]
    assert "box AP" in result.stdout

    # The run's detections of the validation set, written as COCO results, score what the run measured.
    out = tmp_path / "predict"
    val_json = scenes / "annotations" / "instances_val2017.json"
    run_cli("predict", "--checkpoint", run, val_json, "--image-root", scenes / "val2017", "--out", out, "--device",
            "cpu", "--num-workers", "0")
    results = json.loads((out / "detections.json").read_text())
    gt = coco_ground_truth(val_json)
    assert coco_metrics(gt, results, "bbox")["AP"] == pytest.approx(metrics["box"]["AP"], abs=1e-6)
    assert coco_metrics(gt, results, "segm")["AP"] == pytest.approx(metrics["mask"]["AP"], abs=1e-6)
    assert {r["category_id"] for r in results} <= {3, 7}
    drawn = sorted((out / "images").glob("*.png"))
    assert len(drawn) == 16 and Image.open(drawn[0]).size == (32, 32)
    # and so does evaluate, from the run alone
    report = evaluate(EvaluateOptions(checkpoint=str(run), output=str(tmp_path / "evaluate"), device="cpu",
                                     num_workers=0))
    assert report["run"] == "detect" and report["images"] == 16
    assert report["box"] == metrics["box"] and report["mask"] == metrics["mask"]

    # A folder of real photos, of any size: drawn at their own size.
    from skimage import data_dir

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(Path(data_dir) / "coffee.png", photos)
    run_cli("predict", "--checkpoint", run, photos, "--out", tmp_path / "photos-out", "--device", "cpu",
            "--num-workers", "0", "--score-threshold", "0")
    (picture,) = (tmp_path / "photos-out" / "images").glob("*.png")
    assert Image.open(picture).size == Image.open(photos / "coffee.png").size


def test_a_killed_run_resumes_exactly(run_cli, tmp_path, scenes):
    options = ["--data", scenes, *TINY, "--epochs", "2", "--masks", "off", "--save-every-steps", "2",
               "--keep-checkpoints", "0", "--log-every-steps", "2"]  # all kept: a pruned step 4 could pass unseen
    run_cli("detect", "--output", tmp_path / "whole", *options)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "vitmae", "detect", "--output", str(killed), *map(str, options)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"  # replaced atomically once a checkpoint is complete and in place
    while not (latest.is_file() and int(latest.read_text().split("-")[1]) >= 4) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(killed)[1]["progress"]["step"]
    assert 4 <= stopped_at < 12
    run_cli("detect", "--resume", killed)
    whole, whole_state, _, _ = load_checkpoint(tmp_path / "whole")
    resumed, resumed_state, _, _ = load_checkpoint(killed)
    assert resumed_state["progress"]["step"] == 12 and set(whole) == set(resumed)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    def untimed(history):
        return [{k: v for k, v in entry.items() if k != "time_s"} for entry in history]

    assert untimed(resumed_state["extra"]["coco"]) == untimed(whole_state["extra"]["coco"])


def test_detect_on_the_built_in_scenes_and_evaluate_the_run(run_cli, tmp_path):
    """No make-dataset step: the scenes' boxes and instance masks train Mask R-CNN directly. Evaluate scores
    the run as it scored itself, and so do its detections (predict) of the same scenes as make-dataset
    writes them, against the COCO JSON make-dataset writes."""
    run = tmp_path / "run"
    run_cli("detect", "--data", "fashion-scenes", "--scenes", "16", "--scene-size", "32", *TINY, "--max-steps", "2",
            "--output", run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == FASHION_MNIST_CLASSES and metrics["category_ids"] == list(range(1, 11))
    assert metrics["masks"] and metrics["steps"] == 2 and (metrics["train_images"], metrics["val_images"]) == (16, 3)
    assert metrics["val"] == "fashion-scenes val (3 scenes of 32 px, seed 0)" and "mask" in metrics
    report = evaluate(EvaluateOptions(checkpoint=str(run), output=str(tmp_path / "evaluate"), device="cpu",
                                     num_workers=0))
    assert report["images"] == 3 and report["box"] == metrics["box"] and report["mask"] == metrics["mask"]
    written = tmp_path / "written"
    make_dataset(MakeDatasetOptions(name="fashion-scenes", out=str(written), num=16, size=32))
    val_json = written / "annotations" / "instances_val.json"
    predict(PredictOptions(images=[str(val_json)], checkpoint=str(run), image_root=str(written),
                          out=str(tmp_path / "predict"), device="cpu", num_workers=0))
    results = json.loads((tmp_path / "predict" / "detections.json").read_text())
    gt = coco_ground_truth(val_json)
    assert coco_metrics(gt, results, "bbox") == metrics["box"] and coco_metrics(gt, results, "segm") == metrics["mask"]


def test_data_options_give_one_line_errors(run_cli, tmp_path, scenes):
    result = run_cli("detect", *TINY, "--output", tmp_path / "r", "--train-json", "x.json", check=False)
    assert result.returncode == 2 and "give all of --train-json" in result.stderr
    result = run_cli("detect", *TINY, "--output", tmp_path / "r", "--data", tmp_path, check=False)
    assert result.returncode == 2 and "instances_train*.json, found none" in result.stderr
    with pytest.raises(ConfigError, match="two factors"):
        DetectOptions(jitter_scale=(2.0, 1.0))
    assert DetectOptions(global_blocks="1,3").global_blocks == (1, 3)  # block indices stay integers
    with pytest.raises(ConfigError, match="takes integers like 2,5,8"):
        DetectOptions(global_blocks="1.5")
    boxes_only = tmp_path / "boxes"
    write_coco(boxes_only, "train2017", 4)
    write_coco(boxes_only, "val2017", 2)
    data = json.loads((boxes_only / "annotations" / "instances_train2017.json").read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    (boxes_only / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="--masks on: not every object"):
        detect_run(DetectOptions(data=str(boxes_only), checkpoint="none", masks="on", in_chans=3, img_size=(32, 32),
                                patch_size=4, output=str(tmp_path / "r")))

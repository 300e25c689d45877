"""`vitmae segment` through the engine: a tiny run learns the scenes and draws its predictions at each
evaluation, which its report shows; an MAE-initialised run killed with SIGKILL resumes bit-exactly; the
CLI's one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.viz.test_report import Page, images_of
from vitmae.data.scenes import FashionScenesSource
from vitmae.interop import export
from vitmae.model import create_model
from vitmae.families import load_run
from vitmae.families.dense.segment import SegmentationMetrics, predicted_mask
from vitmae.train.run_dir import run_checkpoint
from vitmae.train.checkpoint import load_checkpoint
from vitmae.viz import write_report
from vitmae.viz.dense import segmentation_grid
from vitmae.viz.report import read_series

from ..conftest import ROOT
from .conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_tiny_run_from_scratch_beats_the_majority_class(learned_segmentation_run):
    run = learned_segmentation_run
    summary = json.loads((run / "metrics.json").read_text())
    # the majority class (background everywhere) on the same validation scenes
    majority = SegmentationMetrics(11)
    for _, mask in FashionScenesSource("val", 64, 32, seed=0):
        mask = torch.from_numpy(mask).long()
        majority.update(torch.zeros_like(mask), mask)
    floor = majority.compute()
    assert summary["mIoU"] > floor["mIoU"] + 2 and summary["mAcc"] > floor["mAcc"] + 4
    assert summary["aAcc"] > floor["aAcc"]
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4, 5, 6]
    assert set(summary["per_class"]) == set(FashionScenesSource.classes)
    assert summary["best"]["mIoU"] == max(h["mIoU"] for h in summary["history"])
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    assert list((run / "tensorboard").iterdir())
    record = json.loads((run / "segmenter.json").read_text())  # what predict and evaluate rebuild from
    assert record["classes"] == FashionScenesSource.classes and record["num_classes"] == 11
    assert (record["crop_size"], record["stride"], record["out_indices"]) == (32, 21, [0, 0, 0, 1])
    assert record["model"]["mean"] == [0.5] and record["data"] == "fashion-scenes" and record["scenes"] == 320


def test_each_evaluation_draws_its_predictions_and_the_report_shows_them(learned_segmentation_run, tmp_path):
    run = learned_segmentation_run
    history = json.loads((run / "metrics.json").read_text())["history"]
    captions = [f"epoch {h['epoch']:g}, step {h['step']}: mIoU {h['mIoU']:.2f}" for h in history]
    grids = sorted((run / "predictions").iterdir())
    assert [grid.name for grid in grids] == [f"epoch-{h['epoch']:03g}.png" for h in history]
    for grid, caption, entry in zip(grids, captions, history):
        with Image.open(grid) as picture:
            assert picture.text == {"caption": caption, "step": str(entry["step"])}
            # 8 rows of image | true mask | predicted mask (32-px scenes at 5x), with titles and a legend
            assert 0 < picture.height - 8 * 160 < 120 and 0 < picture.width - 3 * 160 < 200
    # The last grid: the final weights' predictions on the first 8 validation scenes, drawn again here.
    final = load_run(run_checkpoint(str(run), "last"))
    scenes = [FashionScenesSource("val", 64, 32, seed=0)[i] for i in range(8)]
    images = [torch.from_numpy(np.asarray(image, np.float32) / 255)[None] for image, _ in scenes]
    predictions = [predicted_mask(final.model, (image - 0.5) / 0.5, 11, 32, 21) for image in images]
    again = segmentation_grid(images, [mask for _, mask in scenes], predictions, final.record.class_names, captions[-1])
    assert np.array_equal(np.asarray(Image.open(grids[-1])), np.asarray(again))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [event.step for event in events.Images("predictions")] == [h["step"] for h in history]

    text = write_report(run, tmp_path / "report.html").read_text()
    shown = images_of(Page(text))
    assert {"plot-segmentation", *(f"predictions-{grid.stem}" for grid in grids)} <= set(shown)
    assert all(f"<figcaption>{caption}</figcaption>" in text for caption in captions)
    assert read_series(run)["val_mIoU"] == ([h["step"] for h in history], [h["mIoU"] for h in history])


def test_an_mae_run_killed_by_sigkill_resumes_bit_exactly(run_cli, tmp_path):
    torch.manual_seed(0)
    mae = export(create_model("mae_vit_micro_patch4_28", **TINY, decoder_embed_dim=32, decoder_depth=1,
                              decoder_num_heads=2), tmp_path / "mae", "vitmae").parent
    # 3 epochs of 5 steps, a checkpoint every 2 steps, all kept (a pruned step 4 could pass unseen)
    options = ["--checkpoint", mae, "--scene-size", "32", "--scenes", "40", "--batch-size", "8", "--epochs", "3",
               "--save-every-steps", "2", "--keep-checkpoints", "0", "--num-workers", "0", "--device", "cpu"]
    run_cli("segment", "--output", tmp_path / "whole", *options)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vitmae", "segment", "--output", str(killed), *map(str, options)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-00000004").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its 4th step was saved"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()  # killed mid-run
    run_cli("segment", "--resume", killed)  # everything else from the run's config.yaml
    whole, whole_state, _, _ = load_checkpoint(tmp_path / "whole")
    resumed, resumed_state, _, _ = load_checkpoint(killed)
    assert resumed_state["progress"]["step"] == whole_state["progress"]["step"] == 15
    assert whole.keys() == resumed.keys() and "head.classifier.1.weight" in whole
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert resumed_state["extra"]["history"] == whole_state["extra"]["history"]


def test_bad_options_are_one_line_errors(run_cli, tmp_path):
    result = run_cli("segment", "--checkpoint", "none", "--data", tmp_path / "nowhere", "--output", tmp_path / "run",
                     check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not 'fashion-scenes' nor an existing folder" in result.stderr
    result = run_cli("segment", "--checkpoint", "none", "--out-indices", "0,1", "--output", tmp_path / "run",
                     "--scenes", "5", check=False)
    assert result.returncode == 2 and "--out-indices takes four block indices" in result.stderr


def test_a_folder_with_a_bad_mask_and_sliding_windows(tmp_path, run_cli):
    """make-dataset's layout trains as it is; a bad validation mask is listed, not fatal; validation
    images larger than the crop go through sliding windows."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "scenes"
    run_cli("make-dataset", "fashion-scenes", "--out", data, "--num", "16", "--size", "32")
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(data / "val" / "masks" / "000001.png")  # RGB
    run_cli("segment", "--checkpoint", "none", "--data", data, "--in-chans", "1", "--embed-dim", "32", "--depth",
            "2", "--num-heads", "2", "--crop-size", "24", "--stride", "8", "--batch-size", "8", "--epochs", "1",
            "--num-workers", "0", "--device", "cpu", "--output", tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["crop_size"] == 24 and summary["stride"] == 8 and summary["val_images"] == 3
    assert [s["path"].rsplit("/", 1)[1] for s in summary["val_skipped_files"]] == ["000001.png"]
    assert "masks must be index PNGs" in summary["val_skipped_files"][0]["reason"]
    assert summary["classes"][0] == "background" and summary["mIoU"] is not None


def test_two_process_ddp_on_cpu(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29541", "-m", "vitmae", "segment", "--checkpoint", "none",
                             "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--scene-size", "32",
                             "--scenes", "40", "--batch-size", "4", "--max-steps", "3", "--num-workers", "0",
                             "--device", "cpu", "--output", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3 and metrics["images"] == 3 * 8
    assert metrics["mIoU"] is not None and len(list((out / "checkpoints").glob("step-*"))) == 1

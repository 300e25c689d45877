"""`vitmae segment` through the engine: a tiny run learns the scenes; an MAE-initialised run resumes
bit-exactly; the CLI's one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vitmae.data.scenes import FashionScenesSource
from vitmae.interop import export
from vitmae.model import create_model
from vitmae.tasks.segment import SegmentConfig, segment
from vitmae.train.segmentation_metrics import SegmentationMetrics

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(embed_dim=32, depth=2, num_heads=2)


def test_a_tiny_run_from_scratch_beats_the_majority_class(tmp_path):
    cfg = SegmentConfig(checkpoint="none", scene_size=32, scenes=320, batch_size=32, epochs=6, lr=2e-3,
                        warmup_epochs=0.5, num_workers=0, device="cpu", output=str(tmp_path), **TINY)
    summary = segment(cfg)
    # the majority class (background everywhere) on the same validation scenes
    majority = SegmentationMetrics(11)
    for _, mask in FashionScenesSource("val", 64, 32, seed=0):
        mask = torch.from_numpy(mask).long()
        majority.update(torch.zeros_like(mask), mask)
    floor = majority.compute()
    assert summary["mIoU"] > floor["mIoU"] + 2 and summary["mAcc"] > floor["mAcc"] + 4
    assert summary["aAcc"] > floor["aAcc"]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in written["history"]] == [1, 2, 3, 4, 5, 6]
    assert set(written["per_class"]) == set(FashionScenesSource.classes)
    assert written["best"]["mIoU"] == max(h["mIoU"] for h in written["history"])
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    assert list((tmp_path / "tensorboard").iterdir())


def test_an_mae_run_resumes_bit_exactly(tmp_path):
    torch.manual_seed(0)
    mae = export(create_model("mae_vit_micro_patch4_28", **TINY, decoder_embed_dim=32, decoder_depth=1,
                              decoder_num_heads=2), tmp_path / "mae", "vitmae").parent

    def run(out, **options):
        return segment(SegmentConfig(checkpoint=str(mae), scene_size=32, scenes=40, batch_size=8, epochs=2,
                                     num_workers=0, device="cpu", output=str(out), **options))

    whole = run(tmp_path / "whole")
    run(tmp_path / "parts", max_steps=7)  # stops inside epoch 2 (5 steps per epoch)
    resumed = run(tmp_path / "parts", resume=str(tmp_path / "parts"))
    assert resumed["steps"] == whole["steps"] == 10
    final = {name: load_file(next((tmp_path / name / "checkpoints").glob("step-00000010")) / "model.safetensors")
             for name in ("whole", "parts")}
    assert final["whole"].keys() == final["parts"].keys() and "head.classifier.1.weight" in final["whole"]
    assert all(torch.equal(final["whole"][k], final["parts"][k]) for k in final["whole"])
    assert resumed["mIoU"] == whole["mIoU"]


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

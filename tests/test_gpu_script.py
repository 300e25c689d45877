"""scripts/gpu_session.sh, dry run: every piece of both GPU stages, with the same command lines at toy size on
the CPU, so that a typo or a changed flag shows here and not on a lent GPU (where minutes are few)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_session.sh"
STANDING = ["environment", "vit_b16", "vit_l16", "jpegs", "pipeline_device", "cuda_tests", "plan_vit_b16",
            "plan_vit_l16"]  # in this order
OPTIONAL = ["fsdp_vit_l16", "pipeline_workers", "vit_b16_fp8"]  # only with time left over


def run_script(*args: str, out: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OUT": str(out), "PY": sys.executable, **env}
    environ.pop("PYTHONPATH", None)  # the script sets its own (the checkout's src first)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=environ, cwd=ROOT)


def dry_run(stage: str, out: Path, **env: str) -> dict:
    result = run_script("--dry-run", stage, out=out, **env)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    data = json.loads((out / f"{stage}.json").read_text())
    assert data["stage"] == stage and data["dry_run"] is True
    assert len(list(out.iterdir())) <= 8  # the GPU tool returns at most 8 files
    return data


def test_the_script_parses_and_refuses_unknown_stages(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    result = run_script("benchmark", out=tmp_path)
    assert result.returncode == 2 and "unknown stage benchmark" in result.stderr
    assert run_script(out=tmp_path).returncode == 2  # no stage: usage


def test_the_quality_stage_names_a_scale_that_exists():
    """The dry run swaps the scale for `tiny`; the GPU's scale must exist and build its configurations."""
    from vitmae.config import FinetuneOptions, LinprobeOptions, PretrainOptions

    from .experiments.test_label_efficiency import SCALES

    text = SCRIPT.read_text()
    scale = re.search(r"QUALITY_SCALE=\$\{QUALITY_SCALE:-(\w+)\}", text).group(1)
    assert '$LABEL_EFFICIENCY --scale "$QUALITY_SCALE"' in text
    assert scale in SCALES
    s = SCALES[scale]
    assert PretrainOptions(**s.model, **s.pretrain).model_config().num_patches == 49
    FinetuneOptions(**s.finetune)
    LinprobeOptions(**s.linprobe)


@pytest.mark.slow
def test_standing_dry_run_runs_every_piece_and_records_it(tmp_path):
    out = tmp_path / "out"
    data = dry_run("standing", out)
    assert sorted(p.name for p in out.iterdir()) == ["standing.json", "standing.log"]
    pieces = data["pieces"]
    names = [name for name in pieces if name != "wheels"]  # wheels: only where .whl/ holds some
    assert names == STANDING + OPTIONAL
    for name in STANDING + ["pipeline_workers", "fsdp_vit_l16"]:
        assert pieces[name]["status"] == "ok", (name, pieces[name])
        assert pieces[name]["predicted_s"] > 0 and pieces[name]["seconds"] > 0
    # Under 9 minutes on the GPU, as predicted in the script: the pieces that always run.
    mandatory = sum(pieces[name]["predicted_s"] for name in pieces if name not in OPTIONAL)
    assert mandatory <= data["budget_s"] < 540

    assert pieces["environment"]["result"]["versions"]["torch"]
    for name, impls in (("vit_b16", ["vitmae", "hf", "hf-compiled"]), ("vit_l16", ["vitmae", "hf"])):
        report = pieces[name]["result"]
        assert [r["impl"] for r in report["results"]] == impls  # compiled contenders run eagerly in the dry run
        losses = [r["first_loss"] for r in report["results"]]
        assert losses == pytest.approx([losses[0]] * len(losses), rel=1e-5)  # same weights, batch, noise
        for r in report["results"]:
            assert r["img_s"] > 0 and r["mfu"] is not None  # --peak-tflops given
        assert report["config"]["batch_size"] == 4 and report["config"]["device"] == "cpu"
    for name, where in (("pipeline_device", "device"), ("pipeline_workers", "workers")):
        pipeline = pieces[name]["result"]["pipeline"]
        assert pipeline["augment_on"] == where
        assert pipeline["pipeline_img_s"] > 0 and pipeline["end_to_end_img_s"] > 0
    for name, checkpointing in (("plan_vit_b16", False), ("plan_vit_l16", True)):
        plan = pieces[name]["result"]  # the plan, and the memory of the steps measured next to it
        assert plan["grad_checkpointing"] is checkpointing and plan["batch_size"] == 4
        assert plan["measured"]["steps"] == 3 and plan["measured"]["device"] == "cpu"
        # on a CPU, a checkpointed block also keeps the CPU random state (on a GPU: host memory)
        arch = plan["architecture"]
        rng_states = (arch["depth"] + arch["decoder_depth"]) * torch.get_rng_state().numel() if checkpointing else 0
        assert plan["measured"]["forward_bytes"] == pytest.approx(plan["bytes"]["activations"] + rng_states,
                                                                  rel=0.02)
        assert plan["measured"]["max_allocated"] is None  # on a GPU: torch.cuda.max_memory_allocated
    tests = pieces["cuda_tests"]["result"]
    assert tests["collected_count"] == len(tests["collected"]) >= 5
    assert "tests/test_bench.py::test_bench_on_the_gpu_reports_memory_and_matches_transformers_in_bf16" in tests["collected"]
    fsdp = pieces["fsdp_vit_l16"]["result"]  # the run's metrics.json
    assert fsdp["strategy"] == "fsdp" and fsdp["steps"] == 2
    fp8 = pieces["vit_b16_fp8"]
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        assert fp8["status"].startswith("skipped: torchao")
    else:
        assert fp8["status"] == "ok" and [r["impl"] for r in fp8["result"]["results"]] == ["vitmae-fp8", "hf"]
    log = (out / "standing.log").read_text()
    assert "--model mae_vit_base_patch16 --batch-size 256 --precision bf16" in log  # the real command lines
    assert "plan --model mae_vit_large_patch16 --batch-size 128 --precision bf16 --grad-checkpointing" in log


@pytest.mark.slow
def test_quality_dry_run_writes_the_table_and_a_second_call_continues(tmp_path):
    run_dir = tmp_path / "label-efficiency"
    out = tmp_path / "out"
    dense_dir = tmp_path / "dense-transfer"
    data = dry_run("quality", out, QUALITY_DIR=str(run_dir), DENSE_DIR=str(dense_dir))
    assert sorted(p.name for p in out.iterdir()) == [
        "dense-metrics.json", "dense-report.md", "quality-accuracy_vs_labels.png", "quality-metrics.json",
        "quality-pretraining.png", "quality-report.md", "quality.json", "quality.log"]
    assert list(data["pieces"]) == ["label_efficiency", "dense_transfer"]
    assert data["pieces"]["dense_transfer"]["status"] == "ok"
    dense = json.loads((out / "dense-metrics.json").read_text())
    assert dense["scale"] == "tiny" and {"segment_mae", "detect_scratch"} <= set(dense["table"][0])
    piece = data["pieces"]["label_efficiency"]
    assert piece["status"] == "ok" and piece["predicted_s"] <= data["budget_s"]
    summary = piece["result"]
    assert summary["scale"] == "tiny" and [row["labels"] for row in summary["table_top1"]] == [40, 400]
    assert {"finetune_mae", "finetune_scratch", "linprobe_mae", "knn_mae"} <= set(summary["table_top1"][0])
    assert {(t["method"], t["target"]) for t in summary["against_targets"]} >= {("finetune_mae", 87.0),
                                                                                ("linprobe_mae", 89.0),
                                                                                ("knn_mae", 88.5)}

    # A call cut off during pre-training (checkpoint, no metrics.json) and a fine-tuning run: the next
    # call resumes the pre-training and redoes only what is missing.
    (run_dir / "pretrain" / "metrics.json").unlink()
    shutil.rmtree(run_dir / "f1" / "finetune_scratch")
    again = dry_run("quality", tmp_path / "again", QUALITY_DIR=str(run_dir), DENSE_DIR=str(dense_dir))
    assert list(again["pieces"]) == ["pretrain_resume", "label_efficiency", "dense_transfer"]
    assert all(p["status"] == "ok" for p in again["pieces"].values())
    assert (run_dir / "pretrain" / "metrics.json").is_file()
    result = again["pieces"]["label_efficiency"]["result"]
    assert list(result["stage_times_s"]) == ["fine-tune scratch 1"]
    assert [row["labels"] for row in result["table_top1"]] == [40, 400]
    dense_again = json.loads((tmp_path / "again" / "dense-metrics.json").read_text())
    assert dense_again["stage_times_s"] == {} and dense_again["table"] == dense["table"]  # all reused


@pytest.mark.slow
def test_video_dry_run_compares_with_transformers_videomae(tmp_path):
    out = tmp_path / "out"
    data = dry_run("video", out)
    piece = data["pieces"]["video_vit_b16"]
    assert piece["status"] == "ok" and piece["predicted_s"] <= 240  # with standing's 470 s, under 15 minutes
    report = piece["result"]
    assert [r["impl"] for r in report["results"]] == ["vitmae", "hf", "hf-compiled"]
    losses = [r["first_loss"] for r in report["results"]]
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-5)  # VideoMAE's target on both sides
    log = (out / "video.log").read_text()
    assert "--model videomae_vit_base_patch16 --batch-size 32 --precision bf16" in log

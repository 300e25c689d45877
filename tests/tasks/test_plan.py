"""`vitmae plan`: the table, the JSON, the fit against a GPU's memory, and the measurement next to the plan."""
from __future__ import annotations

import importlib.util
import json

import pytest

from vitmae.errors import ConfigError
from vitmae.tasks.plan import PlanOptions, parse_bytes

from ..conftest import ROOT, TINY_MODEL_FLAGS

TINY = ["--model", "mae_vit_tiny_patch16", "--img-size", "32", "--patch-size", "4", *TINY_MODEL_FLAGS]


def test_the_plan_prints_a_table_writes_json_and_matches_a_measured_cpu_run(run_cli, tmp_path):
    out = tmp_path / "plan.json"
    result = run_cli("plan", *TINY, "--batch-size", "8", "--precision", "fp32", "--measure-steps", "2",
                     "--device", "cpu", "--gpu-memory", "24GiB", "--json", out)
    plan = json.loads(out.read_text())
    b = plan["bytes"]
    assert plan["training"] == "pretrain" and plan["strategy"] == "ddp" and plan["precision"] == "fp32"
    assert plan["encoder_tokens"] == 64 // 4 + 1  # the visible quarter of 64 patches, and the cls token
    assert b["total"] == sum(b[k] for k in ("parameters", "gradients", "optimizer", "buckets", "compute_weights",
                                            "activations", "recompute"))
    assert plan["fits"] and plan["usable"] == int(24 * 2**30 * 0.9)
    measured = plan["measured"]
    assert measured["device"] == "cpu" and measured["max_allocated"] is None
    assert measured["forward_bytes"] == pytest.approx(b["activations"], rel=0.02)
    assert measured["state_bytes"] == b["parameters"] + b["optimizer"]
    lines = result.stdout.splitlines()
    assert lines[1].startswith("per GPU, at batch 8 on 1 GPU(s)")
    assert [line.split()[0] for line in lines[2:8]] == ["parameters", "gradients", "optimizer", "activations",
                                                        "total", "fits"]
    assert "yes" in lines[7] and lines[8].startswith("measured over 2 steps on cpu")


def test_fsdp_on_eight_gpus_shards_the_states_and_a_small_gpu_does_not_fit(run_cli):
    result = run_cli("plan", *TINY, "--training", "finetune", "--num-classes", "10", "--gpus", "8",
                     "--strategy", "fsdp", "--grad-checkpointing", "--gpu-memory", "1MiB")
    assert "fsdp, bf16, with activation checkpointing" in result.stdout
    assert "1/8 each" in result.stdout and "FSDP unsharded" in result.stdout and "recomputation" in result.stdout
    assert "fits in 0.0009766 GiB" in result.stdout and ": no, " in result.stdout


@pytest.mark.parametrize("text,expected", [("80GiB", 80 * 2**30), ("141 GB", 141 * 10**9), ("24576MiB", 24 * 2**30),
                                           ("80", 80 * 2**30), ("1.5gib", 3 * 2**29)])
def test_gpu_memory_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("options,message", [
    ({"gpu_memory": "80 apples"}, "--gpu-memory takes a size like 80GiB"),
    ({"measure_steps": 2, "gpus": 2}, "--measure-steps trains one process"),
])
def test_options_a_plan_cannot_use_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        PlanOptions(**options)


def test_a_refusal_is_one_line_and_exit_code_2(run_cli):
    result = run_cli("plan", "--gpu-memory", "lots", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_the_readme_quotes_the_planner_for_vit_b():
    """The README's tables come from scripts/scaling_numbers.py; its ViT-B pre-training row, recomputed."""
    spec = importlib.util.spec_from_file_location("scaling_numbers", ROOT / "scripts" / "scaling_numbers.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    block = scaling.readme_block(scaling.README.read_text())
    assert scaling.row("ViT-B/16", "pretrain") in block.splitlines()

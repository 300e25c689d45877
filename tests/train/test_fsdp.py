"""`--strategy fsdp` as a user runs it: `torchrun` over gloo on the CPU, the same training as DDP, sharded
checkpoints that survive SIGKILL, resume on another number of processes, fall back past a damaged shard
and read back whole anywhere (load_pretrained, convert)."""
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

import vitmae
from tests.conftest import ROOT, TINY_MODEL_FLAGS
from vitmae.interop.vitmae_format import load_vitmae

pytestmark = pytest.mark.slow

STEPS = 20
RUN = [*TINY_MODEL_FLAGS, "--data", "fashion-mnist", "--batch-size", "8", "--num-workers", "0", "--epochs", "1",
       "--heldout-samples", "8", "--viz-every-epochs", "0", "--log-every-steps", "1", "--max-steps", str(STEPS),
       "--save-every-steps", "2", "--keep-checkpoints", "0", "--blr", "1e-2", "--warmup-epochs", "0"]


def torchrun(nproc: int, port: int, *args, wait: bool = True):
    """`torchrun --nproc-per-node N -m vitmae pretrain ARGS`, one thread each; the result, or the process
    (in a session of its own, for a kill of the whole group) with `wait=False`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(port), "-m", "vitmae", "pretrain", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same 20 steps on 2 processes under ddp and under fsdp (every second step saved and kept)."""
    root = tmp_path_factory.mktemp("fsdp")
    torchrun(2, 29561, *RUN, "--output", root / "ddp")
    torchrun(2, 29562, *RUN, "--strategy", "fsdp", "--output", root / "fsdp")
    return {"ddp": root / "ddp", "fsdp": root / "fsdp"}


def test_fsdp_trains_as_ddp_does(runs):
    ddp, fsdp = losses(runs["ddp"]), losses(runs["fsdp"])
    assert len(ddp) == len(fsdp) == STEPS
    assert max(abs(a - b) for a, b in zip(ddp, fsdp)) < 1e-5
    assert fsdp[-1] < fsdp[0]  # it learns
    metrics = json.loads((runs["fsdp"] / "metrics.json").read_text())
    assert metrics["strategy"] == "fsdp" and metrics["world_size"] == 2
    checkpoint = runs["fsdp"] / "checkpoints" / f"step-{STEPS:08d}"
    assert not (checkpoint / "model.safetensors").exists()  # no gather onto rank 0: a shard per rank
    assert len(list((checkpoint / "sharded").glob("*.distcp"))) == 2
    whole_ddp, _ = load_vitmae(runs["ddp"])
    whole_fsdp, config = load_vitmae(runs["fsdp"])  # consolidated in this one process
    assert whole_ddp.keys() == whole_fsdp.keys()
    assert all(torch.allclose(whole_ddp[k], whole_fsdp[k], atol=1e-5, rtol=0) for k in whole_ddp)
    assert config.embed_dim == 32


def test_a_sharded_run_killed_by_sigkill_resumes_bit_exactly_on_two_processes(runs, tmp_path):
    killed = tmp_path / "killed"
    proc = torchrun(2, 29563, *RUN, "--strategy", "fsdp", "--output", killed, wait=False)
    deadline = time.time() + 180
    try:
        while not (killed / "checkpoints" / "step-00000006").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its 6th step was saved"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (killed / "metrics.json").exists()
    result = torchrun(2, 29564, "--resume", killed)
    whole, resumed = load_vitmae(runs["fsdp"])[0], load_vitmae(killed)[0]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert "not bit for bit" not in result.stderr  # the same processes: nothing to say


def checkpoint_run(runs, tmp_path: Path, step: int) -> Path:
    """A copy of the fsdp run as it was after `step`, its later checkpoints and its logs left out."""
    run = tmp_path / "run"
    shutil.copytree(runs["fsdp"], run, ignore=shutil.ignore_patterns("metrics.json*"))
    for later in (run / "checkpoints").glob("step-*"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)
    (run / "checkpoints" / "latest").write_text(f"step-{step:08d}\n")
    return run


def test_a_two_process_sharded_run_resumes_on_one_with_the_batch_kept(runs, tmp_path, run_cli):
    run = checkpoint_run(runs, tmp_path, 10)
    refused = run_cli("pretrain", "--resume", run, check=False)  # 8 x 1 x 1 is not the run's 8 x 1 x 2
    assert refused.returncode == 2 and "--accum-steps 2" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    result = run_cli("pretrain", "--resume", run, "--accum-steps", "2")
    assert "the run trained on 2 process(es), this is 1" in result.stderr and "not bit for bit" in result.stderr
    after = losses(run)  # the copy's log starts at the resume
    assert len(after) == STEPS - 10 and all(loss == loss for loss in after)  # finite
    whole = losses(runs["fsdp"])[10:]
    assert abs(sum(after) / len(after) - sum(whole) / len(whole)) < 0.1 * sum(whole) / len(whole)  # within noise


def test_a_one_process_sharded_run_resumes_on_two(tmp_path, run_cli):
    run = tmp_path / "one"
    run_cli("pretrain", *RUN, "--strategy", "fsdp", "--accum-steps", "2", "--max-steps", "4", "--output", run)
    assert len(list((run / "checkpoints" / "step-00000004" / "sharded").glob("*.distcp"))) == 1
    result = torchrun(2, 29565, "--resume", run, "--accum-steps", "1", "--max-steps", "8")
    assert "the run trained on 1 process(es), this is 2" in result.stderr
    assert json.loads((run / "metrics.json").read_text())["steps"] == 8


def test_a_damaged_shard_is_found_and_the_resume_falls_back(runs, tmp_path, run_cli):
    run = checkpoint_run(runs, tmp_path, 12)
    shard = next((run / "checkpoints" / "step-00000012" / "sharded").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(vitmae.interop.CheckpointError, match="SHA-256"):  # reading it whole checks it too
        load_vitmae(run / "checkpoints" / "step-00000012")
    result = run_cli("pretrain", "--resume", run, "--accum-steps", "2", "--max-steps", "14")
    assert "skipped a damaged checkpoint" in result.stderr and "SHA-256" in result.stderr
    assert "resuming from step-00000010" in result.stderr


def test_a_sharded_run_loads_and_converts_whole(runs, tmp_path, run_cli):
    model = vitmae.load_pretrained(runs["fsdp"])
    whole, _ = load_vitmae(runs["fsdp"])
    assert all(torch.equal(value, whole[name]) for name, value in model.state_dict().items() if name in whole)
    run_cli("convert", runs["fsdp"], tmp_path / "hf", "--to", "hf")
    converted = vitmae.load_pretrained(tmp_path / "hf")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), converted.state_dict().values()))
    info = json.loads(run_cli("info", runs["fsdp"]).stdout)
    assert info["format"] == "vitmae"


def test_activation_checkpointing_trains_as_without_under_fsdp(tmp_path, run_cli):
    short = [*RUN, "--strategy", "fsdp", "--max-steps", "3"]
    run_cli("pretrain", *short, "--output", tmp_path / "plain")
    run_cli("pretrain", *short, "--grad-checkpointing", "--output", tmp_path / "checkpointed")
    plain, checkpointed = losses(tmp_path / "plain"), losses(tmp_path / "checkpointed")
    assert len(plain) == 3 and max(abs(a - b) for a, b in zip(plain, checkpointed)) < 1e-6


def test_a_replicated_run_resumes_under_fsdp(tmp_path, run_cli):
    """A one-process run's whole weights and AdamW state, taken up by a sharding strategy, go on as the
    run itself would have."""
    short = [*RUN, "--max-steps", "4"]
    run_cli("pretrain", *short, "--output", tmp_path / "whole")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run, ignore=shutil.ignore_patterns("metrics.json*", "step-00000004"))
    (run / "checkpoints" / "latest").write_text("step-00000002\n")
    run_cli("pretrain", "--resume", run, "--strategy", "fsdp")
    assert json.loads((run / "metrics.json").read_text())["strategy"] == "fsdp"
    whole, resumed = load_vitmae(tmp_path / "whole")[0], load_vitmae(run)[0]
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6, rtol=0) for k in whole)


def test_finetuning_under_fsdp_trains_as_without(tmp_path, run_cli):
    """The task's own parameter groups (layer decay), made before sharding, train the sharded parameters;
    the best weights are gathered into an ordinary checkpoint."""
    finetune = ["finetune", "--checkpoint", "none", "--data", "fashion-mnist", "--embed-dim", "32", "--depth", "2",
                "--num-heads", "2", "--labels-per-class", "4", "--epochs", "1", "--max-steps", "3", "--batch-size",
                "8", "--num-workers", "0", "--log-every-steps", "1", "--layer-decay", "0.75", "--blr", "1e-2"]
    run_cli(*finetune, "--output", tmp_path / "plain")
    run_cli(*finetune, "--strategy", "fsdp", "--output", tmp_path / "fsdp")
    plain, fsdp = losses(tmp_path / "plain"), losses(tmp_path / "fsdp")
    assert len(plain) == 3 and max(abs(a - b) for a, b in zip(plain, fsdp)) < 1e-5
    best = vitmae.load_classifier(tmp_path / "fsdp" / "checkpoints" / "best")
    assert best.head.weight.shape[0] == 10


def test_segmentation_under_fsdp_evaluates_as_it_trained(tmp_path, run_cli):
    run_cli("make-dataset", "fashion-scenes", "--out", tmp_path / "data", "--num", "8", "--num-val", "2",
            "--size", "32")
    run = tmp_path / "seg"
    run_cli("segment", "--checkpoint", "none", "--data", tmp_path / "data", "--model",
                      "mae_vit_tiny_patch16", "--img-size", "32", "--patch-size", "4", "--depth", "1",
                      "--max-steps", "2", "--batch-size", "4", "--num-workers", "0", "--strategy", "fsdp",
                      "--output", run)
    assert not (run / "checkpoints" / "step-00000002" / "model.safetensors").exists()
    trained = json.loads((run / "metrics.json").read_text())
    run_cli("evaluate", "--checkpoint", run, "--which", "last", "--output", tmp_path / "eval")
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["per_class"] == trained["per_class"] and evaluated["aAcc"] == trained["aAcc"]

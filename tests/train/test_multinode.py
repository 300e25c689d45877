"""Two nodes for real: two network namespaces joined by a veth pair (addresses of this test's own, only
inside the namespaces it makes), one torchrun agent and one training process per node, gloo over the link,
a c10d rendezvous hosted by the first node. Needs root and the `ip` command (iproute2); skips without."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from vitmae.config import ConfigError
from vitmae.train.distributed import collective_timeout
from tests.conftest import ROOT
from tests.tasks.test_pretrain import FAST, weights
from vitmae.interop.vitmae_format import load_vitmae

STEPS = 120  # long enough that a node is killed mid-run (a checkpoint every 5 steps; ~20-40 steps/s)
OPTIONS = [*FAST, "--max-steps", str(STEPS), "--viz-every-epochs", "0"]
SUBNET, HOST_ADDR, OTHER_ADDR, PORT = "10.231.0.{}/24", "10.231.0.1", "10.231.0.2", 29500


@dataclass
class Node:
    netns: str
    iface: str
    addr: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _why_no_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing: `make setup` installs it as root"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"vmprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@pytest.fixture(scope="module")
def nodes():
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    tag = os.getpid()
    pair = [Node(f"vitmae{tag}n{i}", f"vm{tag}v{i}"[:15], SUBNET.format(i + 1).split("/")[0]) for i in range(2)]
    try:
        for node in pair:
            _ip("netns", "add", node.netns)
        _ip("link", "add", pair[0].iface, "type", "veth", "peer", "name", pair[1].iface)
        for i, node in enumerate(pair):
            _ip("link", "set", node.iface, "netns", node.netns)
            _ip("-n", node.netns, "addr", "add", SUBNET.format(i + 1), "dev", node.iface)
            _ip("-n", node.netns, "link", "set", node.iface, "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")
        yield pair
    finally:
        for node in pair:
            _kill_node(node)
            _ip("netns", "del", node.netns, check=False)  # takes its end of the veth pair with it


def _kill_node(node: Node) -> None:
    """SIGKILL every process of a node, as a power loss would: its torchrun agent and its worker (which
    torchrun puts in a process group of its own)."""
    for pid in _ip("netns", "pids", node.netns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start(node: Node, run_id: str, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    is_host = int(node.addr == HOST_ADDR)  # the rendezvous' store lives on the first node
    command = ["ip", "netns", "exec", node.netns, sys.executable, "-m", "torch.distributed.run",
               "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"{HOST_ADDR}:{PORT}", "--rdzv-id", run_id, "--rdzv-conf", f"is_host={is_host}",
               "--local-addr", node.addr, "-m", "vitmae", "pretrain", *args]
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
               "GLOO_SOCKET_IFNAME": node.iface, **(env or {})}  # gloo would pick the host name's address
    log = out.parent / f"{out.name}-{node.netns}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(command, env=environ, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _log(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")


def _two_nodes(nodes: list[Node], run_id: str, out: Path, *args: str, timeout: float = 240) -> None:
    procs = [_start(node, run_id, out, *args) for node in nodes]
    for proc in procs:
        proc.wait(timeout=timeout)
    for proc in procs:
        assert proc.returncode == 0, _log(proc)[-3000:]


def _wait_for_checkpoint(out: Path, procs: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "checkpoints" / "latest").is_file():
        assert time.monotonic() < deadline, "no checkpoint within the time: " + _log(procs[0])[-3000:]
        assert all(p.poll() is None for p in procs), "a node stopped early: " + _log(procs[0])[-3000:]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_node_run(nodes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multinode") / "two-nodes"
    _two_nodes(nodes, "reference", out, *OPTIONS, "--output", str(out))
    return out


@pytest.mark.slow
def test_two_nodes_train_exactly_as_two_processes_on_one(two_node_run, tmp_path):
    out = tmp_path / "one-node"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "vitmae", "pretrain", *OPTIONS, "--output", str(out)],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((two_node_run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS and metrics["images"] == STEPS * 32
    two_nodes, one_node = weights(two_node_run), weights(out)
    assert two_nodes.keys() == one_node.keys()
    for key in two_nodes:
        assert torch.equal(two_nodes[key], one_node[key]), key


@pytest.mark.slow
def test_two_nodes_under_fsdp_train_as_under_ddp(nodes, two_node_run, tmp_path):
    """Each node writes its own shard of each checkpoint; read whole, the weights are DDP's."""
    out = tmp_path / "fsdp"
    _two_nodes(nodes, "fsdp", out, *OPTIONS, "--strategy", "fsdp", "--output", str(out))
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "fsdp"
    ddp, (fsdp, _) = weights(two_node_run), load_vitmae(out)
    assert ddp.keys() == fsdp.keys()
    assert all(torch.allclose(ddp[k], fsdp[k], atol=1e-5, rtol=0) for k in ddp)


@pytest.mark.slow
def test_a_killed_node_stops_the_other_at_once_and_both_resume(nodes, two_node_run, tmp_path):
    out = tmp_path / "killed"
    procs = [_start(node, "killed", out, *OPTIONS, "--save-every-steps", "5", "--output", str(out))
             for node in nodes]
    survivor = procs[0]
    try:
        _wait_for_checkpoint(out, procs)
        _kill_node(nodes[1])
        killed_at = time.monotonic()
        survivor.wait(timeout=120)
        took = time.monotonic() - killed_at
    finally:
        for node in nodes:
            _kill_node(node)
    log = _log(survivor)
    print(f"the surviving node exited {took:.1f} s after the other was killed")
    assert survivor.returncode != 0
    assert took < 60, took
    line = next(l for l in log.splitlines() if l.startswith("vitmae pretrain: rank"))
    assert "lost the connection to another process" in line and OTHER_ADDR in line, line
    assert f"--resume {out}" in line
    stopped_at = (out / "checkpoints" / "latest").read_text().strip()
    assert stopped_at < f"step-{STEPS:08d}", "the kill came after the end of the run"

    # Both nodes restart with --resume: the run goes on from its last checkpoint to where the
    # uninterrupted one ended, with the same weights.
    _two_nodes(nodes, "resumed", out, "--resume", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == STEPS
    logged = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == STEPS
    reference, resumed = weights(two_node_run), weights(out)
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


@pytest.mark.slow
def test_a_node_that_vanishes_without_a_word_is_given_up_after_the_timeout(nodes, tmp_path):
    """A node that loses power or its network sends no reset: the survivor would wait forever in its next
    collective but for the timeout (here 5 s)."""
    out = tmp_path / "vanished"
    procs = [_start(node, "vanished", out, *OPTIONS, "--save-every-steps", "5", "--output", str(out),
                    env={"VITMAE_DIST_TIMEOUT_S": "5"}) for node in nodes]
    survivor = procs[0]
    try:
        _wait_for_checkpoint(out, procs)
        _ip("-n", nodes[1].netns, "link", "set", nodes[1].iface, "down")  # no packet reaches the survivor
        _kill_node(nodes[1])
        cut_at = time.monotonic()
        survivor.wait(timeout=120)
        took = time.monotonic() - cut_at
    finally:
        for node in nodes:
            _kill_node(node)
        _ip("-n", nodes[1].netns, "link", "set", nodes[1].iface, "up")
    print(f"the surviving node exited {took:.1f} s after the other vanished (timeout 5 s)")
    line = next(l for l in _log(survivor).splitlines() if l.startswith("vitmae pretrain: rank"))
    assert "no answer from another process within 5 s (VITMAE_DIST_TIMEOUT_S)" in line, line
    assert f"--resume {out}" in line
    assert 4 < took < 60, took


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf", "1e300"])
def test_a_bad_timeout_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv("VITMAE_DIST_TIMEOUT_S", value)
    with pytest.raises(ConfigError, match="VITMAE_DIST_TIMEOUT_S=.*positive number of seconds"):
        collective_timeout()
    monkeypatch.setenv("VITMAE_DIST_TIMEOUT_S", "2.5")
    assert collective_timeout().total_seconds() == 2.5

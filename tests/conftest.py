import contextlib
import io
import logging
import os
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Importing one of these marks a test module's tests `subprocess`.
PROCESS_MODULES = {"subprocess", "multiprocessing", "torch.multiprocessing"}

# A model small enough for a few real training steps per second on a 2-core CPU.
TINY_MODEL_FLAGS = [
    "--embed-dim", "32", "--depth", "1", "--num-heads", "2",
    "--decoder-embed-dim", "32", "--decoder-depth", "1", "--decoder-num-heads", "2",
]


def jpeg_without_quantization_tables(data: bytes) -> bytes:
    """A JPEG file whose header still parses (size, mode) but that no decoder can decode: its DQT
    segments are removed."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:  # up to the start of scan; the entropy-coded data follows it
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] != 0xDB:
            out += data[i:end]
        i = end
    return bytes(out + data[i:])


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread: tiny matrix products on a shared 2-core machine are faster and steadier so."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """`vitmae ARGV` through `cli.main` in this process, with what a fresh process would show: stdout,
    stderr (log warnings included, as Python's last-resort handler prints them), the exit code, and a
    traceback with code 1 for an uncaught exception. It saves the ~5 s of importing torch per call."""
    import torch

    from vitmae import cli

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("vitmae")
    logger.addHandler(handler)
    threads, cwd = torch.get_num_threads(), os.getcwd()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - a crash is a result the test inspects, as with a subprocess
                traceback.print_exc()
                code = 1
    finally:
        logger.removeHandler(handler)
        torch.set_num_threads(threads)
        os.chdir(cwd)
    return subprocess.CompletedProcess(["vitmae", *argv], code, out.getvalue(), err.getvalue())


def _run_in_subprocess(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "vitmae", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _cli_runner(in_process: bool):
    def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        argv = list(map(str, args))
        result = _run_in_process(argv) if in_process else _run_in_subprocess(argv, timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"vitmae {' '.join(argv)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result
    return run


def kill_when_saved(args: list, checkpoint: Path, **env: str) -> None:
    """`python -m vitmae ARGS` in a fresh process (`env` added to the environment), SIGKILLed as soon as the
    checkpoint directory `checkpoint` exists; the run must still be training then."""
    proc = subprocess.Popen([sys.executable, "-m", "vitmae", *map(str, args)],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while not checkpoint.exists():
            assert proc.poll() is None and time.time() < deadline, f"the run ended before {checkpoint.name} was saved"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def run_cli():
    """Runs `vitmae ARGS` in this process, as `cli.main` (the per-test timeout bounds it), and returns a
    CompletedProcess with its exit code, stdout and stderr."""
    return _cli_runner(in_process=True)


@pytest.fixture
def run_cli_process():
    """Runs `python -m vitmae ARGS` in a fresh process, for tests where the process is the point (start-up,
    the module entry point, signals). Tests using it are marked `subprocess`."""
    return _cli_runner(in_process=False)


def pytest_collection_modifyitems(config, items):
    """Tests that start processes are marked `subprocess` (their module imports `subprocess` or a
    multiprocessing module, or they use `run_cli_process`); tests marked `cuda` skip cleanly on machines
    without a GPU (CI never has one)."""
    import torch

    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        module = getattr(item, "module", None)
        imported = {value.__name__ for value in vars(module or sys).values() if isinstance(value, types.ModuleType)}
        if "run_cli_process" in getattr(item, "fixturenames", ()) or imported & PROCESS_MODULES:
            item.add_marker(pytest.mark.subprocess)
        if skip and "cuda" in item.keywords:
            item.add_marker(skip)

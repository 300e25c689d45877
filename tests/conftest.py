import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def run_cli():
    """Runs `python -m vitmae ARGS` in a fresh process (as a user would) and returns the result."""
    def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
        result = subprocess.run([sys.executable, "-m", "vitmae", *map(str, args)], capture_output=True,
                                text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"vitmae {' '.join(map(str, args))} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result
    return run


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip cleanly on machines without a GPU (CI never has one)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

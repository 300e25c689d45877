"""`vitmae demo` started as a user starts it, for the browser tests (of an MAE here, of a segmentation run in
tests/tasks/test_demo.py)."""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.browser import find_chromium
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_demo(checkpoint: Path) -> Iterator[str]:
    """`vitmae demo --checkpoint CHECKPOINT` in a subprocess; yields its URL (skips without Chromium)."""
    if find_chromium() is None:
        pytest.skip("no chromium on PATH: `make test` installs Debian's chromium (apt-get install chromium)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vitmae", "demo", "--checkpoint", str(checkpoint),
                             "--port", str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=120)
        assert first.startswith("demo of ") and " on http://127.0.0.1:" in first, first
        yield first.split(" on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

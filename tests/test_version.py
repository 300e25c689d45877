"""`vitmae --version`."""
from __future__ import annotations

from importlib.metadata import version

import vitmae


def test_version_flag(run_cli_process):
    """`python -m vitmae` in a fresh process: the module entry point and the installed metadata."""
    result = run_cli_process("--version")
    assert result.stdout.strip() == f"vitmae {version('vitmae')}"
    assert version("vitmae") == vitmae.__version__  # the installed metadata and the package agree

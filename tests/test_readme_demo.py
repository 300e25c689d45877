"""The README quotes what `make demo` prints. Its numbers are deterministic on a CPU but take ten minutes
to make, so they are recorded (tests/fixtures/demo_numbers.json, by scripts/demo_numbers.py from a demo run)
and checked both ways: the README's block must be the one the record gives, and the demo's own first steps,
run here, must give the record's held-out loss before training and its first logged losses. A change that
moves the demo's numbers fails here until `make demo` and the script are run again."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("demo_numbers", ROOT / "scripts" / "demo_numbers.py")
demo_numbers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_numbers)

RECORD = json.loads(demo_numbers.FIXTURE.read_text())


def test_the_readme_quotes_the_recorded_demo():
    assert demo_numbers.readme_block(demo_numbers.README.read_text()) == demo_numbers.render(RECORD)


@pytest.mark.slow
def test_the_demo_still_starts_as_recorded(tmp_path, capsys):
    """`vitmae pretrain` as `make demo` runs it (no sizing flags), stopped after the recorded logged steps."""
    from vitmae.cli import main

    logged = RECORD["pretrain"]["first_logged"]
    every = logged[0]["step"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["pretrain", "--output", str(tmp_path / "demo"), "--max-steps", str(logged[-1]["step"]),
                     "--log-every-steps", str(every)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for key in ("heldout_loss_start", "heldout_loss_baseline", "heldout", "heldout_images"):
        recorded = RECORD["pretrain"][key]
        if isinstance(recorded, float):  # another CPU may round the last bits differently
            assert math.isclose(summary[key], recorded, rel_tol=1e-5), key
        else:
            assert summary[key] == recorded, key
    entries = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [e["step"] for e in logged]
    for entry, recorded in zip(entries, logged):
        assert math.isclose(entry["loss"], recorded["loss"], rel_tol=1e-5), entry
    # the held-out line the README shows is the one the command prints
    start = demo_numbers.heldout_line(RECORD["pretrain"]).split(" -> ")[0]
    assert start in capsys.readouterr().out

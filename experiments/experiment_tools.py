"""What the experiments share: reusing finished runs, timing stages, the hardware line of a report, the
architecture a from-scratch run needs, and the command line of a script."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vitmae.cli import add_option_flags, build_config
from vitmae.config import ConfigError, EncoderOptions


def finished(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a finished run (its metrics.json), so that an interrupted experiment continues."""
    metrics = Path(run_dir) / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else None


class Clock:
    """Wall time of each stage, printed as it ends."""

    def __init__(self, name: str):
        self.name, self.times = name, {}

    def run(self, stage: str, fn: Callable, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[stage] = round(time.perf_counter() - start, 1)
        print(f"[{self.name}] {stage}: {self.times[stage]:.0f} s", flush=True)
        return result


def parse_counts(text: str, unit: str, example: str, flag: str = "--labeled", least: int = 1) -> list[int]:
    """`--labeled` (or another `flag`): integers of at least `least`, comma-separated; sorted, each once."""
    try:
        counts = sorted({int(c) for c in str(text).split(",") if c.strip()})
    except ValueError:
        raise ConfigError(f"{flag} takes {unit} like {example}, not {text!r}") from None
    if not counts or min(counts) < least:
        raise ConfigError(f"{flag} takes {unit} of at least {least}, got {text!r}")
    return counts


def epochs_for(steps: int, samples: int, batch_size: int) -> int:
    """Epochs of `samples` in batches of `batch_size` (the last partial batch dropped) that hold `steps`
    optimizer steps: the schedule then ends where the run does."""
    return -(-steps // max(1, samples // batch_size))


def hardware(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available() and device != "cpu":
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text


def encoder_architecture(model: dict[str, Any]) -> dict[str, Any]:
    """The encoder fields of a pre-training architecture: what a from-scratch run needs to build the same
    encoder."""
    encoder_fields = {f.name for f in dataclasses.fields(EncoderOptions)}
    return {k: v for k, v in model.items() if k in encoder_fields}


def command_line(script: str, defaults: str) -> str:
    """How the script was started (for its report), or its usual command when called from Python."""
    if Path(sys.argv[0]).name == script:
        return f"python experiments/{script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"python experiments/{script} {defaults}"


def pretraining_lines(p: dict[str, Any], images: str) -> list[str]:
    """The report's pre-training paragraph: its length and speed, the held-out loss against the trivial one."""
    if p.get("reused"):
        return [f"Reused the pre-trained checkpoint {p['checkpoint']}."]
    lines = [f"{p.get('steps')} steps ({p.get('epochs')} epochs) on {images}, {p.get('img_s')} img/s, "
             f"{p.get('train_time_s')} s of training."]
    if "heldout_loss_end" in p:
        lines.append(f"Held-out masked-patch loss {p['heldout_loss_start']:.4f} -> {p['heldout_loss_end']:.4f} "
                     f"(trivial baseline {p['heldout_loss_baseline']:.4f}).")
    return lines


def times_lines(times: dict[str, float], where: str) -> list[str]:
    """The report's table of stage times, and where each run's own metrics are."""
    return (["## Times (s)", "", "| stage | seconds |", "|---|---:|"]
            + [f"| {name} | {seconds:.1f} |" for name, seconds in times.items()]
            + ["", f"Every run's own metrics.json is in its directory ({where})."])


def main(name: str, options: type, run: Callable, description: str, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=f"python experiments/{name}.py", description=description)
    parser.add_argument("--config", help="YAML file of options; flags override it")
    add_option_flags(parser, options)
    args = parser.parse_args(argv)
    try:
        summary = run(build_config(options, args))
    except (ConfigError, FileNotFoundError) as err:
        print(f"{name.replace('_', '-')}: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {summary['report']}")
    return 0

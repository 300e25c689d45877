"""The bookkeeping of scripts/gpu_session.sh: one JSON file per stage, rewritten (atomically) after every
piece, so that a command cut off at its time limit still leaves the pieces that finished.

    python scripts/gpu_record.py init STAGE_JSON --stage S --dry-run 0|1 --budget SECONDS --gpu NAME
    python scripts/gpu_record.py environment FILE              versions, GPU, driver, CPUs -> FILE
    python scripts/gpu_record.py record STAGE_JSON PIECE --status ok --seconds 12 --predicted 10 \
        --timeout 45 [--result FILE.json] [--note TEXT]          add or replace one piece
    python scripts/gpu_record.py tests-summary OUT.json [--junit FILE.xml] [--log FILE]
    python scripts/gpu_record.py quality-summary METRICS.json OUT.json   the table against the targets
    python scripts/gpu_record.py summary STAGE_JSON               one line per piece, for the log

Standard library only (it also runs where vitmae's dependencies are missing).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

# docs/results.md: what the full-scale Fashion-MNIST experiment is expected to reach (test top-1, %).
QUALITY_TARGETS = {
    "finetune_mae": {"0.01": 87.0, "0.1": 91.5, "1": 94.5},
    "linprobe_mae": {"1": 89.0},
    "knn_mae": {"1": 88.5},
}


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _run(*cmd: str, timeout: float = 20) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(out: Path) -> None:
    env: dict = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
                 "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                env["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    smi = _run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
               "--format=csv,noheader") if shutil.which("nvidia-smi") else None
    env["nvidia_smi"] = smi.splitlines() if smi else None
    versions = {}
    for name in ("torch", "torchvision", "triton", "timm", "transformers", "torchao", "safetensors", "numpy",
                 "PIL", "skimage", "pytest"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception as err:  # noqa: BLE001 - a missing or broken package is a fact to record
            versions[name] = f"not importable: {type(err).__name__}: {err}"[:200]
    env["versions"] = versions
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                          "memory_gib": round(props.total_memory / 2**30, 1),
                          "multiprocessors": props.multi_processor_count, "count": torch.cuda.device_count(),
                          "bf16": torch.cuda.is_bf16_supported(),
                          "cudnn": torch.backends.cudnn.version()}
    except Exception as err:  # noqa: BLE001
        env["torch_error"] = f"{type(err).__name__}: {err}"[:500]
    env["git_commit"] = _run("git", "rev-parse", "HEAD")
    write_json_atomic(out, env)
    print(json.dumps(env, indent=2))


def init(stage_json: Path, stage: str, dry_run: bool, budget: float, gpu: str) -> None:
    write_json_atomic(stage_json, {"stage": stage, "dry_run": dry_run, "gpu": gpu, "budget_s": budget,
                                   "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "elapsed_s": 0, "pieces": {}})


def record(stage_json: Path, piece: str, status: str, seconds: float, predicted: float | None,
           timeout: float | None, result: Path | None, note: str | None) -> None:
    data = json.loads(stage_json.read_text()) if stage_json.is_file() else {}
    entry: dict = {"status": status, "seconds": round(seconds, 1), "predicted_s": predicted, "timeout_s": timeout}
    if note:
        entry["note"] = note
    if result is not None:
        try:
            entry["result"] = json.loads(result.read_text())
        except (OSError, ValueError) as err:
            entry["result_error"] = f"{result}: {err}"
    data.setdefault("pieces", {})[piece] = entry
    data["elapsed_s"] = round(sum(p.get("seconds", 0) for p in data["pieces"].values()), 1)
    write_json_atomic(stage_json, data)


def tests_summary(out: Path, junit: Path | None, log: Path | None) -> None:
    summary: dict = {}
    if junit is not None and junit.is_file():
        root = ET.parse(junit).getroot()
        cases = []
        for case in root.iter("testcase"):
            outcome, message = "passed", None
            for kind in ("failure", "error", "skipped"):
                node = case.find(kind)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                    message = ((node.get("message") or "") + "\n" + (node.text or "")).strip()[-3000:]
                    break
            entry = {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                     "seconds": round(float(case.get("time") or 0), 1)}
            if message:
                entry["message"] = message
            cases.append(entry)
        summary["tests"] = cases
        for outcome in ("passed", "failed", "error", "skipped"):
            summary[outcome] = sum(c["outcome"] == outcome for c in cases)
    if log is not None and log.is_file():  # --collect-only (the dry run): the selected test ids
        text = log.read_text()
        summary["collected"] = [line.strip() for line in text.splitlines() if "::" in line and " " not in line.strip()]
        match = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
        if match:
            summary["collected_count"] = int(match.group(1))
    write_json_atomic(out, summary)


def quality_summary(metrics: Path, out: Path) -> None:
    m = json.loads(metrics.read_text())
    rows = {f"{row['fraction']:g}": row for row in m.get("table_top1", [])}
    against = []
    for method, targets in QUALITY_TARGETS.items():
        for fraction, target in targets.items():
            got = rows.get(fraction, {}).get(method)
            against.append({"method": method, "fraction": float(fraction), "target": target, "top1": got,
                            "reached": None if got is None else got >= target})
    write_json_atomic(out, {"scale": m.get("scale"), "wall_time_s": m.get("wall_time_s"),
                            "stage_times_s": m.get("stage_times_s"), "table_top1": m.get("table_top1"),
                            "against_targets": against, "pretrain": m.get("pretrain"), "hardware": m.get("hardware")})


def summary(stage_json: Path) -> None:
    data = json.loads(stage_json.read_text()) if stage_json.is_file() else {}
    pieces = data.get("pieces", {})
    print(f"{'piece':<18} {'status':<28} {'seconds':>8} {'predicted':>9}")
    for name, p in pieces.items():
        print(f"{name:<18} {p['status'][:28]:<28} {p['seconds']:>8.1f} {str(p.get('predicted_s') or ''):>9}")
    ran = [p for p in pieces.values() if not p["status"].startswith("skipped")]
    print(f"{'total (run)':<18} {'':<28} {data.get('elapsed_s', 0):>8.1f} "
          f"{sum(p.get('predicted_s') or 0 for p in ran):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init")
    p.add_argument("stage_json", type=Path)
    p.add_argument("--stage", required=True)
    p.add_argument("--dry-run", type=int, default=0)
    p.add_argument("--budget", type=float)
    p.add_argument("--gpu", default="")
    p = sub.add_parser("environment")
    p.add_argument("out", type=Path)
    p = sub.add_parser("record")
    p.add_argument("stage_json", type=Path)
    p.add_argument("piece")
    p.add_argument("--status", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--predicted", type=float)
    p.add_argument("--timeout", type=float)
    p.add_argument("--result", type=Path)
    p.add_argument("--note")
    p = sub.add_parser("tests-summary")
    p.add_argument("out", type=Path)
    p.add_argument("--junit", type=Path)
    p.add_argument("--log", type=Path)
    p = sub.add_parser("quality-summary")
    p.add_argument("metrics", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("summary")
    p.add_argument("stage_json", type=Path)
    args = parser.parse_args()
    if args.command == "init":
        init(args.stage_json, args.stage, bool(args.dry_run), args.budget, args.gpu)
    elif args.command == "environment":
        environment(args.out)
    elif args.command == "record":
        record(args.stage_json, args.piece, args.status, args.seconds, args.predicted, args.timeout, args.result,
               args.note)
    elif args.command == "tests-summary":
        tests_summary(args.out, args.junit, args.log)
    elif args.command == "quality-summary":
        quality_summary(args.metrics, args.out)
    else:
        summary(args.stage_json)


if __name__ == "__main__":
    main()

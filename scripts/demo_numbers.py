"""The README's quoted `make demo` output, from a finished demo run (default runs/demo):

    .venv/bin/python scripts/demo_numbers.py [RUN_DIR] [--check]

Writes tests/fixtures/demo_numbers.json (the run's numbers, and the losses of its first logged steps, which
tests/test_readme_demo.py reproduces by running the demo's first steps) and rewrites the block between
`<!-- demo-output -->` and `<!-- /demo-output -->` in README.md. `--check` changes nothing and exits 1 when
the README's block is not what the run gives. Re-run `make demo` and this script after any change that
moves the demo's numbers: the test fails until then.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIXTURE = ROOT / "tests" / "fixtures" / "demo_numbers.json"
BLOCK = re.compile(r"(<!-- demo-output -->\n)(.*?)(<!-- /demo-output -->)", re.S)
CHECKED_STEPS = 1  # logged steps of the pre-training that the test reproduces (the demo logs every 9)


def numbers(run: Path) -> dict:
    """What the README quotes of a demo run, and what the test checks it against."""
    pretrain, knn, finetune = (json.loads((folder / "metrics.json").read_text())
                               for folder in (run, run / "knn", run / "finetune"))
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "pretrain": {k: pretrain[k] for k in ("steps", "train_time_s", "img_s", "heldout", "heldout_images",
                                              "heldout_loss_start", "heldout_loss_end", "heldout_loss_baseline")}
        | {"first_logged": [{k: entry[k] for k in ("step", "loss")} for entry in logged[:CHECKED_STEPS]],
           "last_logged_loss": logged[-1]["loss"]},
        "knn": {k: knn[k] for k in ("k", "temperature", "top1", "top5", "val", "val_images", "train_images")},
        "finetune": {k: finetune[k] for k in ("top1", "top5", "val", "val_images", "best_top1", "best_epoch")},
    }


def heldout_line(p: dict) -> str:
    """`vitmae pretrain`'s held-out line, as it prints it."""
    return (f"held-out masked-patch loss on {p['heldout']}, {p['heldout_images']} images: "
            f"{p['heldout_loss_start']:.4f} -> {p['heldout_loss_end']:.4f} (trivial baseline "
            f"{p['heldout_loss_baseline']:.4f})")


def render(n: dict) -> str:
    """The README's code block of the demo's output."""
    p, k, f = n["pretrain"], n["knn"], n["finetune"]
    minutes, seconds = divmod(round(p["train_time_s"]), 60)
    rate = p["steps"] / p["train_time_s"]
    return "\n".join([
        "```",
        "$ vitmae pretrain --output runs/demo",
        f"100%|██████████| {p['steps']}/{p['steps']} [{minutes:02d}:{seconds:02d}<00:00, {rate:5.2f}step/s, "
        f"img_s={p['img_s']:.0f}, loss={p['last_logged_loss']:.4f}, lr=0.00e+00]",
        heldout_line(p),
        f"{p['steps']} steps, {p['img_s']:.0f} img/s; checkpoint runs/demo/checkpoints/step-{p['steps']:08d}; "
        "pictures in runs/demo/reconstructions",
        "$ vitmae knn --checkpoint runs/demo --output runs/demo/knn",
        f"kNN (k={k['k']}, T={k['temperature']:g}) top-1 {k['top1']:.2f}%  top-5 {k['top5']:.2f}% on {k['val']} "
        f"({k['val_images']} images), bank of {k['train_images']} labeled images",
        "$ vitmae finetune --checkpoint runs/demo --labels-fraction 0.1 --epochs 5 ... --output runs/demo/finetune",
        f"top-1 {f['top1']:.2f}%  top-5 {f['top5']:.2f}% on {f['val']} ({f['val_images']} images); best top-1 "
        f"{f['best_top1']:.2f}% at epoch {f['best_epoch']:g}",
        "$ vitmae report runs/demo",
        "wrote runs/demo/report.html",
        "```",
        "",
    ])


def readme_block(text: str) -> str:
    match = BLOCK.search(text)
    if match is None:
        raise SystemExit(f"{README} has no <!-- demo-output --> block")
    return match.group(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README differs")
    args = parser.parse_args()
    found = numbers(args.run)
    text = README.read_text()
    if args.check:
        same = readme_block(text) == render(found)
        print("the README quotes this run" if same else "the README does not quote this run")
        return 0 if same else 1
    FIXTURE.write_text(json.dumps(found, indent=2) + "\n")
    README.write_text(BLOCK.sub(lambda m: m.group(1) + render(found) + m.group(3), text))
    print(f"wrote {FIXTURE.relative_to(ROOT)} and the README's demo block")
    return 0


if __name__ == "__main__":
    sys.exit(main())

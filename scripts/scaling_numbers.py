"""The README's memory tables ("Scaling"), from the memory planner, as `vitmae plan` computes them:

    .venv/bin/python scripts/scaling_numbers.py [--check]

Rewrites the block between `<!-- scaling-tables -->` and `<!-- /scaling-tables -->` in README.md. `--check`
changes nothing and exits 1 when the README's block is not what the planner gives now (a test checks the
ViT-B row of it). Each cell is the plan's total per GPU, in GiB, of the command under its table. It takes
a few minutes on a 2-core CPU: every cell is a trace of the model on fake tensors.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- scaling-tables -->\n)(.*?)(<!-- /scaling-tables -->)", re.S)

# The models: the presets of the MAE paper, and MAWS's ViT-2B/14 (facebookresearch/maws, the MAE scaling
# paper's 2B model: width 2560, depth 24, 32 heads, MLP 4x) with the official MAE decoder.
MODELS: dict[str, list[str]] = {
    "ViT-B/16": ["--model", "mae_vit_base_patch16"],
    "ViT-L/16": ["--model", "mae_vit_large_patch16"],
    "ViT-H/14": ["--model", "mae_vit_huge_patch14"],
    "ViT-2B/14": ["--model", "mae_vit_huge_patch14", "--embed-dim", "2560", "--depth", "24", "--num-heads", "32"],
}
# The official recipes' per-GPU batches: pre-training 64 (4,096 on 64 GPUs, or through --accum-steps on
# fewer), fine-tuning 32 (1,024 on 32 GPUs).
TRAININGS = {"pretrain": 64, "finetune": 32}
COLUMNS = [("1 GPU", ["--gpus", "1"]), ("ddp, 8 or 64 GPUs", ["--gpus", "8"]),
           ("fsdp, 8 GPUs", ["--gpus", "8", "--strategy", "fsdp"]),
           ("fsdp, 64 GPUs", ["--gpus", "64", "--strategy", "fsdp"])]
# The official MAE recipes (PRETRAIN.md, FINETUNE.md of facebookresearch/mae): DDP with fp16 autocast on
# V100s, 32 GB ones where the command asks for them (--use_volta32), 16 GB otherwise.
ANCHORS = [("pre-training, any of B/L/H", "ViT-H/14", "pretrain", 64, 64, 32),
           ("fine-tuning ViT-B", "ViT-B/16", "finetune", 32, 32, 16),
           ("fine-tuning ViT-L", "ViT-L/16", "finetune", 32, 32, 32),
           ("fine-tuning ViT-H", "ViT-H/14", "finetune", 16, 64, 32)]


def planned(args: list[str]) -> dict[str, Any]:
    """The summary `vitmae plan ARGS` computes."""
    from vitmae.cli import build_config, build_parser

    namespace = build_parser().parse_args(["plan", *args])
    return namespace.task.run(build_config(namespace.task.options, namespace))


def gib(summary: dict[str, Any]) -> str:
    return f"{summary['bytes']['total'] / 2**30:.1f}"


def row(model: str, training: str) -> str:
    base = [*MODELS[model], "--training", training, "--batch-size", str(TRAININGS[training])]
    cells, parameters = [], ""
    for _, flags in COLUMNS:
        without, with_ = (planned([*base, *flags, *extra]) for extra in ([], ["--grad-checkpointing"]))
        parameters = f"{without['num_parameters'] / 1e6:,.0f} M"
        cells.append(f"{gib(without)} / {gib(with_)}")
    return f"| {model} | {parameters} | " + " | ".join(cells) + " |"


def table(training: str, models: list[str]) -> list[str]:
    title = {"pretrain": "pre-training", "finetune": "fine-tuning"}[training]
    return [f"| {title}, {TRAININGS[training]} images per GPU | parameters | "
            + " | ".join(name for name, _ in COLUMNS) + " |",
            "|---|---:|" + "---:|" * len(COLUMNS),
            *(row(model, training) for model in models)]


def anchors() -> list[str]:
    lines = ["| official recipe (DDP, fp16) | per-GPU batch on | the plan | fits? |", "|---|---|---:|---|"]
    for name, model, training, batch, gpus, memory in ANCHORS:
        s = planned([*MODELS[model], "--training", training, "--batch-size", str(batch), "--gpus", str(gpus),
                     "--precision", "fp16", "--gpu-memory", f"{memory}GiB"])
        lines.append(f"| {name} | {batch} on {gpus} x {memory} GB V100 | {gib(s)} GiB | "
                     f"{'yes' if s['fits'] else 'no'} |")
    return lines


def render() -> str:
    return "\n".join([*table("pretrain", list(MODELS)), "", *table("finetune", list(MODELS)), "",
                      *anchors(), ""])


def readme_block(text: str) -> str:
    """The tables the README quotes ("" where it has no block for them)."""
    match = BLOCK.search(text)
    return match.group(2) if match else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README differs")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    text = README.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{README} has no <!-- scaling-tables --> block")
    found = render()
    if args.check:
        same = readme_block(text) == found
        print("the README quotes the planner" if same else "the README does not quote the planner")
        return 0 if same else 1
    README.write_text(BLOCK.sub(lambda m: m.group(1) + found + m.group(3), text))
    print("wrote the README's scaling tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vitmae plan`: the memory one GPU needs to train a model, from the model's own shapes (train/memory.py):
parameters, gradients, AdamW state, DDP's buckets or FSDP's unsharded blocks, the weights' compute copies
and the activations, against a GPU's memory. `--measure-steps N` also trains the model N steps on one
device and measures what it allocates, to check the plan.

    vitmae plan --model mae_vit_huge_patch14 --gpus 8 --batch-size 64 --strategy fsdp --grad-checkpointing
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..model import Block, MaskedAutoencoder, ModelConfig, ViTClassifier, ViTEncoder
from ..model.masking import num_kept
from ..model.segmentation import AUX_WEIGHT, Segmenter
from ..options import opt
from ..train.config import DEVICES, PRECISIONS
from ..train.distributed import DistInfo
from ..train.memory import STRATEGIES, MemoryPlan, measure_training, plan_memory
from ..train.runtime import resolve_device
from .options import MAEOptions, Task, redefault

MODEL_TASKS = ("pretrain", "finetune", "segment")
DEFAULT_CLASSES = {"finetune": 1000, "segment": 150}  # ImageNet-1k; ADE20K, the MAE paper's segmentation
DROP_PATH = 0.1  # fine-tuning's and segmentation's default: a mask of one value per image and block
IGNORE_INDEX = 255
GIB = 2**30
BYTE_UNITS = {"": GIB, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": GIB, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """"80GiB", "141 GB", "24576MiB" or "80" (GiB) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in BYTE_UNITS:
        raise ConfigError(f"--gpu-memory takes a size like 80GiB, 141GB or 24576MiB, not {text!r}")
    return int(float(match.group(1)) * BYTE_UNITS[match.group(2).lower()])


@dataclass
class PlanOptions(MAEOptions):
    """`vitmae plan`: per-GPU memory of a training run, planned from the model's shapes.

    Counted per GPU, for AdamW: fp32 parameters and buffers (the master weights); an fp32 gradient per
    trained parameter; AdamW's two fp32 moments and a 4-byte step per tensor. ddp replicates them and, on
    more than one GPU, adds DDP's flat gradient buckets (a second copy of the gradients, held for the run);
    in bf16/fp16 it adds autocast's copies of the weights. fsdp (FSDP2 on each block and the root, bf16
    compute weights, fp32 master weights and gradient reduction, as torchtitan) holds rank 0's dim-0
    shard of each, plus what it holds unsharded in the compute dtype: the root's parameters and gradients,
    two blocks' parameters (the one computing, the next gathered ahead) and one block's gradients with
    their fp32 reduce-scatter copy. Activations: the bytes autograd saves for backward in a forward and
    loss at this batch, traced on fake tensors (each storage once); with --grad-checkpointing the blocks'
    inputs, what is saved outside them, and the largest block's activations once more. Not counted:
    backward's temporaries, the CUDA context, the allocator's cache (--headroom is for them)."""

    model: str = redefault(MAEOptions, "model", "mae_vit_base_patch16")
    training: str = opt("pretrain", "the training command planned, and so its model: pretrain (the MAE; its encoder sees the visible patches "
                    "only) | finetune (the classifier) | segment (the UperNet segmenter)", choices=MODEL_TASKS)
    gpus: int = opt(1, "GPUs (processes) the run trains on", min=1)
    batch_size: int = opt(64, "images per step per GPU, as every training command's --batch-size", min=1)
    strategy: str = opt("ddp", "ddp: every GPU holds the whole model (DDP's gradient buckets count on more "
                        "than one GPU) | fsdp: parameters, gradients and optimizer state sharded over the GPUs "
                        "(FSDP2, each block and the root; bf16 compute weights gathered a block at a time, "
                        "fp32 master weights and gradient reduction)", choices=STRATEGIES)
    grad_checkpointing: bool = opt(False, "plan with activation checkpointing of the blocks (each keeps its "
                                   "input; one block's activations are made again in backward)")
    precision: str = opt("auto", "compute precision (auto: bf16, what the engine trains in on a GPU that "
                         "supports it)", choices=PRECISIONS)
    num_classes: int | None = opt(None, "classes of the finetune or segment head (default: 1000, ImageNet's; "
                                  "150, ADE20K's)", min=1)
    gpu_memory: str = opt("80GiB", "memory of one GPU, e.g. 80GiB, 141GB, 24576MiB")
    headroom: float = opt(0.1, "share of the GPU's memory left out of the plan: the CUDA context, the "
                          "allocator's cached and fragmented blocks, temporaries", min=0, below=1)
    measure_steps: int = opt(0, "also train this many steps on --device (one process, random images) and "
                             "measure what is allocated, next to the plan", min=0)
    device: str = opt("auto", "where --measure-steps trains: auto | cpu | cuda", choices=DEVICES)
    seed: int = opt(0, "seed of the measured model's weights and images", min=0)
    json: str | None = opt(None, "also write the plan to this JSON file")

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_bytes(self.gpu_memory)
        if self.measure_steps and self.gpus > 1:
            raise ConfigError("--measure-steps trains one process: plan it with --gpus 1")


def model_builder(training: str, config: ModelConfig, num_classes: int) -> Callable[[], nn.Module]:
    """What `vitmae pretrain`, `finetune` and `segment` train, freshly initialised."""
    if training == "pretrain":
        return lambda: MaskedAutoencoder(config)
    if training == "finetune":
        return lambda: ViTClassifier(config, num_classes, "avg", DROP_PATH)
    return lambda: Segmenter(ViTEncoder(config, DROP_PATH), num_classes, "upernet")


def batch_loss(training: str, config: ModelConfig, batch_size: int, num_classes: int) -> Callable[[nn.Module], Tensor]:
    """The loss of a random batch, as that command's objective computes it, on the model's device."""
    size = config.patching.input_size(config.grid_size)

    def loss(model: nn.Module) -> Tensor:
        device = next(model.parameters()).device
        images = torch.randn(batch_size, config.in_chans, *size, device=device)
        if training == "pretrain":
            return model(images).loss
        if training == "finetune":
            return F.cross_entropy(model(images), torch.randint(num_classes, (batch_size,), device=device))
        masks = torch.randint(num_classes, (batch_size, *size), device=device)
        logits, aux = model(images)
        return (F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
                + AUX_WEIGHT * F.cross_entropy(aux.float(), masks, ignore_index=IGNORE_INDEX))

    return loss


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the units FSDP shards one by one and checkpointing recomputes."""
    return [m for m in model.modules() if isinstance(m, Block)]


def plan(cfg: PlanOptions) -> dict[str, Any]:
    """The plan (and with `measure_steps` the measurement) as a summary; also written to `cfg.json`."""
    config = cfg.model_config()
    num_classes = cfg.num_classes or DEFAULT_CLASSES.get(cfg.training, 0)
    precision = "bf16" if cfg.precision == "auto" else cfg.precision
    build = model_builder(cfg.training, config, num_classes)
    loss = batch_loss(cfg.training, config, cfg.batch_size, num_classes)
    memory = plan_memory(build, loss, blocks, cfg.gpus, cfg.strategy, precision, cfg.grad_checkpointing)
    gpu_memory = parse_bytes(cfg.gpu_memory)
    usable = memory.usable(gpu_memory, cfg.headroom)
    summary: dict[str, Any] = {
        "model": cfg.model, "training": cfg.training, "batch_size": cfg.batch_size, "architecture": config.to_dict(),
        "encoder_tokens": (num_kept(config.num_patches, config.mask_ratio) if cfg.training == "pretrain"
                           else config.num_patches) + 1,
        **memory.to_dict(),
        "gpu_memory": gpu_memory, "headroom": cfg.headroom, "usable": usable, "fits": memory.total <= usable,
    }
    if cfg.training != "pretrain":
        summary["num_classes"] = num_classes
    if cfg.measure_steps:
        device = resolve_device(cfg.device, DistInfo())
        torch.manual_seed(cfg.seed)
        model = build().to(device)
        measured = measure_training(model, loss, precision, cfg.measure_steps, cfg.grad_checkpointing, cfg.strategy,
                                    blocks)
        summary["measured"] = {"device": str(device), **measured.to_dict()}
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _unit(largest: int) -> tuple[str, int]:
    """The binary unit the table's numbers are written in: the largest that keeps `largest` at least 1."""
    return next((name, size) for name, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))
                if largest >= size or size == 1)


def report(s: dict[str, Any], cfg: PlanOptions) -> list[str]:
    b = s["bytes"]
    ddp = s["strategy"] == "ddp"
    tokens = f"{s['encoder_tokens']} tokens per image through the encoder"
    if s["training"] == "pretrain":
        tokens += f" (mask ratio {s['architecture']['mask_ratio']:g})"
    lines = [f"{s['model']}, {s['training']}: {s['num_parameters']:,} parameters ({s['num_trained']:,} trained); "
             f"{tokens}",
             f"per GPU, at batch {s['batch_size']} on {s['gpus']} GPU(s) ({s['batch_size'] * s['gpus']} images a "
             f"step), {s['strategy']}, {s['precision']}, "
             f"{'with' if s['grad_checkpointing'] else 'without'} activation checkpointing:"]
    sharded = "" if ddp else f", 1/{s['gpus']} each"
    rows = [("parameters", b["parameters"], f"fp32 master weights and buffers{sharded}"),
            ("gradients", b["gradients"], f"fp32{sharded}"),
            ("optimizer state", b["optimizer"], f"AdamW: two fp32 moments and a step count{sharded}")]
    if b["buckets"]:
        rows.append(("DDP buckets", b["buckets"], "DDP's flat gradient buckets: a second copy of the gradients"))
    if b["compute_weights"]:
        rows.append(("weight copies", b["compute_weights"], f"autocast's {s['precision']} copies, kept for backward")
                    if ddp else ("FSDP unsharded", b["compute_weights"],
                                 f"{s['precision']}: the root and two blocks gathered, one block's gradients"))
    rows.append(("activations", b["activations"], "saved for backward" + (" (the blocks' inputs and what is "
                                                                          "outside them)"
                                                                          if s["grad_checkpointing"] else "")))
    if s["grad_checkpointing"]:
        rows.append(("recomputation", b["recompute"], "the largest block's activations, made again in backward"))
    rows.append(("total", b["total"], ""))
    unit, size = _unit(b["total"])
    lines += [f"  {name:<16}{value / size:8.2f} {unit}  {note}".rstrip() for name, value, note in rows]
    spare = s["usable"] - b["total"]
    lines.append(f"fits in {s['gpu_memory'] / GIB:.4g} GiB with {s['headroom']:.0%} headroom "
                 f"({s['usable'] / size:.2f} {unit} for the above): "
                 + (f"yes, {spare / size:.2f} {unit} to spare" if s["fits"] else f"no, {-spare / size:.2f} {unit} over"))
    if "measured" in s:
        m = s["measured"]
        planned_forward = b["activations"] + (b["compute_weights"] if ddp else 0)
        line = (f"measured over {m['steps']} steps on {m['device']}: the forward left {m['forward_bytes'] / GIB:.2f} "
                f"GiB allocated (planned activations and copies: {planned_forward / GIB:.2f})")
        if m["max_allocated"] is not None:
            line += f"; max allocated {m['max_allocated'] / GIB:.2f} GiB (planned total {b['total'] / GIB:.2f})"
        lines.append(line)
    return lines


TASK = Task("plan", "per-GPU memory of a training run, planned from the model's shapes", PlanOptions, plan, report)

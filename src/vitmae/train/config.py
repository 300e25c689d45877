"""Options of the one training engine, shared by pre-training, fine-tuning and linear probing."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import Options, opt

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "step", "poly")
PARALLEL_STRATEGIES = ("ddp", "fsdp")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class RuntimeOptions(Options):
    """Where a model runs: the device, its precision and the data-loading workers."""

    device: str = opt("auto", "auto | cpu | cuda (auto: a GPU when there is one)", choices=DEVICES)
    precision: str = opt("auto", "auto: bf16 on GPUs that support it, else fp32", choices=PRECISIONS)
    num_workers: int = opt(2, "DataLoader worker processes that read and augment images", min=0)
    seed: int = opt(0, "seed of every random draw (crops, masks, subsets, initialisation)", min=0)


@dataclass
class TrainOptions(RuntimeOptions):
    """The training engine: schedule, batches, optimizer, precision and checkpoints."""

    output: str = opt("runs/pretrain", "run directory: checkpoints, metrics, pictures, config.yaml")
    epochs: int = opt(2, "epochs the learning-rate schedule spans", min=1)
    max_steps: int | None = opt(None, "stop after this many optimizer steps (the schedule still spans --epochs)", min=1)
    batch_size: int = opt(256, "images per step per process", min=1)
    accum_steps: int = opt(1, "micro-batches accumulated per optimizer step", min=1)
    blr: float = opt(1.5e-4, "base learning rate: lr = blr * effective batch / 256", above=0)
    lr: float | None = opt(None, "absolute learning rate (overrides --blr)", above=0)
    min_lr: float = opt(0.0, "learning rate at the end of the cosine or poly schedule", min=0)
    weight_decay: float = opt(0.05, "AdamW weight decay (none on biases, norms and position tables)", min=0)
    schedule: str = opt("cosine", "after the warm-up: cosine (half-cycle to --min-lr) | step (x0.1 at 8/9 and "
                        "26/27 of the run, ViTDet's) | poly (linear to --min-lr, mmsegmentation's PolyLR with "
                        "power 1)", choices=SCHEDULES)
    warmup_epochs: float = opt(0.2, "linear warm-up length in epochs (fractions allowed)", min=0)
    clip_grad: float | None = opt(None, "clip the gradient norm to this value", above=0)
    compile: bool | None = opt(None, "torch.compile the model (default: on GPUs, not on CPUs)")
    compile_mode: str = opt("default", "torch.compile mode", choices=COMPILE_MODES)
    fp8: bool = opt(False, "train the transformer blocks' linear layers in float8 (torchao; needs FP8 tensor "
                           "cores to be fast)")
    strategy: str = opt("ddp", "how the processes of a torchrun share the training: ddp (each holds the whole "
                        "model) | fsdp (FSDP2: parameters, gradients and optimizer state sharded over them, "
                        "sharded checkpoints that resume on any number of processes; also on one)",
                        choices=PARALLEL_STRATEGIES)
    fsdp_reshard_after_forward: bool = opt(True, "under fsdp: free each block's gathered parameters after its "
                                           "forward and gather them again in backward (less memory, more "
                                           "communication)")
    cpu_offload: bool = opt(False, "under fsdp: keep the sharded parameters, gradients and optimizer state in "
                            "host memory (slower; for models that do not fit otherwise)")
    grad_checkpointing: bool = opt(False, "trades compute for memory: the activations of each block are "
                                   "recomputed in backward rather than kept; for long token sequences (video, "
                                   "high resolution)")
    log_every_steps: int | None = opt(None, "log the loss, learning rate and speed every N steps (default: 20, "
                                      "or often enough for 50 points in a shorter run)", min=1)
    log_to: str = opt("tensorboard", "where metrics and pictures go, comma-separated: tensorboard, wandb (offline "
                      "unless WANDB_MODE is set), mlflow")
    save_every_steps: int | None = opt(None, "also save a checkpoint every N steps", min=1)
    save_every_epochs: int | None = opt(None, "also save a checkpoint every N epochs", min=1)
    keep_checkpoints: int = opt(2, "step checkpoints kept on disk (0: all)", min=0)
    resume: str | None = opt(None, "continue the run in this directory (or checkpoint) exactly where it stopped")
    overwrite: bool = opt(False, "start afresh in an --output that holds files: a previous run's are removed, "
                          "others kept")

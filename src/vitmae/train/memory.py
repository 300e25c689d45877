"""The memory one GPU needs to train a model, planned from the model's own shapes (`vitmae plan`), and
measured over a few real training steps to check the plan.

What a plan counts, per GPU, for AdamW training (the engine's optimizer) under a parallel strategy:

- parameters: every parameter and buffer in its stored dtype (fp32: the master weights). Under `fsdp`
  each rank holds a shard of every parameter: FSDP2 chunks dim 0, so the largest shard (rank 0's) has
  ceil(rows / gpus) rows; buffers are not sharded.
- gradients: one per trained parameter, in its dtype (fp32); sharded alike under `fsdp`.
- optimizer state: AdamW's exp_avg and exp_avg_sq, each the size of the trained parameter (or its shard),
  and a 4-byte step count per parameter tensor.
- DDP gradient buckets (`ddp` on more than one GPU): DistributedDataParallel's flat buckets, a second
  copy of the trained gradients, allocated when the model is wrapped and held for the whole run (the
  engine keeps DDP's default, gradient_as_bucket_view=False). One GPU trains without DDP: none.
- compute weights: under `ddp` in bf16 or fp16, the low-precision copies of the weights that autocast
  makes in forward (each kept until backward has used it); under `fsdp`, what FSDP2 holds unsharded in
  the compute dtype at once: the root's parameters and gradients (the root module stays unsharded from
  forward to the end of backward), two units' parameters (the one computing and the next, all-gathered
  ahead of it) and the largest unit's unsharded gradients with their fp32 reduce-scatter copy. The
  units are the modules `fully_shard` wraps one by one: the transformer blocks.
- activations: the bytes of every tensor autograd saves for backward in one forward and loss at the
  per-GPU batch, each storage counted once, the parameters and weight copies left out. They are traced,
  not tabled: the model is built on the meta device, its tensors become fake ones (shapes without
  memory), and one forward and loss run under `saved_tensors_hooks`. With activation checkpointing, the
  units keep only their inputs; the plan counts those, what is saved outside the units, and the
  largest unit's saved set once more (its recomputation in backward).

Precision. `ddp` runs the forward under autocast with fp32 parameters, as the engine does. `fsdp`
follows torchtitan's FSDP2 mixed precision (MixedPrecisionPolicy with bf16 parameters and fp32
gradient reduction): no autocast; the parameters are gathered in the compute dtype, the root casts its
floating-point inputs to it, and every activation is computed in it. The trace runs on fake CPU tensors,
where PyTorch's attention is its fused (flash) kernel, which saves what the GPU's fused kernels save
(queries, keys, values, output and one log-sum-exp per row), not the (L x L) attention matrix.

Left out: temporaries (a block's intermediate gradients in backward, the optimizer's foreach buffers on a
CPU), the CUDA context and the caching allocator's reserved but unallocated blocks: the headroom of
`fits` is for those. The total adds the gradients and the activations, which do not peak together
(backward frees activations as it makes gradients), so it bounds `torch.cuda.max_memory_allocated` of a
step from above for what it counts.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ConfigError
from ..model.vit import param_groups
from .engine import enable_grad_checkpointing
from .optim import build_adamw
from .runtime import autocast

STRATEGIES = ("ddp", "fsdp")
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STEP_BYTES = 4  # AdamW's step count per parameter tensor: a float32 scalar

Loss = Callable[[nn.Module], Tensor]  # the loss of one batch it makes on the model's device
Units = Callable[[nn.Module], list[nn.Module]]  # the blocks: what FSDP wraps and checkpointing recomputes


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes one GPU holds, by kind (see the module docstring for what each counts)."""

    parameters: int
    gradients: int
    optimizer: int
    buckets: int
    compute_weights: int
    activations: int  # kept from forward to backward
    recompute: int  # with checkpointing: one unit's activations made again in backward
    # what was planned
    strategy: str
    gpus: int
    precision: str
    grad_checkpointing: bool
    num_parameters: int
    num_trained: int

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer + self.buckets + self.compute_weights
                + self.activations + self.recompute)

    def usable(self, gpu_memory: int, headroom: float) -> int:
        """What a GPU of `gpu_memory` bytes leaves to these after the headroom."""
        return int(gpu_memory * (1.0 - headroom))

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "gpus": self.gpus, "precision": self.precision,
                "grad_checkpointing": self.grad_checkpointing, "num_parameters": self.num_parameters,
                "num_trained": self.num_trained,
                "bytes": {"parameters": self.parameters, "gradients": self.gradients, "optimizer": self.optimizer,
                          "buckets": self.buckets, "compute_weights": self.compute_weights,
                          "activations": self.activations, "recompute": self.recompute, "total": self.total}}


# -- parameters, gradients, optimizer state ------------------------------------------------------------
def shard_numel(shape: torch.Size, shards: int) -> int:
    """Elements of the largest dim-0 shard of a tensor of `shape` over `shards` ranks (FSDP2's chunking)."""
    if len(shape) == 0:
        return 1
    return math.ceil(shape[0] / shards) * math.prod(shape[1:])


def state_bytes(model: nn.Module, gpus: int, strategy: str) -> dict[str, int]:
    """Exact bytes of the parameters (and buffers), gradients, AdamW state and DDP buckets on one GPU."""
    shards = gpus if strategy == "fsdp" else 1
    params = list(model.parameters())
    trained = [p for p in params if p.requires_grad]
    held = lambda p: shard_numel(p.shape, shards) * p.element_size()  # noqa: E731
    gradients = sum(held(p) for p in trained)
    return {
        "parameters": sum(held(p) for p in params) + sum(b.numel() * b.element_size() for b in model.buffers()),
        "gradients": gradients,
        "optimizer": 2 * gradients + STEP_BYTES * len(trained),
        "buckets": gradients if strategy == "ddp" and gpus > 1 else 0,
    }


def fsdp_working_set(model: nn.Module, units: list[nn.Module], dtype: torch.dtype) -> int:
    """Bytes FSDP2 holds unsharded at once in the compute `dtype` (see the module docstring)."""
    item = torch.empty((), dtype=dtype, device="meta").element_size()
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root = [p for p in model.parameters() if id(p) not in in_units]
    root_bytes = sum(p.numel() for p in root) * item + sum(p.numel() for p in root if p.requires_grad) * item
    sizes = sorted((sum(p.numel() for p in unit.parameters()) for unit in units), reverse=True)
    largest_trained = max((sum(p.numel() for p in unit.parameters() if p.requires_grad) for unit in units),
                          default=0)
    return root_bytes + sum(sizes[:2]) * item + largest_trained * (item + 4)


# -- activations ---------------------------------------------------------------------------------------
def _storage(t: Tensor) -> tuple[int, int]:
    """(identity, bytes) of the storage under `t`: views of one storage are one."""
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


@dataclass
class SavedTensors:
    """What one forward and loss keep for backward, by storage (identity -> bytes)."""

    outside: dict[int, int]  # saved outside every unit
    units: list[dict[int, int]]  # saved inside each unit (first saver wins)
    unit_inputs: dict[int, int]  # the units' inputs: what checkpointed units keep
    weight_copies: dict[int, int]  # autocast's low-precision copies of the parameters

    def kept_bytes(self, checkpointing: bool) -> int:
        """What stays allocated from forward to backward: everything saved, or with checkpointing what is
        saved outside the units and the units' inputs."""
        if not checkpointing:
            return sum(self.outside.values()) + sum(sum(unit.values()) for unit in self.units)
        return sum({**self.outside, **self.unit_inputs}.values())

    def recompute_bytes(self) -> int:
        """With checkpointing: the largest unit's saved set, made again in backward, beyond what is kept."""
        kept = {**self.outside, **self.unit_inputs}
        return max((sum(b for key, b in unit.items() if key not in kept) for unit in self.units), default=0)


class _WeightCasts(TorchDispatchMode):
    """Records the storages of the casts of the given storages (autocast's copies of the weights)."""

    def __init__(self, weights: set[int], keep: list):
        super().__init__()
        self.weights, self.keep, self.copies = weights, keep, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and _storage(args[0])[0] in self.weights:
            key, size = _storage(out)
            self.copies[key] = size
            self.keep.append(out)  # alive until the trace ends, so that no other storage takes its identity
        return out


def trace_saved_tensors(model: nn.Module, loss: Loss, units: list[nn.Module], precision: str,
                        strategy: str) -> SavedTensors:
    """Run `loss(model)` once on fake tensors and sort what autograd saves for backward. `model` must be
    on the meta device (its parameters become fake CPU tensors here)."""
    dtype = COMPUTE_DTYPES[precision]
    keep: list = []  # every tensor recorded, alive until the end: storage identities stay unique
    owner: dict[int, int | None] = {}  # storage -> the unit that saved it first (None: outside)
    sizes: dict[int, int] = {}
    unit_inputs: dict[int, int] = {}
    running: list[int] = []

    def pack(t: Tensor) -> Tensor:
        key, size = _storage(t)
        if key not in owner:
            owner[key], sizes[key] = (running[-1] if running else None), size
            keep.append(t)
        return t

    def enter(index: int):
        def hook(module, args):
            running.append(index)
            if args and isinstance(args[0], Tensor):
                key, size = _storage(args[0])
                unit_inputs[key] = size
                keep.append(args[0])
        return hook

    def leave(module, args, output):
        running.pop()

    if strategy == "fsdp":
        model.to(dtype)  # the parameters as gathered (still on the meta device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        model.to_empty(device="cpu")
        if strategy == "fsdp":  # the root casts its inputs as FSDP does
            stack.enter_context(_cast_inputs(model, dtype))
        weights = {_storage(t)[0] for t in [*model.parameters(), *model.buffers()]}
        casts = stack.enter_context(_WeightCasts(weights, keep))
        for i, unit in enumerate(units):
            stack.callback(unit.register_forward_pre_hook(enter(i)).remove)
            stack.callback(unit.register_forward_hook(leave).remove)
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        if strategy == "ddp" and precision != "fp32":
            stack.enter_context(torch.autocast("cpu", dtype=dtype))
        keep.append(loss(model))
    weights |= set(casts.copies)
    activations = {key: size for key, size in sizes.items() if key not in weights}
    return SavedTensors(
        outside={k: s for k, s in activations.items() if owner[k] is None},
        units=[{k: s for k, s in activations.items() if owner[k] == i} for i in range(len(units))],
        unit_inputs={k: s for k, s in unit_inputs.items() if k not in weights},
        weight_copies=casts.copies)


@contextlib.contextmanager
def _cast_inputs(model: nn.Module, dtype: torch.dtype):
    """The root's floating-point inputs cast to `dtype`, as FSDP's MixedPrecisionPolicy casts them."""
    def cast(x: Any) -> Any:
        return x.to(dtype) if isinstance(x, Tensor) and x.is_floating_point() else x

    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: (tuple(map(cast, args)), {k: cast(v) for k, v in kwargs.items()}),
        with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# -- the plan ------------------------------------------------------------------------------------------
def plan_memory(build: Callable[[], nn.Module], loss: Loss, units: Units, gpus: int = 1, strategy: str = "ddp",
                precision: str = "bf16", grad_checkpointing: bool = False) -> MemoryPlan:
    """The per-GPU memory of training the model `build()` makes (built here on the meta device: no memory)
    with the batch `loss` makes, on `gpus` GPUs under `strategy` in `precision` (fp32 | bf16 | fp16)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    if precision not in COMPUTE_DTYPES:
        raise ConfigError(f"unknown precision {precision!r}; choose from: {', '.join(COMPUTE_DTYPES)}")
    with torch.device("meta"):
        model = build()
    model.train()
    blocks = units(model)
    states = state_bytes(model, gpus, strategy)
    params = list(model.parameters())
    saved = trace_saved_tensors(model, loss, blocks, precision, strategy)
    compute = (fsdp_working_set(model, blocks, COMPUTE_DTYPES[precision]) if strategy == "fsdp"
               else sum(saved.weight_copies.values()))
    return MemoryPlan(**states, compute_weights=compute, activations=saved.kept_bytes(grad_checkpointing),
                      recompute=saved.recompute_bytes() if grad_checkpointing else 0,
                      strategy=strategy, gpus=gpus, precision=precision, grad_checkpointing=grad_checkpointing,
                      num_parameters=sum(p.numel() for p in params),
                      num_trained=sum(p.numel() for p in params if p.requires_grad))


# -- measuring -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """What `steps` real training steps allocated."""

    steps: int
    forward_bytes: int  # what the last step's forward and loss left allocated: the saved tensors, copies
    max_allocated: int | None  # CUDA: torch.cuda.max_memory_allocated over the steps (None on a CPU)
    state_bytes: int  # the parameters, buffers and optimizer state after the last step (gradients freed)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "forward_bytes": self.forward_bytes, "max_allocated": self.max_allocated,
                "state_bytes": self.state_bytes}


def measure_training(model: nn.Module, loss: Loss, precision: str, steps: int = 3,
                     grad_checkpointing: bool = False, strategy: str = "ddp",
                     units: Callable[[nn.Module], list[nn.Module]] | None = None) -> Measured:
    """Train `model` (on its device) for `steps` steps on the batches `loss` makes, as the engine trains one
    process (AdamW over its parameter groups, autocast in `precision`, gradients freed after each step;
    under `fsdp` the model sharded by `units` over a process group of one, with FSDP's mixed precision
    instead of autocast), and measure what it allocates: on a GPU with CUDA's allocator counters, on a CPU
    with the profiler's record of every allocation and free of the last step."""
    device = next(model.parameters()).device
    if grad_checkpointing:
        enable_grad_checkpointing(model)
    model.train()
    sharding = None
    if strategy == "fsdp":
        from .distributed import DistInfo
        from .engine import LOW_PRECISION
        from .parallel import select_strategy

        sharding = select_strategy(DistInfo(), device, "fsdp", units, param_dtype=LOW_PRECISION.get(precision))
        model = sharding.wrap(model)
    optimizer = build_adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95), device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    try:
        return _measure(model, loss, precision if sharding is None else "fp32", steps, optimizer, scaler, device)
    finally:
        if sharding is not None:
            sharding.close()


def _measure(model: nn.Module, loss: Loss, precision: str, steps: int, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, device: torch.device) -> Measured:
    def forward() -> Tensor:
        with autocast(device, precision):
            return loss(model)

    def rest(value: Tensor) -> None:
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            before = torch.cuda.memory_allocated(device)
            value = forward()
            forward_bytes = torch.cuda.memory_allocated(device) - before
            rest(value)
            del value
        torch.cuda.synchronize(device)
        return Measured(steps, forward_bytes, torch.cuda.max_memory_allocated(device),
                        torch.cuda.memory_allocated(device))
    for _ in range(steps - 1):
        rest(forward())
    forward_bytes = _profiled_forward_bytes(forward, rest)
    tensors = [*model.parameters(), *model.buffers(),
               *(v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor))]
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]  # a DTensor: this rank's shard
    return Measured(steps, forward_bytes, None, sum(t.numel() * t.element_size() for t in local))


def _profiled_forward_bytes(forward: Callable[[], Tensor], rest: Callable[[Tensor], None]) -> int:
    """Bytes the CPU allocator handed out and did not take back during `forward()`, from the profiler's
    record of each allocation and free (what `torch.cuda.memory_allocated` counts on a GPU)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with record_function("vitmae.plan.forward"):
            value = forward()
        rest(value)
    events = prof.profiler.kineto_results.events()
    span = next(e for e in events if e.name() == "vitmae.plan.forward")
    return sum(e.nbytes() for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
               and span.start_ns() <= e.start_ns() <= span.end_ns())

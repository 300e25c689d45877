"""The one training engine, for pre-training, fine-tuning and linear probing alike.

A task hands it a model, a dataset and an objective (model, batch -> loss); the engine owns everything
else: device and precision, the parallel strategy (train/parallel.py), activation checkpointing, the
optimizer and its schedule, gradient accumulation and clipping, logging, atomic checkpoints, exact resume
and clean stops on SIGTERM / SIGINT. It knows nothing of MAE.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, IterableDataset
from tqdm import tqdm

from ..data import Batch, DataError, EpochSampler, build_loader
from ..data.source import require_readable
from ..errors import ConfigError
from ..options import flag_name
from ..model.vit import param_groups
from .config import COMPILE_MODES, TrainOptions
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed, raise_if_peer_lost
from .hooks import Hook
from .loggers import build_loggers, parse_log_to
from .parallel import select_strategy
from .run_dir import claim_run_dir, resume_notes
from .optim import build_adamw, lr_at, set_lr
from .runtime import Runtime, resolve_device

LOG_EVERY_STEPS, LOG_POINTS = 20, 50  # the default logging interval, and the points a short run gets
# A CPU run projected to take longer than this is said so after its first steps, with the options that
# decide its length: a default sized for GPUs and large images can otherwise spend hours without a word.
LONG_RUN_S = 3600.0
PROJECTION_STEPS = 3  # steps timed for the projection (after the first, which pays for start-up)
# The dtype FSDP gathers parameters in, by the run's precision (fp32: none, parameters stay as they are).
LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}

class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        """The scalar loss of one micro-batch at optimizer step `step` (from 1)."""


class NonFiniteLossError(RuntimeError):
    pass


class WorkerLostError(RuntimeError):
    """A DataLoader worker process died; the run saved what it had (one line for the user)."""


class RunInterrupted(Exception):
    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped after step {step}, checkpoint saved to {checkpoint}")


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress (0-based)
    epoch_batches: int = 0  # micro-batches of that epoch already consumed
    images: int = 0  # images trained on, all processes
    train_time_s: float = 0.0


def compile_model(model: nn.Module, setting: bool | None, mode: str, device: torch.device) -> nn.Module:
    """`torch.compile(model)` where asked for, or by default (`setting` None) on GPUs, where fusing the
    norms, activations and residual adds is worth its compile time; on CPUs the eager model is the default
    (a small model compiles for longer than a short run takes)."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"unknown --compile-mode {mode!r}; choose from: {', '.join(COMPILE_MODES)}")
    return torch.compile(model, mode=None if mode == "default" else mode) if compiles(setting, device) else model


def compiles(setting: bool | None, device: torch.device) -> bool:
    """Whether a run compiles: as `--compile` says, else on GPUs only."""
    return device.type == "cuda" if setting is None else setting


def enable_grad_checkpointing(model: nn.Module) -> None:
    """timm's `set_grad_checkpointing()` on the model, or, for a model that only wraps ours (torchvision's
    detectors around a ViTDet backbone), on each outermost sub-module that has it."""
    holders: list[str] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{holder}.") or not holder for holder in holders)
        if hasattr(module, "set_grad_checkpointing") and not inside:
            module.set_grad_checkpointing(True)
            holders.append(name)
    if not holders:
        raise ConfigError(f"--grad-checkpointing: a {type(model).__name__} has no blocks to check-point "
                          "(no set_grad_checkpointing)")


def _duration(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _option_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def write_json(path: Path, data: Any) -> None:
    from .checkpoint import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class Trainer:
    def __init__(self, model: nn.Module, objective: Objective, dataset: Dataset, config: TrainOptions, *,
                 groups: list[dict] | None = None, betas: tuple[float, float] = (0.9, 0.95),
                 make_optimizer: Callable[[list[dict], float], torch.optim.Optimizer] | None = None,
                 hooks: Sequence[Hook] = (), samples_per_epoch: int | None = None, collate_fn=None,
                 cost_options: Sequence[str] = (), shard_units: Callable[[nn.Module], list[nn.Module]] | None = None):
        """`cost_options`: the task's options (field names) besides the batch size and the epochs that decide
        how long a step takes (a crop size, say); the projection of a long run names them. `shard_units`:
        the modules `--strategy fsdp` shards one by one (the family's; the root alone without it)."""
        self.config = cfg = config
        self.cost_options = ("batch_size", "epochs", *cost_options)
        self.dist = init_distributed(resolve_device(cfg.device, DistInfo()).type)
        self.runtime = Runtime(cfg.device, cfg.precision, self.dist)
        self.device, self.precision = self.runtime.device, self.runtime.precision
        self.output = Path(cfg.output)
        claim_run_dir(self.output, cfg.resume, cfg.overwrite, clear=self.dist.is_main)
        barrier(self.dist)  # no rank writes before every rank has checked
        parse_log_to(cfg.log_to)  # a backend that is not installed stops the run before it starts
        self.model = model.to(self.device)
        if cfg.fp8:
            from .fp8 import convert_to_fp8

            convert_to_fp8(self.model)
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(self.model)
        # The strategy wraps the model before the optimizer is made: a sharding strategy replaces the
        # parameters, and loads a checkpoint into the wrapped model.
        self.strategy = select_strategy(self.dist, self.device, cfg.strategy, shard_units,
                                        cfg.fsdp_reshard_after_forward, cfg.cpu_offload, LOW_PRECISION.get(self.precision))
        # Under fsdp the units are compiled one by one, each then sharded (torchtitan's way), not the whole model.
        compiled_units = self.strategy.name == "fsdp" and shard_units is not None
        if compiled_units and compiles(cfg.compile, self.device):
            for unit in shard_units(self.model):
                unit.compile(mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
        # FSDP's mixed precision gathers the parameters in the compute dtype: no autocast on top (torchtitan's)
        self.forward_precision = contextlib.nullcontext if self.strategy.param_dtype else self.runtime.autocast
        names = {id(p): name for name, p in self.model.named_parameters()}
        wrapped = self.strategy.wrap(self.model)
        if groups is not None:  # made by the task before a sharding strategy replaced the parameters
            current = dict(self.model.named_parameters())
            groups = [{**group, "params": [current[names[id(p)]] for p in group["params"]]} for group in groups]
        self.objective, self.dataset, self.hooks = objective, dataset, list(hooks)
        self.progress = Progress()
        self.extra_state: dict[str, Any] = {}  # task values that must survive a resume
        self.skipped: dict[str, str] = {}
        self.last_checkpoint: Path | None = None
        self._saved_step = -1

        effective_batch = cfg.batch_size * cfg.accum_steps * self.dist.world_size
        self.base_lr = cfg.lr if cfg.lr is not None else cfg.blr * effective_batch / 256
        groups = groups if groups is not None else param_groups(model, cfg.weight_decay)
        self.optimizer = (make_optimizer(groups, self.base_lr) if make_optimizer
                          else build_adamw(groups, self.base_lr, betas, self.device))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        self.sampler = None
        if isinstance(dataset, IterableDataset):
            if not samples_per_epoch:
                raise ConfigError("streamed data (shards) needs --samples-per-epoch: its length is unknown")
            rank_samples = samples_per_epoch // self.dist.world_size
        else:
            self.sampler = EpochSampler(len(dataset), cfg.seed, True, self.dist.rank, self.dist.world_size)
            rank_samples = self.sampler.samples_per_rank
        self.steps_per_epoch = rank_samples // cfg.batch_size // cfg.accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{rank_samples} images per process are fewer than one step of "
                             f"{cfg.batch_size} x {cfg.accum_steps}: lower --batch-size or --accum-steps")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.stop_step = min(self.total_steps, cfg.max_steps or self.total_steps)
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        # A run of a few hundred steps logged every 20 would draw its loss curve from a handful of points.
        self.log_every = cfg.log_every_steps or max(1, min(LOG_EVERY_STEPS, self.stop_step // LOG_POINTS))
        self.loader = build_loader(dataset, cfg.batch_size, self.sampler, cfg.num_workers,
                                   pin_memory=self.device.type == "cuda", collate_fn=collate_fn)
        if cfg.resume:
            self._resume(cfg.resume)
        self.train_model = wrapped if compiled_units else compile_model(wrapped, cfg.compile, cfg.compile_mode,
                                                                        self.device)
        self.compiled = compiles(cfg.compile, self.device)
        self._stop_signal: int | None = None
        # Step losses stay on the device until the run syncs anyway (logging, saving, epoch end): reading
        # each one at once would stall the host every step and keep it from queueing the next.
        self._unchecked_losses: list[tuple[int, Tensor]] = []
        self._previous_batch: Batch | None = None
        self._window_losses: list[float] = []
        self._step_times: list[float] = []  # of this process's first steps, for the projection
        self._batch_iterator: Iterator[Batch] | None = None  # the loader's, of the epoch in progress
        self._loggers: list | None = None
        self._pbar = None

    @contextlib.contextmanager
    def main_rank_model(self) -> Iterator[None]:
        """Around what rank 0 alone runs the model for (evaluations, pictures, the best weights); every rank
        enters it. Under a sharding strategy, rank 0's `self.model` is a whole copy inside."""
        with self.strategy.main_rank_model() as replica:
            if replica is None:
                yield
                return
            model, self.model = self.model, replica
            try:
                yield
            finally:
                self.model = model

    # -- checkpoints -----------------------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        state = {
            "progress": dataclasses.asdict(self.progress),
            "optimizer": self.strategy.optimizer_state(self.model, self.optimizer),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "extra": self.extra_state,
            "skipped": self.skipped,
            "config": json.dumps(dataclasses.asdict(self.config), default=list),
            "world_size": self.dist.world_size,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self) -> Path | None:
        self._check_losses()  # never save weights that a non-finite loss has already corrupted
        if self.strategy.writes_checkpoints:
            name = f"step-{self.progress.step:08d}"
            self.last_checkpoint = self.strategy.save(self.output, name, self.model, self.train_state(),
                                                      self.config.keep_checkpoints)
        self._saved_step = self.progress.step
        barrier(self.dist)
        return self.last_checkpoint

    def _resume(self, path: str) -> None:
        weights, state, ckpt, notes = self.strategy.load(path)
        processes = state.get("world_size", self.dist.world_size)  # recorded since manifests came in
        if processes != self.dist.world_size and not self.strategy.reshards:
            raise ConfigError(f"--resume {path}: the run trained on {processes} process(es), this is "
                              f"{self.dist.world_size}: its effective batch, learning rate and data order would "
                              f"change; resume it on {processes}")
        notes += resume_notes(state["config"], self.config, state["progress"]["step"], self.steps_per_epoch,
                              self.base_lr, self.warmup_steps, processes, self.dist.world_size)
        self.strategy.load_model_state(self.model, weights, f"--resume {path}")
        if self.dist.is_main:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        self.strategy.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.progress = Progress(**state["progress"])
        self.extra_state = dict(state["extra"])
        self.skipped = dict(state["skipped"])
        self.last_checkpoint = ckpt
        self._saved_step = self.progress.step

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        previous_handlers = self._install_signal_handlers()
        try:
            for hook in self.hooks:
                hook.on_start(self)
            self._log_file = open(self.output / "metrics.jsonl", "a") if self.dist.is_main else None
            self._pbar = tqdm(total=self.stop_step, initial=self.progress.step, unit="step",
                              dynamic_ncols=True, disable=not self.dist.is_main)
            while self.progress.step < self.stop_step:
                self._train_epoch()
                require_readable(self.progress.images, getattr(self.config, "data", "the data"), self.skipped.values())
                if self.progress.epoch_batches == 0:  # the epoch completed (not stopped by max_steps)
                    epoch = self.progress.epoch
                    for hook in self.hooks:
                        hook.on_epoch_end(self, epoch)
                    if self.config.save_every_epochs and epoch % self.config.save_every_epochs == 0:
                        self.save()
            self._pbar.close()
            if self._saved_step != self.progress.step:
                self.save()
            for hook in self.hooks:
                hook.on_end(self)
            return self.summary()
        except RuntimeError as err:
            raise_if_peer_lost(err, self.dist, self.output)  # a dead node: one line, and how to resume
            if "DataLoader worker" in str(err):
                raise self._worker_lost(err) from None
            raise
        finally:
            if self._pbar is not None:
                self._pbar.close()
            if getattr(self, "_log_file", None):
                self._log_file.close()
            for logger in self._loggers or []:
                logger.close()
            self._loggers = None
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.strategy.close()

    def _worker_lost(self, err: RuntimeError) -> "WorkerLostError":
        """A data-loading worker died (the OOM killer, a signal): the weights are still those of the last
        completed step, so save them (alone; under DDP the other ranks are mid-step) and say how to go on."""
        self._stop_workers()
        reason = str(err).strip().splitlines()[0].rstrip(". ")
        if self.dist.enabled:
            saved = f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        else:
            saved = f"saved step {self.progress.step} in {self.save()}"
        return WorkerLostError(f"a data-loading worker died ({reason}; a worker killed by signal is often the "
                               f"out-of-memory killer: fewer --num-workers or a smaller --batch-size need less "
                               f"memory); {saved}; continue with --resume {self.output}")

    def _stop_workers(self) -> None:
        """Shut the loader's workers down. Until then the DataLoader's SIGCHLD handler reports a dead worker
        again at any later moment (in the middle of the save, say); a report of it that comes before the
        shutdown is the death already being handled."""
        for _ in range(2):
            try:
                shutdown = getattr(self._batch_iterator, "_shutdown_workers", None)  # a multi-process iterator
                if shutdown is not None:
                    shutdown()
                return
            except RuntimeError as err:
                if "DataLoader worker" not in str(err):
                    raise

    def _train_epoch(self) -> None:
        cfg, progress = self.config, self.progress
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(progress.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(progress.epoch)
            self.sampler.skip(progress.epoch_batches * cfg.batch_size)
        batches = self._epoch_batches()
        if self.sampler is None:  # a stream cannot seek: consume what the resumed run already saw
            for _ in range(progress.epoch_batches):
                next(batches)
        self._window_losses.clear()
        window_images, window_start = 0, time.perf_counter()
        while progress.epoch_batches < self.steps_per_epoch * cfg.accum_steps:
            step = progress.step + 1
            lr = lr_at(step, self.base_lr, self.total_steps, self.warmup_steps, cfg.min_lr, cfg.schedule)
            set_lr(self.optimizer, lr)
            step_start, step_images = time.perf_counter(), 0
            step_loss = torch.zeros((), device=self.device)
            for micro in range(cfg.accum_steps):
                # A batch may be decoded where it goes (device-side augmentation), and only then
                # know which of its images were unreadable.
                batch = next(batches).to(self.device, non_blocking=True)
                self._record_skipped(batch)
                weight = 1.0
                if len(batch) == 0:  # every image of this micro-batch was unreadable
                    if not self.dist.enabled:
                        continue
                    # Under DDP every rank must run backward, or the others wait for its gradients
                    # forever: step on the previous batch again with a zero loss (zero gradients).
                    if self._previous_batch is None:
                        raise DataError(f"rank {self.dist.rank}: no image of the first micro-batch could be "
                                        "read (listed above); remove the unreadable files")
                    batch, weight = self._previous_batch, 0.0
                elif self.dist.enabled:  # only DDP needs it: elsewhere it would hold a batch's memory
                    self._previous_batch = batch
                last = micro == cfg.accum_steps - 1
                with contextlib.nullcontext() if last else self.strategy.no_sync():
                    with self.forward_precision():
                        loss = self.objective(self.train_model, batch, step, micro) * weight
                    self.scaler.scale(loss / cfg.accum_steps).backward()
                step_loss += loss.detach().float() / cfg.accum_steps
                step_images += len(batch) if weight else 0
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                self.strategy.clip_grad_norm(self.model, cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self._unchecked_losses.append((step, step_loss))
            progress.step = step
            for hook in self.hooks:
                hook.on_step_end(self)
            progress.epoch_batches += cfg.accum_steps
            step_time = time.perf_counter() - step_start
            progress.train_time_s += step_time
            self._project(step_time)
            progress.images += step_images * self.dist.world_size
            window_images += step_images
            self._pbar.update(1)
            log_now = step % self.log_every == 0 or step == self.stop_step
            if log_now:
                self._check_losses()
                elapsed = time.perf_counter() - window_start
                window = torch.tensor(sum(self._window_losses) / len(self._window_losses), device=self.device)
                mean_loss = all_reduce_mean(window, self.dist).item()
                img_s = window_images * self.dist.world_size / max(elapsed, 1e-9)
                self._log(step, progress.epoch + progress.epoch_batches / (self.steps_per_epoch * cfg.accum_steps),
                          mean_loss, lr, img_s)
                self._window_losses.clear()
                window_images, window_start = 0, time.perf_counter()
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                self.save()
            if self._should_stop(at_sync_point=log_now):
                raise RunInterrupted(self._stop_signal or signal.SIGTERM, step, self.save())
            if step >= self.stop_step:
                self._check_losses()
                return
        self._check_losses()
        progress.epoch += 1
        progress.epoch_batches = 0

    def _epoch_batches(self) -> Iterator[Batch]:
        """The batches of the current epoch. A stream shorter than its nominal epoch (--samples-per-epoch)
        starts over, as WebDataset's resampled streams do; a sampler's epoch is always long enough."""
        while True:
            count = 0
            self._batch_iterator = iter(self.loader)
            try:
                for count, batch in enumerate(self._batch_iterator, 1):
                    yield batch
            except (ConnectionError, EOFError) as err:  # a worker died while handing over a batch
                raise RuntimeError(f"DataLoader worker exited unexpectedly ({type(err).__name__}: {err})") from err
            if count == 0:
                raise ConfigError(f"the data gave no batch of {self.config.batch_size} images")

    # -- bookkeeping -----------------------------------------------------------------------------------
    def _check_losses(self) -> None:
        """Read the step losses still on the device (one sync) and stop at the first non-finite one."""
        if not self._unchecked_losses:
            return
        steps = [step for step, _ in self._unchecked_losses]
        values = torch.stack([loss for _, loss in self._unchecked_losses]).tolist()
        self._unchecked_losses.clear()
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss is {value} at step {step} (epoch {self.progress.epoch + 1}); stopped. "
                    f"Last good checkpoint: {self.last_checkpoint or 'none'}. "
                    "Try a lower --blr/--lr, --clip-grad 1.0 or --precision fp32.")
        self._window_losses.extend(values)

    def _project(self, step_time: float) -> None:
        """After the first timed steps of a CPU run, one line if the rest is projected past LONG_RUN_S."""
        self._step_times.append(step_time)
        if len(self._step_times) != PROJECTION_STEPS + 1 or self.device.type != "cpu" or not self.dist.is_main:
            return
        per_step = sum(self._step_times[1:]) / PROJECTION_STEPS
        remaining = self.stop_step - self.progress.step
        if per_step * remaining <= LONG_RUN_S:
            return
        options = ", ".join(f"{flag_name(name)} {_option_text(getattr(self.config, name))}"
                            for name in self.cost_options if hasattr(self.config, name))
        tqdm.write(f"note: at {per_step:.2f} s a step on the CPU, the remaining {remaining} steps take about "
                   f"{_duration(per_step * remaining)}; what decides it: {options}; smaller values, or "
                   f"--max-steps, shorten it")

    def _record_skipped(self, batch: Batch) -> None:
        for path, reason in batch.skipped:
            if path not in self.skipped:
                self.skipped[path] = reason
                if self.dist.is_main:
                    tqdm.write(f"skipped unreadable image {path}: {reason}")

    def _log(self, step: int, epoch: float, loss: float, lr: float, img_s: float) -> None:
        self._pbar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{img_s:.0f}", refresh=False)
        if not self.dist.is_main:
            return
        record = {"step": step, "epoch": round(epoch, 4), "loss": loss, "lr": lr, "img_s": round(img_s, 1)}
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()
        self.log_scalars(step, {"train/loss": loss, "train/lr": lr, "train/img_s": img_s})

    def loggers(self) -> list:
        """The `--log-to` backends (rank 0 only), opened at the first value logged."""
        if not self.dist.is_main:
            return []
        if self._loggers is None:
            self._loggers = build_loggers(self.config.log_to, self.output, self.config)
        return self._loggers

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Scalars to every `--log-to` backend (rank 0); hooks use it too."""
        for logger in self.loggers():
            logger.log_scalars(step, values)

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """A picture (PIL image) to every `--log-to` backend (rank 0)."""
        for logger in self.loggers():
            logger.log_image(tag, image, step)

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM / SIGINT finish the step in flight, save, and stop; a second SIGINT stops at once."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum

        return {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}

    def _should_stop(self, at_sync_point: bool) -> bool:
        if not self.dist.enabled:
            return self._stop_signal is not None
        if not at_sync_point:  # agreeing costs a device sync: only where the run syncs anyway
            return False
        flag = torch.tensor(float(self._stop_signal is not None), device=self.device)
        return bool(all_reduce_mean(flag, self.dist).item() > 0)  # every rank stops at the same step

    def epochs_done(self) -> float:
        """Epochs trained so far, fractions included (no collective: any rank may ask alone)."""
        p = self.progress
        return round(p.epoch + p.epoch_batches / (self.steps_per_epoch * self.config.accum_steps), 4)

    def summary(self) -> dict[str, Any]:
        skipped = self.skipped
        if self.dist.enabled:
            import torch.distributed as torch_dist

            gathered: list[dict[str, str]] = [{} for _ in range(self.dist.world_size)]
            torch_dist.all_gather_object(gathered, self.skipped)
            skipped = {k: v for part in gathered for k, v in part.items()}
        p = self.progress
        return {
            "steps": p.step,
            "epochs": self.epochs_done(),
            "images": p.images,
            "train_time_s": round(p.train_time_s, 2),
            "img_s": round(p.images / max(p.train_time_s, 1e-9), 1),
            "lr": self.base_lr,
            "effective_batch_size": self.config.batch_size * self.config.accum_steps * self.dist.world_size,
            "precision": self.precision,
            "compiled": self.compiled,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "strategy": self.strategy.name,
            "skipped_files": [{"path": k, "reason": v} for k, v in sorted(skipped.items())],
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
        }

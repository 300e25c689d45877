"""What a task adds to a run at fixed points: `Hook`, a moving average of the weights (`ModelEma`), and
`PeriodicEvaluation`, the one schedule every evaluator follows (a classifier's accuracy, a segmentation's
mIoU, COCO AP, the kNN monitor, the held-out loss of pre-training).

An evaluation's history lives in the training state (`trainer.extra_state`), so a resumed run goes on with
it; so does the best entry so far, whose weights `save_best` keeps in RUN/checkpoints/best.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ..errors import ConfigError
from ..model.flat_names import flat_state_dict, load_flat_state_dict

if TYPE_CHECKING:  # the engine imports this module
    from torch import nn

    from .engine import Trainer


class Hook:
    """Task-specific work at fixed points of a run (evaluation, pictures). Methods run on every rank."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...
    def on_end(self, trainer: Trainer) -> None: ...


class ModelEma(Hook):
    """An exponential moving average of the weights, updated after every optimizer step (timm's
    ModelEmaV3 with its warm-up: the decay grows towards `decay` with the step count, so a short run
    averages over a window that fits it). The average lives in the run's training state, so a resumed
    run averages on; an evaluation may measure and keep it instead of the trained weights."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"--model-ema-decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.ema = None

    def on_start(self, trainer: Trainer) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(trainer.model, decay=self.decay, use_warmup=True)
        if "ema" in trainer.extra_state:  # resumed
            load_flat_state_dict(self.ema.module, trainer.extra_state["ema"])
        # The state dict's tensors are the average's own, updated in place: every checkpoint saves them.
        trainer.extra_state["ema"] = flat_state_dict(self.ema.module)  # flat names, as in the weights file

    def on_step_end(self, trainer: Trainer) -> None:
        self.ema.update(trainer.model, step=trainer.progress.step)

    @property
    def module(self) -> nn.Module:
        """The averaged model."""
        return self.ema.module


class PeriodicEvaluation(Hook):
    """An evaluation before the first step (with `at_start`), every `every` epochs (0: none between), at
    epoch `total` whatever `every` says, and at the end of a run that has not just been evaluated (one
    that stopped mid-epoch: max_steps). A subclass says what it measures (`evaluate`) and how it shows it
    (`scalars`, `line`, `on_record`).

    Each entry, {epoch, step, **evaluate(), time_s with `timed`}, is appended to
    `trainer.extra_state[history_key]`. With `best_key`, the entry scoring highest on it (None counts as
    0) is kept in `extra_state["best"]`, and with `save_best` its weights (`model(trainer)`) in
    RUN/checkpoints/best. With `main_only` rank 0 alone evaluates (what no other rank needs); otherwise
    every rank does, so that every rank has the results, and rank 0 alone writes and prints."""

    every: int = 1
    total: int | None = None
    at_start: bool = False
    main_only: bool = False
    timed: bool = False
    history_key: str = "history"
    best_key: str | None = None
    save_best: bool = False

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        raise NotImplementedError

    def model(self, trainer: Trainer) -> nn.Module:
        """The weights evaluated and kept as the best: the trained ones unless a subclass says otherwise."""
        return trainer.model

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        """What of an entry goes to the `--log-to` backends."""
        return {}

    def line(self, entry: dict[str, Any]) -> str | None:
        """What is printed of an entry, after 'epoch E: ' (None: nothing)."""
        return None

    def on_record(self, trainer: Trainer, entry: dict[str, Any], point: str) -> None:
        """More to do with a new entry on rank 0 (pictures); `point` is "start", "epoch" or "end"."""

    def history(self, trainer: Trainer) -> list[dict[str, Any]]:
        return trainer.extra_state.get(self.history_key, [])

    def record(self, trainer: Trainer, epoch: float, point: str = "epoch") -> dict[str, Any] | None:
        """Evaluate now and keep the entry (None on the ranks that do not evaluate). Every rank calls it."""
        if not self.main_only:
            return self._record(trainer, epoch, point)
        with trainer.main_rank_model():  # under fsdp, rank 0 evaluates a whole copy
            return self._record(trainer, epoch, point) if trainer.dist.is_main else None

    def _record(self, trainer: Trainer, epoch: float, point: str) -> dict[str, Any]:
        start = time.perf_counter()
        entry = {"epoch": epoch, "step": trainer.progress.step, **self.evaluate(trainer)}
        if self.timed:
            entry["time_s"] = round(time.perf_counter() - start, 2)
        trainer.extra_state.setdefault(self.history_key, []).append(entry)
        trainer.log_scalars(trainer.progress.step, self.scalars(entry))
        if self.best_key is not None:
            best = trainer.extra_state.get("best")
            if best is None or (entry[self.best_key] or 0) > (best[self.best_key] or 0):
                trainer.extra_state["best"] = entry
                if self.save_best:
                    trainer.strategy.save_weights(self.model(trainer), trainer.output / "checkpoints" / "best")
        if trainer.dist.is_main:
            self.on_record(trainer, entry, point)
            line = self.line(entry)
            if line is not None:
                tqdm.write(f"epoch {epoch:g}: {line}")
        return entry

    def on_start(self, trainer: Trainer) -> None:
        if self.at_start and not self.history(trainer):
            self.record(trainer, 0, "start")

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if (self.every and epoch % self.every == 0) or epoch == self.total:
            self.record(trainer, epoch)

    def on_end(self, trainer: Trainer) -> None:
        history = self.history(trainer)
        if not history or history[-1]["step"] != trainer.progress.step:  # not evaluated at this step yet
            self.record(trainer, trainer.epochs_done(), "end")  # not summary(): a collective

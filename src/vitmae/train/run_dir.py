"""A run directory: what a run may write into, what a resume may change, and which checkpoint of it a
later command takes.

A run writes only into the directory it was told (`--output`) and resumes only the run it was given
(`--resume`). A fresh run refuses a directory that already holds anything unless `--overwrite` is given,
which removes the files a run writes there (never other files). A resume refuses options that would change
the run's meaning (its model, data, batch, optimizer or schedule) and notes how the schedule continues when
`--epochs` changes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..interop.vitmae_format import WEIGHTS
from .config import TrainOptions
from .optim import lr_at

# What runs write into their directory; `--overwrite` removes these and nothing else.
RUN_FILES = ("checkpoints", "config.yaml", "metrics.json", "metrics.jsonl", "tensorboard", "wandb", "mlruns",
             "reconstructions", "predictions", "report.html", "detector.json", "segmenter.json", "classifier",
             "images", "confusion_matrix.png")
# Options a resume may change: where and how the run executes, what it logs and keeps, where it stops.
FREE_ON_RESUME = {"output", "resume", "overwrite", "device", "precision", "num_workers", "compile", "compile_mode",
                  "grad_checkpointing", "log_every_steps", "log_to", "save_every_steps", "keep_checkpoints",
                  "max_steps", "epochs", "val_data", "heldout_samples", "eval_knn", "cache_features", "strategy",
                  "fsdp_reshard_after_forward", "cpu_offload"}
# Free on resume too when the effective batch (batch x accumulation x processes) stays the run's.
BATCH_SPLIT = ("batch_size", "accum_steps")


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a run dir, its checkpoints/ dir or one checkpoint dir."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "checkpoints").is_dir() or (candidate / "config.yaml").is_file():
            return candidate
    return path


WHICH = ("best", "last")  # the checkpoints of a run a user may take


def run_checkpoint(checkpoint: str | Path, which: str) -> Path:
    """The checkpoint to use of a run directory: its best (RUN/checkpoints/best, the weights of the best
    validation score the run reported) or its last one; a run without a best, and any other path, as given."""
    if which not in WHICH:
        raise ConfigError(f"unknown --which {which!r}; choose from: {', '.join(WHICH)}")
    path = Path(checkpoint)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if which == "best" and root.name == "checkpoints" and (root / "best" / WEIGHTS).is_file():
        return root / "best"
    return path


def claim_run_dir(output: str | Path, resume: str | None, overwrite: bool, clear: bool = True) -> None:
    """Refuse to write where a run would damage something; with `overwrite` (and `clear`: the process that
    writes), remove a previous run's files."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file, not a directory")
    if resume is not None and output.resolve() == run_dir_of(resume).resolve():
        return
    contents = sorted(p.name for p in output.iterdir()) if output.is_dir() else []
    if not contents:
        return
    if not overwrite:
        is_run = any(name in ("checkpoints", "config.yaml", "metrics.jsonl") for name in contents)
        what = "holds a run" if is_run else f"is not empty ({', '.join(contents[:3])}{', ...' if len(contents) > 3 else ''})"
        hint = f"continue it with --resume {output}, " if is_run and resume is None else ""
        raise ConfigError(f"--output {output} {what}: {hint}choose another --output, or give --overwrite to "
                          "replace its run files")
    for name in RUN_FILES if clear else ():
        target = output / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def resume_notes(saved_config: str, config: TrainOptions, step: int, steps_per_epoch: int, base_lr: float,
                 warmup_steps: int, saved_world: int = 1, world: int = 1) -> list[str]:
    """Raise a ConfigError naming each option that differs from the resumed run's and changes its meaning;
    return notes on the accepted changes (a longer or shorter schedule, another number of processes)."""
    try:
        saved = json.loads(saved_config)
    except (TypeError, ValueError):
        return []  # a run saved without its options: nothing to compare
    current = json.loads(json.dumps(dataclasses.asdict(config), default=list))
    changed = [k for k in current if k in saved and saved[k] != current[k]]
    effective = {name: options["batch_size"] * options["accum_steps"] * processes
                 for name, options, processes in (("saved", saved, saved_world), ("current", current, world))
                 if all(k in options for k in BATCH_SPLIT)}
    same_batch = effective.get("saved") == effective.get("current")
    refused = [k for k in changed if k not in FREE_ON_RESUME and not k.endswith("_every_epochs")
               and not (k in BATCH_SPLIT and same_batch)]
    if refused:
        listed = ", ".join(f"--{k.replace('_', '-')} {current[k]!r} (the run has {saved[k]!r})" for k in refused)
        raise ConfigError(f"--resume: {listed} would change what the run trains; resume with the run's own "
                          "options, or start a new run")
    notes = []
    if saved_world != world:
        if not same_batch:
            per_step = current["batch_size"] * world
            hint = (f"; keep it with --accum-steps {effective['saved'] // per_step}"
                    if effective["saved"] % per_step == 0 else "")
            raise ConfigError(f"--resume: the run trained on {saved_world} process(es) with an effective batch of "
                              f"{effective['saved']}, this is {world} with {effective['current']}: the learning rate "
                              f"and the schedule would change{hint}")
        notes.append(f"the run trained on {saved_world} process(es), this is {world}, with the same effective batch "
                     f"({current['batch_size']} x {current['accum_steps']} x {world} = {effective['current']}): each "
                     "process now reads other images in another order, so from here the run is not bit for bit "
                     "the one it would have been")
    if "epochs" not in changed:
        return notes
    old_total, new_total = saved["epochs"] * steps_per_epoch, current["epochs"] * steps_per_epoch
    if step >= new_total:
        return notes + [f"--epochs {current['epochs']}: the run already trained {step} steps, "
                        f"{step / steps_per_epoch:g} epochs; nothing is left to train"]
    lr = {total: lr_at(step + 1, base_lr, total, warmup_steps, config.min_lr, config.schedule)
          for total in (old_total, new_total)}
    return notes + [f"--epochs {current['epochs']} (the run had {saved['epochs']}): the {config.schedule} schedule "
                    f"now spans {new_total} steps instead of {old_total}; from step {step + 1} the learning rate is "
                    f"{lr[new_total]:.3g} (it would have been {lr[old_total]:.3g})"]

"""The tasks vitmae runs, one module each, registered in `TASKS`: the `vitmae` command makes a subcommand
of each entry, with a flag for every field of its options dataclass (help, choices and ranges from the
fields), and prints what its `report` says of the run's summary.

A task module exports its options dataclass (`*Options`, fields made with `options.opt`) and a
`run(options) -> summary dict` that a user can call from Python as well: it composes a model family
(`vitmae.families`: the model, its objective, evaluation and inference), data and the engine. The option
groups several tasks share are in `options`. See docs/architecture.md, "How to add a task".
"""
from __future__ import annotations

from .options import Task


def _registry() -> dict[str, Task]:
    from . import (bench, checkpoints, demo, detect, embed, evaluate, finetune, knn, linprobe, make_dataset, pictures,
                   plan, predict, pretrain, segment)

    tasks = (pretrain.TASK, finetune.TASK, linprobe.TASK, knn.TASK, embed.TASK, evaluate.TASK, segment.TASK,
             detect.TASK, predict.TASK, make_dataset.TASK, *pictures.TASKS, demo.TASK, *checkpoints.TASKS, bench.TASK,
             plan.TASK)
    return {task.name: task for task in tasks}


TASKS: dict[str, Task] = _registry()

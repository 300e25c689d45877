"""A finished dense run: the trained model rebuilt from the run's record and a checkpoint of it."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from torch import nn

from ...interop.vitmae_format import load_vitmae, resolve_checkpoint
from ...model import ViTEncoder
from ..encoder import rebuilt_encoder
from .record import DenseRecord

R = TypeVar("R", bound=DenseRecord)


@dataclass(frozen=True)
class DenseRun(Generic[R]):
    record: R  # the run's record (its family's type)
    model: nn.Module  # in eval mode, on the CPU
    checkpoint: Path  # where the weights came from

    @property
    def kind(self) -> str:
        return self.record.KIND


def load_dense_run(checkpoint: str | Path, record: R, build: Callable[[ViTEncoder, R], nn.Module]) -> DenseRun[R]:
    """The model `build` makes of the checkpoint's encoder (its config, normalisation included) and the
    record, with the checkpoint's weights."""
    weights, config = load_vitmae(checkpoint)
    model = build(rebuilt_encoder(config, record.pos_embed), record)
    model.load_state_dict(weights)
    return DenseRun(record, model.eval(), resolve_checkpoint(checkpoint))


def output_names(paths: list[str]) -> list[str]:
    """A file name per image of a prediction: its own stem, numbered where two images share one."""
    stems = [Path(p).stem for p in paths]
    shared, seen = Counter(stems), Counter()
    names = []
    for stem in stems:
        seen[stem] += 1
        names.append(f"{stem}-{seen[stem]}" if shared[stem] > 1 else stem)
    return names

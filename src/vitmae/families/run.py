"""A finished run of a family: the record it wrote beside its checkpoints (RUN/<FILE>), and its trained model
rebuilt from that record and a checkpoint.

A record holds all that rebuilds the model exactly, beyond the checkpoint's encoder config and
normalisation, and finds the run's data again. The family that trains writes it (`write`, atomically);
`vitmae evaluate`, `predict` and `demo` read it back typed (`find_record`), and through it find the run's
family (`spec.run_family`). Nothing else reads these files by their keys.

`version` says which keys a record has; each record type counts its own (VERSION). Version 0 is every
record written before the records were typed (they have no `version` key); they read as version 0, with
the keys a type added since then (ADDED) at the values those runs had. A record from a newer vitmae than
this one is refused.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from torch import nn

from ..interop import CheckpointError
from ..interop.vitmae_format import load_vitmae, resolve_checkpoint
from ..model import ViTEncoder, load_flat_state_dict
from ..train.checkpoint import write_text_atomic
from .encoder import rebuilt_encoder


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What a run of a family records. A subclass names its family (KIND) and file (FILE) and adds fields."""

    KIND: ClassVar[str]  # the family that writes it
    FILE: ClassVar[str]  # its file name in the run directory
    VERSION: ClassVar[int] = 1  # of the records of this type written now
    ADDED: ClassVar[dict[str, Any]] = {}  # keys a version-0 record may lack, and their values then

    version: int | None = None  # None: this type's VERSION (what a new record is written as)
    pos_embed: str  # the encoder's position table: "sincos", or "learned" (interpolated at other sizes)
    model: dict[str, Any]  # the encoder's architecture (the checkpoint's config says the same)

    def __post_init__(self) -> None:
        if self.version is None:
            object.__setattr__(self, "version", self.VERSION)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / self.FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path) -> RunRecord:
        """The record of `values` (a file's JSON); CheckpointError, one line, if it is not one."""
        if not isinstance(values, dict):
            raise CheckpointError(f"{where}: not a {cls.FILE} record (a JSON object)")
        version = values.get("version", 0)
        if not isinstance(version, int) or not 0 <= version <= cls.VERSION:
            raise CheckpointError(f"{where}: record version {version!r}; this vitmae reads up to {cls.VERSION}: "
                                  "upgrade vitmae")
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        given = {**(cls.ADDED if version == 0 else {}), **values, "version": version}
        unknown, missing = sorted(set(given) - {f.name for f in fields}), sorted(required - set(given))
        if unknown or missing:
            what = "; ".join(part for part in (f"unknown keys {unknown}" if unknown else "",
                                               f"missing keys {missing}" if missing else "") if part)
            raise CheckpointError(f"{where}: not a version-{version} {cls.FILE} ({what})")
        return cls(**given)


def find_record(checkpoint: str | Path, kinds: tuple[type[RunRecord], ...]) -> RunRecord | None:
    """The record of one of `kinds` of the run that `checkpoint` (the run directory, one of its checkpoints
    or a weights file) belongs to; None for any other checkpoint."""
    path = resolve_checkpoint(checkpoint)
    if not path.exists():  # a hub id, say: no run of ours
        return None
    folder = path if path.is_dir() else path.parent
    for place in (folder, *list(folder.parents)[:2]):  # the checkpoint, RUN/checkpoints, RUN
        for kind in kinds:
            if (place / kind.FILE).is_file():
                return read_record(place / kind.FILE, kind)
    return None


def read_record(path: Path, kind: type[RunRecord]) -> RunRecord:
    try:
        values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    return kind.from_dict(values, path)


R = TypeVar("R", bound=RunRecord)


@dataclass(frozen=True)
class Run(Generic[R]):
    record: R  # the run's record (its family's type)
    model: nn.Module  # in eval mode, on the CPU
    checkpoint: Path  # where the weights came from

    @property
    def kind(self) -> str:
        return self.record.KIND


def rebuild_run(checkpoint: str | Path, record: R, build: Callable[[ViTEncoder, R], nn.Module]) -> Run[R]:
    """The model `build` makes of the checkpoint's encoder (its config, normalisation included) and the
    record, with the checkpoint's weights."""
    weights, config = load_vitmae(checkpoint)
    model = build(rebuilt_encoder(config, record.pos_embed), record)
    load_flat_state_dict(model, weights)
    return Run(record, model.eval(), resolve_checkpoint(checkpoint))


def output_names(paths: list[str]) -> list[str]:
    """A file name per image of a prediction: its own stem, numbered where two images share one."""
    stems = [Path(p).stem for p in paths]
    shared, seen = Counter(stems), Counter()
    names = []
    for stem in stems:
        seen[stem] += 1
        names.append(f"{stem}-{seen[stem]}" if shared[stem] > 1 else stem)
    return names

"""Options as dataclass fields: each declares its help text, its choices and its range once, and is
validated the same way whether it comes from a flag, a `--config FILE.yaml`, a run's saved `config.yaml`
or Python. The CLI (cli.py) generates every flag and its help from these fields.

    @dataclass
    class MyOptions(Options):
        epochs: int = opt(2, "epochs the schedule spans", min=1)
        pool: str = opt("cls", "features: the cls token or the mean patch token", choices=("cls", "mean"))
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

Choices = Sequence[str] | Callable[[], Sequence[str]]


def opt(default: Any, help: str, *, choices: Choices | None = None, min: float | None = None,
        max: float | None = None, above: float | None = None, below: float | None = None,
        positional: bool = False, required: bool = False, metavar: str | None = None) -> Any:
    """A dataclass field that is an option: `help` is its one line of documentation; `choices` the values
    it takes (or a function giving them, so that the code that defines them is the one list); `min`/`max`
    inclusive and `above`/`below` exclusive bounds of a number; `positional` makes it a positional
    argument on the command line (a list field takes one or more); `required`: the task cannot run
    without it (its default, None, is refused)."""
    metadata = dict(help=help, choices=choices, min=min, max=max, above=above, below=below,
                    positional=positional, required=required, metavar=metavar)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def base_type(hint: Any) -> tuple[Any, Any]:
    """(origin, args) of a hint with None removed: `int | None` -> (int, ()), `tuple[int, int]` ->
    (tuple, (int, int))."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint, typing.get_args(hint)


def _number(value: Any, kind: type, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{flag_name(name)} takes {'an integer' if kind is int else 'a number'}, "
                          f"not {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{flag_name(name)} takes an integer, not {value!r}")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{flag_name(name)} must be a finite number, not {value}")
    return value


def parse_size(text: Any) -> tuple[int, int]:
    """224, "224", "224,160", "224x160" or [224, 160] -> (height, width)."""
    if isinstance(text, (list, tuple)):
        values = list(text)
    elif isinstance(text, int) and not isinstance(text, bool):
        values = [text]
    else:
        try:
            values = [int(p) for p in str(text).replace("x", ",").split(",")]
        except ValueError:
            raise ConfigError(f"expected a size like 224 or 224,160, got {text!r}") from None
    if len(values) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"expected a size like 224 or 224,160, got {text!r}")
    return (values[0], values[-1])


def coerce(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """`value` as the field's type, or a ConfigError naming the option."""
    if value is None:
        return None
    kind, args = base_type(hint)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{flag_name(f.name)} is true or false, not {value!r}")
        return value
    if kind in (int, float):
        return _number(value, kind, f.name)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{flag_name(f.name)} takes a text value, not {value!r}")
        return value
    if kind is tuple and args == (int, int):
        try:
            return parse_size(value)
        except ConfigError as err:
            raise ConfigError(f"{flag_name(f.name)}: {err}") from None
    if kind is tuple:  # tuple[float, ...] (per-channel values) or tuple[int, ...] (block indices)
        item_kind = args[0] if args and args[0] in (int, float) else float
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        try:
            return tuple(_number(float(v) if isinstance(v, str) else v, item_kind, f.name) for v in items)
        except ValueError:
            example = "integers like 2,5,8" if item_kind is int else "numbers like 0.5,0.5,0.5"
            raise ConfigError(f"{flag_name(f.name)} takes {example}, not {value!r}") from None
    if kind is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{flag_name(f.name)} takes a list of text values, not {value!r}")
        return list(value)
    return value


def check_range(f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    choices = choices_of(f)
    if choices is not None and value not in choices:
        raise ConfigError(f"unknown {flag_name(f.name)} {value!r}; choose from: {', '.join(map(str, choices))}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        values = value if isinstance(value, tuple) and all(isinstance(v, int) for v in value) else ()
        for v in values:  # sizes: each side
            check_range(f, v)
        return
    low, high, above, below = (m.get(k) for k in ("min", "max", "above", "below"))
    checks = ((low, "at least", lambda b: value >= b), (high, "at most", lambda b: value <= b),
              (above, "above", lambda b: value > b), (below, "below", lambda b: value < b))
    for bound, words, holds in checks:
        if bound is not None and not holds(bound):
            raise ConfigError(f"{flag_name(f.name)} must be {words} {bound:g}, got {value:g}")


def check_block_indices(name: str, indices: Sequence[int] | None, depth: int, count: int | None = None) -> None:
    """The part of an option's check that needs the encoder: `indices` (the option `name`, e.g.
    "out_indices") must be distinct blocks of a `depth`-block encoder, `count` of them where given.
    Options.__post_init__ checks what is known without it (whole numbers)."""
    if indices is None:
        return
    indices = list(indices)
    problem = ("negative" if any(i < 0 for i in indices) else
               f"past the last block ({depth - 1})" if any(i >= depth for i in indices) else
               "repeated" if len(set(indices)) != len(indices) else
               f"{len(indices)} given" if count is not None and len(indices) != count else None)
    if problem:
        many = "" if count is None else f"{ {4: 'four'}.get(count, count)} "
        raise ConfigError(f"{flag_name(name)} takes {many}block indices of the encoder's {depth} blocks (0-{depth - 1}), "
                          f"each once; not {','.join(map(str, indices))}: {problem}")


@dataclasses.dataclass
class Options:
    """Base of every options dataclass: values are checked against their declared type and range when
    the object is made, whatever made it."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if "help" not in f.metadata:
                continue
            value = coerce(f, hints[f.name], getattr(self, f.name))
            if value is not None:
                check_range(f, value)
            elif f.metadata["required"] or f.metadata["positional"]:
                raise ConfigError(f"{flag_name(f.name)} is required: {f.metadata['help']}")
            setattr(self, f.name, value)

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


# Options renamed since runs were saved: old name -> (new name, how an old value becomes a new one).
RENAMED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "global_pool": ("pool", lambda average: "mean" if average else "cls"),
}


def read_options_file(path: str | Path, cls: type) -> dict[str, Any]:
    """The options of a YAML file (`--config`, or a run's config.yaml), by field name; values are checked
    when the dataclass is made."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    for old, (new, convert) in RENAMED.items():
        if old in data and new not in data and new in {f.name for f in dataclasses.fields(cls)}:
            data[new] = convert(data.pop(old))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        names = (k if k.isprintable() else repr(k) for k in unknown)  # a line break in a name: keep one line
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(names)}")
    return data


def save_config(cfg: Options, output: str | Path) -> None:
    """The run's `config.yaml`: every option, as `--config` reads it back."""
    import yaml

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    (output / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

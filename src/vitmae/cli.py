"""The `vitmae` command: a thin layer over the library. Every subcommand is a task of `tasks.TASKS`; its
flags, their help, choices and ranges come from the fields of the task's options dataclass, so a flag, a
key of `--config FILE.yaml` and a field of the saved `config.yaml` are the same thing."""
from __future__ import annotations

import argparse
import errno
import dataclasses
import os
import sys
import typing
from typing import Any

from .errors import ConfigError
from .options import base_type, choices_of, flag_name, parse_size, read_options_file


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _help(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    choices = choices_of(f)
    if choices and len(choices) <= 8 and not all(str(c) in text for c in choices):
        text += f" (one of: {', '.join(choices)})"
    if f.default not in (None, dataclasses.MISSING) and not f.metadata["positional"]:
        text += f" (default: {','.join(map(str, f.default)) if isinstance(f.default, tuple) else f.default})"
    return text.replace("%", "%%")


def add_option_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """A flag (or positional argument) for each option field of `cls`. Values are parsed here only as far
    as argparse needs; the dataclass checks them, as it checks YAML and Python values."""
    hints = typing.get_type_hints(cls)
    groups: dict[type, Any] = {}
    for f in sorted(cls.option_fields(), key=lambda f: cls.__mro__.index(_declared_by(cls, f.name))):
        owner = _declared_by(cls, f.name)
        if owner not in groups:  # the task's own options first, then the shared groups, each titled
            title = "options of this command" if owner is cls else owner.__doc__.splitlines()[0].rstrip(".")
            groups[owner] = parser.add_argument_group(title)
        group = groups[owner]
        kind, args = base_type(hints[f.name])
        common: dict[str, Any] = {"help": _help(f)}
        if f.metadata["positional"]:
            group.add_argument(f.name, nargs="+" if kind is list else None, metavar=f.metadata["metavar"]
                               or f.name.upper(), **common)
        elif kind is bool:
            group.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, **common)
        else:
            parse = {int: int, float: float, str: str}.get(kind, _size if args == (int, int) else str)
            group.add_argument(flag_name(f.name), type=parse, default=argparse.SUPPRESS,
                               required=f.metadata["required"], metavar=f.metadata["metavar"] or f.name.upper(),
                               **common)


def _declared_by(cls: type, name: str) -> type:
    """The class of `cls`'s MRO whose own body declares the field `name` (a redefault counts)."""
    return next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))


def build_config(cls: type, args: argparse.Namespace) -> Any:
    """Defaults < the resumed run's saved config < --config FILE < flags. A resume writes into the run it
    continues unless --output (or the file's `output`) says otherwise."""
    from .train.run_dir import run_dir_of

    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "task")}
    values: dict[str, Any] = {}
    resume = given.get("resume")
    if resume:
        saved = run_dir_of(resume) / "config.yaml"
        if saved.is_file():
            values.update(read_options_file(saved, cls))
        values["output"] = str(run_dir_of(resume))
    if getattr(args, "config", None):
        values.update(read_options_file(args.config, cls))
    values.update(given)
    return cls(**values)


def version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("vitmae")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def build_parser() -> Parser:
    from .tasks import TASKS

    parser = Parser(prog="vitmae", description="Masked Autoencoder pre-training of Vision Transformers.")
    parser.add_argument("--version", action="version", version=f"vitmae {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for task in TASKS.values():
        p = sub.add_parser(task.name, help=task.summary, description=task.options.__doc__)
        if task.config_file:
            p.add_argument("--config", help="YAML file of options; flags override it")
        add_option_flags(p, task.options)
        p.set_defaults(task=task)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .interop import CheckpointError
    from .train import DiskFullError, NonFiniteLossError, PeerLostError, RunInterrupted, WorkerLostError

    user_errors = (ConfigError, DataError, CheckpointError, FileNotFoundError)
    args = build_parser().parse_args(argv)
    try:
        task = args.task
        cfg = build_config(task.options, args)
        for line in task.report(task.run(cfg), cfg):
            print(line)
        return 0
    except user_errors as err:
        print(f"vitmae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, PeerLostError, DiskFullError, WorkerLostError) as err:
        print(f"vitmae {args.command}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"vitmae {args.command}: error: {err.strerror}: {err.filename or 'writing the output'}",
              file=sys.stderr)
        return 1
    except BrokenPipeError:  # the output went to a reader that closed early, like `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RunInterrupted as err:
        run_dir = err.checkpoint.parent.parent if err.checkpoint else "RUN_DIR"
        print(f"vitmae {args.command}: {err}; continue with --resume {run_dir}", file=sys.stderr)
        return 128 + err.signum


if __name__ == "__main__":
    sys.exit(main())

"""The `vitmae` command: a thin layer over the library. Flags are generated from the config dataclasses,
so a flag, a key of `--config FILE.yaml` and a field of the saved `config.yaml` are the same thing."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, PretrainConfig

HELP = {
    "output": "run directory: checkpoints, metrics, pictures, config.yaml",
    "data": "images: fashion-mnist | photos | a folder (searched recursively) | a .csv | 'shards-{000..127}.tar'",
    "val_data": "held-out images for the start/end loss and the pictures (default: the test split of fashion-mnist)",
    "samples_per_epoch": "epoch length for streamed shards",
    "model": "preset name (see `vitmae models`)",
    "epochs": "epochs the schedule spans",
    "max_steps": "stop after this many optimizer steps",
    "batch_size": "images per step per process",
    "accum_steps": "micro-batches accumulated per optimizer step",
    "blr": "base learning rate: lr = blr * effective batch / 256",
    "lr": "absolute learning rate (overrides --blr)",
    "warmup_epochs": "linear warmup length in epochs (fractions allowed)",
    "clip_grad": "clip the gradient norm to this value",
    "precision": "auto | fp32 | bf16 | fp16 (auto: bf16 on GPUs that support it, else fp32)",
    "device": "auto | cpu | cuda",
    "masking": "random | block | grid",
    "crop_min_scale": "smallest crop area of RandomResizedCrop",
    "heldout_samples": "held-out images used for the start/end loss",
    "viz_every_epochs": "write a reconstruction grid every N epochs (0: only at the start and end)",
    "resume": "continue the run in this directory (or checkpoint) exactly where it stopped",
    "keep_checkpoints": "step checkpoints kept on disk",
    "img_size": "input size: 224 or 224,160 (height,width)",
    "norm_pix_loss": "predict per-patch normalised pixels (the paper's default)",
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 224 or 224,160, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected 224 or 224,160, got {text!r}")
    return (values[0], values[-1])


def _base_type(hint: Any) -> Any:
    """`int | None` -> int; `tuple[int, int] | None` -> tuple."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        default_text = f" (default: {f.default})" if f.default is not None else ""
        help_text = HELP.get(f.name, f.name.replace("_", " ")) + default_text
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parse = _parse_size if kind is tuple else kind
            parser.add_argument(flag, type=parse, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=help_text)


def load_config_file(path: str | Path, cls: type) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if _base_type(hints[key]) is tuple and value is not None:
            data[key] = _parse_size(str(value)) if not isinstance(value, list) else tuple(value)
    return data


def build_config(cls: type, args: argparse.Namespace) -> Any:
    """Defaults < the run's saved config (when resuming) < --config FILE < flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func")}
    values: dict[str, Any] = {}
    resume = given.get("resume")
    if resume and not args.config:
        saved = _run_dir(Path(resume)) / "config.yaml"
        if saved.is_file():
            values.update(load_config_file(saved, cls))
            values["resume"] = resume
            given.setdefault("output", str(_run_dir(Path(resume))))
    if args.config:
        values.update(load_config_file(args.config, cls))
    values.update(given)
    return cls(**values)


def _run_dir(path: Path) -> Path:
    """The run directory of a run dir, its checkpoints/ dir or one checkpoint dir."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "config.yaml").is_file():
            return candidate
    return path


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .tasks.pretrain import pretrain

    cfg = build_config(PretrainConfig, args)
    cfg.model_config()  # validate the architecture before any data is read
    summary = pretrain(cfg)
    if "heldout_loss_end" in summary:
        print(f"held-out masked-patch loss on {summary['heldout']}, {summary['heldout_images']} images: "
              f"{summary['heldout_loss_start']:.4f} -> {summary['heldout_loss_end']:.4f} "
              f"(trivial baseline {summary['heldout_loss_baseline']:.4f})")
        print(f"{summary['steps']} steps, {summary['img_s']:.0f} img/s; checkpoint {summary['checkpoint']}; "
              f"pictures in {Path(cfg.output) / 'reconstructions'}")
    if summary.get("skipped_files"):
        print(f"skipped {len(summary['skipped_files'])} unreadable file(s): listed in metrics.json")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .config import PRESETS

    for name, cfg in PRESETS.items():
        h, w = cfg.img_size
        print(f"{name:28s} {h}x{w} patch {cfg.patch_size} chans {cfg.in_chans}  encoder {cfg.embed_dim}x{cfg.depth} "
              f"({cfg.num_heads} heads)  decoder {cfg.decoder_embed_dim}x{cfg.decoder_depth}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .interop import describe

    print(json.dumps(describe(args.checkpoint), indent=2, default=str))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .interop import convert

    out = convert(args.src, args.dst, args.to)
    print(f"wrote {args.to} checkpoint to {out or args.dst}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="vitmae", description="Masked Autoencoder pre-training of Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("pretrain", help="pre-train a masked autoencoder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file of options; flags override it")
    add_config_flags(p, PretrainConfig)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("models", help="list the model presets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="detected format, architecture and parameter counts of a checkpoint")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", required=True, choices=["vitmae", "hf", "timm", "official"])
    p.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .train import NonFiniteLossError, RunInterrupted

    user_errors: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError)
    try:
        from .interop import CheckpointError

        user_errors += (CheckpointError,)
    except ImportError:
        pass
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors as err:
        print(f"vitmae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"vitmae {args.command}: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(f"vitmae {args.command}: {err}; continue with --resume {args.output if hasattr(args, 'output') else ''}".rstrip(),
              file=sys.stderr)
        return 128 + err.signum


if __name__ == "__main__":
    sys.exit(main())

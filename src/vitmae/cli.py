"""The `vitmae` command: a thin layer over the library. Flags are generated from the config dataclasses,
so a flag, a key of `--config FILE.yaml` and a field of the saved `config.yaml` are the same thing."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .config import BenchConfig, ConfigError, PretrainConfig

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
    "model_ema": "evaluate and keep an exponential moving average of the weights (timm ModelEmaV3, warm-up)",
    "model_ema_decay": "the moving average's decay (its longest horizon)",
    "format": "npy (embeddings.npy + embeddings.csv) | parquet (embeddings.parquet: path, label, embedding)",
    "fp8": "train the transformer blocks' linear layers in float8 (torchao; needs FP8 tensor cores to be fast)",
    "compile": "torch.compile the model (default: on GPUs, not on CPUs)",
    "compile_mode": "torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs",
    "masking": "random | block | grid",
    "crop_min_scale": "smallest crop area of RandomResizedCrop",
    "heldout_samples": "held-out images used for the start/end loss",
    "viz_every_epochs": "write a reconstruction grid every N epochs (0: only at the start and end)",
    "resume": "continue the run in this directory (or checkpoint) exactly where it stopped",
    "keep_checkpoints": "step checkpoints kept on disk",
    "img_size": "input size: 224 or 224,160 (height,width)",
    "norm_pix_loss": "predict per-patch normalised pixels (the paper's default)",
    "augment_on": "where training images are decoded, cropped and flipped: workers (PIL in the DataLoader "
                  "workers) | device (JPEG decoding and crops of whole batches on the training device) | "
                  "auto (device on a GPU)",
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
    if "knn_top1_end" in summary:
        print(f"kNN top-1 of the encoder on {summary['knn']}: {summary['knn_top1_start']:.2f}% -> "
              f"{summary['knn_top1_end']:.2f}%")
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


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .viz import reconstruct_files

    out = reconstruct_files(args.checkpoint, args.images, args.out, args.mask_ratio, args.masking, args.seed,
                            args.mask, args.denorm)
    print(f"wrote {out}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from .viz import attention_file

    print(f"wrote {attention_file(args.checkpoint, args.image, args.out, args.layer)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .viz import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("the demo needs gradio: pip install 'vitmae[demo]'")
    from .demo import serve

    app, url = serve(args.checkpoint, args.port, args.host)
    print(f"demo of {args.checkpoint} on {url} (Ctrl+C stops it)", flush=True)
    app.block_thread()
    return 0


# -- transfer: fine-tuning, probing, features, evaluation -----------------------------------------------
HELP.update({
    "checkpoint": "a pre-trained checkpoint or run directory (any format `vitmae info` reads); none: from scratch / random",
    "labels_fraction": "keep a stratified, seeded fraction of the training labels (e.g. 0.01)",
    "labels_per_class": "keep this many training labels of each class (stratified, seeded)",
    "global_pool": "average the patch tokens + fc_norm (the default); --cls-token classifies from the cls token",
    "layer_decay": "layer-wise lr decay: block i gets lr * decay^(depth + 1 - (i + 1))",
    "drop_path": "stochastic depth rate of the last block",
    "mixup": "mixup alpha (default: 0.8 for RGB, 0 for grayscale)",
    "cutmix": "cutmix alpha (default: 1.0 for RGB, 0 for grayscale)",
    "smoothing": "label smoothing",
    "randaug": "RandAugment (default: on for RGB, off for grayscale)",
    "randaug_policy": "timm RandAugment policy",
    "reprob": "random erasing probability (default: 0.25 for RGB, 0 for grayscale)",
    "pool": "features: cls (the cls token) | mean (the mean patch token)",
    "cache_features": "compute the frozen encoder's features once (no augmentation); else crop + flip every step",
    "k": "neighbours that vote",
    "temperature": "vote weight exp(cosine similarity / temperature)",
    "split": "which split of the data (fashion-mnist: train | test; folders with train/ and val/: train | val)",
    "eval_knn": "labeled data (e.g. fashion-mnist) for a kNN accuracy of the encoder at the start and every few epochs",
    "knn_every_epochs": "kNN evaluation every N epochs (0: only at the start and the end)",
    "scale": "tiny (a test: seconds) | cpu (a laptop: minutes) | full (the GPU recipe: hours)",
    "fractions": "label fractions, comma-separated",
    "pretrained": "skip pre-training: use this pre-trained checkpoint",
})


def cmd_finetune(args: argparse.Namespace) -> int:
    from .config import FinetuneConfig
    from .tasks.finetune import finetune

    s = finetune(build_config(FinetuneConfig, args))
    print(f"top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on {s['val']} ({s['val_images']} images); "
          f"best top-1 {s['best_top1']:.2f}% at epoch {s['best_epoch']:g}")
    print(f"{s['steps']} steps on {s['train_images']} labeled images, {s['img_s']:.0f} img/s; "
          f"last checkpoint {s['last_checkpoint']}, best {s['best_checkpoint']}")
    return 0


def cmd_linprobe(args: argparse.Namespace) -> int:
    from .config import LinprobeConfig
    from .tasks.linprobe import linprobe

    s = linprobe(build_config(LinprobeConfig, args))
    print(f"linear probe top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on {s['val']} ({s['val_images']} images), "
          f"{s['train_images']} labeled training images")
    if s.get("classifier"):
        print(f"encoder + probe as one classifier: {s['classifier']}")
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from .config import KnnConfig
    from .tasks.knn import knn

    s = knn(build_config(KnnConfig, args))
    print(f"kNN (k={s['k']}, T={s['temperature']}) top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on "
          f"{s['val']} ({s['val_images']} images), bank of {s['train_images']} labeled images")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .config import EmbedConfig
    from .tasks.embed import embed

    s = embed(build_config(EmbedConfig, args))
    print(f"{s['images']} x {s['dim']} features ({s['pool']}) in {s['embeddings']}, paths in {s['index']}")
    if s["skipped_files"]:
        print(f"skipped {len(s['skipped_files'])} unreadable file(s): listed in metrics.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import EvaluateConfig
    from .tasks.evaluate import accuracy_line, evaluate

    s = evaluate(build_config(EvaluateConfig, args))
    print(f"{accuracy_line(s)}  macro F1 {s['macro_f1']:.2f}% on {s['images']} images, "
          f"{s['checkpoint_evaluated']}; confusion matrix {s['confusion_png']}")
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    from .config import LabelEfficiencyConfig
    from .tasks.label_efficiency import label_efficiency

    s = label_efficiency(build_config(LabelEfficiencyConfig, args))
    print(f"report: {s['report']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_pipeline, bench_step
    from .train.engine import resolve_device, resolve_precision
    from .train.distributed import DistInfo

    cfg = build_config(BenchConfig, args)
    device = resolve_device(cfg.device, DistInfo())
    precision = resolve_precision(cfg.precision, device)
    model_cfg = cfg.model_config()
    compare = tuple(c for c in (cfg.compare or "").split(",") if c)
    report = bench_step(model_cfg, cfg.batch_size, str(device), precision, compare, cfg.steps, cfg.warmup,
                        cfg.compile, cfg.peak_tflops, cfg.seed, cfg.compile_mode, cfg.fp8)
    if cfg.data:
        report["pipeline"] = bench_pipeline(model_cfg, cfg.data, cfg.batch_size, str(device), precision,
                                            cfg.num_workers, cfg.steps, cfg.seed, compile=cfg.compile,
                                            augment_on=cfg.augment_on)
    for r in report["results"]:
        memory = "" if r["peak_mem_gib"] is None else f", peak memory {r['peak_mem_gib']:.2f} GiB"
        mfu = "" if r["mfu"] is None else f", MFU {r['mfu']:.1%}"
        print(f"{r['impl']:>16}: {r['img_s']:9.1f} img/s ({r['step_ms']:.1f} ms/step){memory}{mfu}")
    for other in report["results"][1:]:
        speedup = report["speedup_vs_" + other["impl"].replace("-", "_")]
        print(f"speed-up over transformers{' (compiled)' if 'compiled' in other['impl'] else ''}: {speedup:.2f}x")
    if "pipeline" in report:
        p = report["pipeline"]
        print(f"input pipeline (augmenting on the {p['augment_on']}): {p['pipeline_img_s']:.1f} img/s alone, "
              f"{p['end_to_end_img_s']:.1f} img/s with the step")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="vitmae", description="Masked Autoencoder pre-training of Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("pretrain", help="pre-train a masked autoencoder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file of options; flags override it")
    add_config_flags(p, PretrainConfig)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("bench", help="time the training step (and the input pipeline) against transformers",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file of options; flags override it")
    add_config_flags(p, BenchConfig)
    p.set_defaults(func=cmd_bench)

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

    p = sub.add_parser("reconstruct", help="picture of masked images and their reconstructions, one row per image")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `vitmae info` reads, or a run directory")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--mask-ratio", type=float, help="share of patches removed (default: the model's)")
    p.add_argument("--masking", default="random", choices=["random", "block", "grid"])
    p.add_argument("--seed", type=int, default=0, help="seed of the masking")
    p.add_argument("--mask", help="your own mask for all images: a picture (white = removed) or a file of "
                                  "patch indices; the mask ratio then follows it")
    p.add_argument("--denorm", default="true", choices=["true", "visible"],
                   help="norm-pix models: de-normalise each removed patch with its true mean and std (flatters "
                        "the model), or with those of its visible neighbours (what the model alone gives)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("attention", help="the cls token's attention over the patches, per head, on the image")
    p.add_argument("image")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `vitmae info` reads, or a run directory")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--layer", type=int, default=-1, help="encoder block, from 0 (default -1: the last)")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("report", help="self-contained HTML page of a run: curves, reconstructions, config")
    p.add_argument("run_dir")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="web page on localhost to mask images and watch the reconstructions")
    p.add_argument("--checkpoint", required=True, help="any checkpoint `vitmae info` reads, or a run directory")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.set_defaults(func=cmd_demo)
    from .config import (EmbedConfig, EvaluateConfig, FinetuneConfig, KnnConfig, LabelEfficiencyConfig,
                         LinprobeConfig)

    for name, cls, func, text in (
        ("finetune", FinetuneConfig, cmd_finetune, "fine-tune a classifier from a pre-trained encoder (or from scratch)"),
        ("linprobe", LinprobeConfig, cmd_linprobe, "linear probe of a frozen encoder (BatchNorm + Linear, LARS)"),
        ("knn", KnnConfig, cmd_knn, "weighted kNN accuracy of a frozen encoder's features"),
        ("embed", EmbedConfig, cmd_embed, "features of every image (npy) with their paths (csv)"),
        ("evaluate", EvaluateConfig, cmd_evaluate, "top-1/5, per-class P/R/F1 and a confusion matrix of a classifier"),
        ("label-efficiency", LabelEfficiencyConfig, cmd_label_efficiency,
         "pre-train once, then fine-tune / probe / kNN with few labels; a Markdown report"),
    ):
        p = sub.add_parser(name, help=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", help="YAML file of options; flags override it")
        add_config_flags(p, cls)
        if cls is FinetuneConfig:
            p.add_argument("--cls-token", dest="global_pool", action="store_false", default=argparse.SUPPRESS,
                           help="classify from the cls token (after the final norm), as --no-global-pool")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .interop import CheckpointError
    from .train import NonFiniteLossError, RunInterrupted

    user_errors = (ConfigError, DataError, CheckpointError, FileNotFoundError)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors as err:
        print(f"vitmae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"vitmae {args.command}: {err}", file=sys.stderr)
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

"""How much do MAE pre-trained weights help when labels are scarce? An experiment built on vitmae's public
API only (its tasks and options, called as a user's script would).

On Fashion-MNIST: pre-train an MAE once on the 60,000 training images without their labels; then, with
1%, 10% and 100% of the training labels (stratified, seeded subsets), fine-tune from the MAE weights,
fine-tune from scratch with the same recipe and budget, linear-probe and kNN the frozen MAE encoder (and,
as a floor, a randomly initialised one); every number is measured on the 10,000 test images. Writes
RUN/report.md (table, plots, commands, hardware, times) and RUN/metrics.json (every result).

    python experiments/label_efficiency.py --scale cpu --output runs/label-efficiency

Scales: `tiny` is a smoke test (a few steps on 400 training and 200 test images, written as a folder of
class sub-folders and used as any user's folder would be; the numbers mean nothing), `cpu` fits
a laptop CPU (a small ViT, a few epochs), `full` is the GPU recipe (ViT-Tiny, patch 4, decoder 128x4,
norm-pix, 100 pre-training epochs; fine-tuning with layer decay 0.75, label smoothing, crop + flip).
A run directory that already holds a finished sub-run's metrics.json is reused, so an interrupted
experiment continues where it stopped.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import vitmae
from vitmae.config import (ConfigError, FinetuneOptions, KnnOptions, LinprobeOptions, PretrainOptions,
                           RuntimeOptions, opt)
from vitmae.data import FashionMNISTSource, stratified_indices
from vitmae.tasks.finetune import finetune
from vitmae.tasks.knn import knn
from vitmae.tasks.linprobe import linprobe
from vitmae.tasks.pretrain import pretrain

from experiment_tools import (Clock, command_line, encoder_architecture, finished, hardware, pretraining_lines,
                              times_lines)
from experiment_tools import main as experiment_main

DATA = "fashion-mnist"


@dataclass
class LabelEfficiencyOptions(RuntimeOptions):
    """Pre-train once without labels, then fine-tune (MAE and scratch), linear-probe and kNN with a few label
    fractions; a Markdown report with the table and plots."""

    output: str = opt("runs/label-efficiency", "directory of the experiment: every run, report.md, metrics.json")
    scale: str = opt("cpu", "tiny (a test: seconds) | cpu (a laptop: minutes) | full (the GPU recipe: hours)",
                     choices=lambda: list(SCALES))
    fractions: str | None = opt(None, "label fractions, comma-separated, e.g. 0.01,0.1,1 (default: the scale's)")
    pretrained: str | None = opt(None, "skip pre-training: use this pre-trained checkpoint")


@dataclass
class Scale:
    model: dict[str, Any]  # PretrainOptions architecture fields (preset `model` plus overrides)
    pretrain: dict[str, Any]  # PretrainOptions training fields
    finetune: dict[str, Any]  # FinetuneOptions fields shared by every fine-tuning run
    finetune_epochs: dict[float, int]  # epochs per label fraction (smaller subsets get more epochs)
    linprobe: dict[str, Any]  # LinprobeOptions fields shared by every probe
    # (epochs, blr) per label fraction: LARS moves a weight matrix by about lr * 0.001 of its norm per
    # step, so fewer labels (fewer steps) need more epochs and a larger blr to train the probe fully.
    linprobe_schedule: dict[float, tuple[int, float]]
    fractions: str
    train_limit: int | None = None  # a stratified sample of the training images (tiny: a smoke test)
    test_limit: int | None = None
    random_baselines: bool = True  # kNN and linear probe of a randomly initialised encoder too
    warmup_fraction: float = 0.1  # fine-tuning warmup, as a share of each run's epochs
    notes: list[str] = field(default_factory=list)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        model=dict(model="mae_vit_micro_patch4_28", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                   decoder_depth=1, decoder_num_heads=2),
        pretrain=dict(epochs=1, max_steps=4, batch_size=16, heldout_samples=16, viz_every_epochs=0),
        finetune=dict(batch_size=16, blr=1e-3, layer_decay=0.75, drop_path=0.0, smoothing=0.1),
        finetune_epochs={0.1: 2, 1.0: 1},
        linprobe=dict(batch_size=16), linprobe_schedule={0.1: (3, 1.0), 1.0: (2, 1.0)},
        fractions="0.1,1", train_limit=400, test_limit=200, random_baselines=False,
        notes=["smoke test: 4 pre-training steps, a few fine-tuning steps on 400 training images; "
               "the numbers mean nothing"],
    ),
    "cpu": Scale(
        model=dict(model="mae_vit_micro_patch4_28", patch_size=7, embed_dim=96, depth=4, num_heads=3,
                   decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=4, mask_ratio=0.75,
                   norm_pix_loss=True),
        pretrain=dict(epochs=5, batch_size=256, blr=1.2e-3, warmup_epochs=0.5, knn_every_epochs=1,
                      heldout_samples=500, viz_every_epochs=1),
        # Flips only: at this short schedule crops cost accuracy (10% of the labels, 8 epochs, MAE init:
        # 75.6% with crops of 35-100% of the area, 80.9% with 80-100%, 83.5% without crops).
        finetune=dict(batch_size=64, blr=5e-3, layer_decay=0.75, drop_path=0.1, smoothing=0.1, crop_min_scale=1.0),
        finetune_epochs={0.01: 50, 0.1: 8, 1.0: 2},
        linprobe=dict(batch_size=256), linprobe_schedule={0.01: (300, 5.0), 0.1: (100, 1.0), 1.0: (50, 0.2)},
        fractions="0.01,0.1,1",
        notes=["a small ViT (96 wide, 4 blocks, patch 7: 16 tokens) and a short schedule, to fit a CPU"],
    ),
    "full": Scale(
        model=dict(model="mae_vit_micro_patch4_28", patch_size=4, embed_dim=192, depth=12, num_heads=3,
                   decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, mask_ratio=0.75,
                   norm_pix_loss=True),
        pretrain=dict(epochs=100, batch_size=512, blr=1.5e-4, warmup_epochs=10, knn_every_epochs=10,
                      heldout_samples=1000, viz_every_epochs=10),
        finetune=dict(batch_size=256, blr=1e-3, layer_decay=0.75, drop_path=0.1, smoothing=0.1),
        finetune_epochs={0.01: 200, 0.1: 60, 1.0: 30},  # the reference schedule
        linprobe=dict(batch_size=512), linprobe_schedule={0.01: (900, 5.0), 0.1: (300, 1.0), 1.0: (90, 0.2)},
        fractions="0.01,0.1,1",
        notes=["ViT-Tiny (192 wide, 12 blocks, 3 heads), patch 4 on 28x28, decoder 128x4, norm-pix loss"],
    ),
    # `full`'s model and recipes with schedules cut to fit one GPU command of under 9 minutes
    # (scripts/gpu_session.sh quality; predicted 415 s on an H200, reckoning in docs/results.md). This
    # tiny model is bound by kernel launches and data loading, not by FLOPs (0.7 GFLOP per pre-training
    # image: 60,000 images are 0.2 s at 30% of the H200's peak); planned at about 30,000 img/s.
    # Fine-tuning and probes run eagerly: compiling each of the 15 short runs would cost more than it saves.
    "gpu": Scale(
        model=dict(model="mae_vit_micro_patch4_28", patch_size=4, embed_dim=192, depth=12, num_heads=3,
                   decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, mask_ratio=0.75,
                   norm_pix_loss=True),
        pretrain=dict(epochs=60, batch_size=512, blr=1.5e-4, warmup_epochs=5, knn_every_epochs=10,
                      heldout_samples=1000, viz_every_epochs=20),
        finetune=dict(batch_size=256, blr=1e-3, layer_decay=0.75, drop_path=0.1, smoothing=0.1, compile=False),
        finetune_epochs={0.01: 100, 0.1: 30, 1.0: 10},
        linprobe=dict(batch_size=512, compile=False),
        linprobe_schedule={0.01: (300, 5.0), 0.1: (100, 1.0), 1.0: (50, 0.2)},  # `cpu`'s: flat at the end
        fractions="0.01,0.1,1",
        notes=["ViT-Tiny (192 wide, 12 blocks, 3 heads), patch 4 on 28x28, decoder 128x4, norm-pix loss; "
               "`full`'s recipes with shorter schedules, to fit one GPU command of under 9 minutes"],
    ),
}
METHODS = (("finetune_mae", "fine-tune, MAE init"), ("finetune_scratch", "fine-tune, from scratch"),
           ("linprobe_mae", "linear probe, MAE"), ("knn_mae", "kNN, MAE"),
           ("linprobe_mae_mean", "linear probe, MAE, mean-pooled"), ("knn_mae_mean", "kNN, MAE, mean-pooled"),
           ("linprobe_random", "linear probe, random init"), ("knn_random", "kNN, random init"))
# Frozen-encoder evaluations: (encoder, pooling, the suffix of their method names). The official probes
# read the cls token; the patch tokens' mean is often the better feature of an MAE encoder.
PROBES = (("mae", "cls", "mae"), ("mae", "mean", "mae_mean"), ("random", "cls", "random"))


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(f) for f in str(text).split(",") if f.strip()})
    except ValueError:
        raise ConfigError(f"--fractions takes numbers like 0.01,0.1,1, not {text!r}") from None
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ConfigError(f"label fractions must be in (0, 1], got {text!r}")
    return fractions


def fit_batch(batch_size: int, images: int) -> int:
    """The preset batch size, halved until an epoch of `images` has at least four steps."""
    while batch_size > 8 and images // batch_size < 4:
        batch_size //= 2
    return batch_size


def labeled_data(out: Path, scale: Scale, seed: int) -> tuple[str, list[int], int]:
    """(the data spec every run reads, the training labels, the number of test images). Fashion-MNIST as
    it is; with a scale's limits, a stratified sample of it written as a folder of class sub-folders
    (train/ and val/), which every run then reads as it would read a user's folder."""
    train, test = FashionMNISTSource("train"), FashionMNISTSource("test")
    if scale.train_limit is None:
        return DATA, [int(label) for label in train.labels], len(test)
    root = out / "data"
    labels = []
    for split, source, limit in (("train", train, scale.train_limit), ("val", test, scale.test_limit)):
        keep = stratified_indices(source.labels, fraction=limit / len(source), seed=seed)
        for i in keep:
            image, label = source[i]
            target = root / split / f"class{label}" / f"{i:05d}.png"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                image.save(target)
            labels += [label] if split == "train" else []
    return str(root), labels, scale.test_limit


def label_efficiency(cfg: LabelEfficiencyOptions) -> dict[str, Any]:
    scale = SCALES[cfg.scale]
    fractions = parse_fractions(cfg.fractions or scale.fractions)
    epochs_for = {f: schedule_for(scale.finetune_epochs, f) for f in fractions}
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(device=cfg.device, precision=cfg.precision, seed=cfg.seed, num_workers=cfg.num_workers)
    restart = dict(overwrite=True)  # a finished run is reused (its metrics.json); an unfinished one starts over
    clock = Clock("label-efficiency")
    started = time.perf_counter()
    data, train_labels, test_images = labeled_data(out, scale, cfg.seed)

    # 1. Pre-train once, without labels.
    if cfg.pretrained:
        checkpoint, pretrain_summary = cfg.pretrained, {"checkpoint": cfg.pretrained, "reused": True}
    else:
        run = out / "pretrain"
        pretrain_summary = finished(run)
        if pretrain_summary is None:
            pcfg = PretrainOptions(output=str(run), data=data, val_data=data if data != DATA else None,
                                  eval_knn=data if scale.pretrain.get("knn_every_epochs") else None,
                                  **scale.model, **scale.pretrain, **common, **restart)
            pretrain_summary = clock.run("pre-training", pretrain, pcfg)
        checkpoint = str(run)

    # 2. The frozen encoders: the pre-trained one and, as a floor, the same architecture randomly
    # initialised (saved, so that runs can name it).
    encoders = {"mae": checkpoint}
    if scale.random_baselines:
        encoders["random"] = str(out / "random_init")
        if not (out / "random_init" / "model.safetensors").is_file():
            torch.manual_seed(cfg.seed)
            vitmae.export(vitmae.MaskedAutoencoder(PretrainOptions(**scale.model).model_config()),
                          out / "random_init", "vitmae")
    probes = [(name, pool, method) for name, pool, method in PROBES if name in encoders]

    # 3. Per label fraction: fine-tune (MAE, scratch), linear probe and kNN, on the same stratified subset.
    results: dict[str, dict[str, Any]] = {}
    test_description = ""
    for fraction in fractions:
        fdir = out / f"f{fraction:g}"
        labels_count = (len(stratified_indices(train_labels, fraction=fraction, seed=cfg.seed)) if fraction < 1
                        else len(train_labels))
        row: dict[str, Any] = {"fraction": fraction, "labels": labels_count}
        for name, pool, method in probes:
            kcfg = KnnOptions(output=str(fdir / f"knn_{method}"), checkpoint=encoders[name], data=data, pool=pool,
                             labels_fraction=fraction, **common)
            row[f"knn_{method}"] = finished(Path(kcfg.output)) or clock.run(f"kNN {method} {fraction:g}", knn, kcfg)
            probe_epochs, probe_blr = schedule_for(scale.linprobe_schedule, fraction)
            lcfg = LinprobeOptions(output=str(fdir / f"linprobe_{method}"), checkpoint=encoders[name], data=data,
                                  pool=pool, labels_fraction=fraction, log_every_steps=100,
                                  epochs=probe_epochs, blr=probe_blr, warmup_epochs=round(probe_epochs / 9, 3),
                                  eval_every_epochs=max(1, probe_epochs // 10), **common, **restart,
                                  **{**scale.linprobe,
                                     "batch_size": fit_batch(scale.linprobe["batch_size"], labels_count)})
            row[f"linprobe_{method}"] = finished(Path(lcfg.output)) or clock.run(
                f"linear probe {method} {fraction:g}", linprobe, lcfg)
        epochs = epochs_for[fraction]
        for name, ckpt in (("mae", checkpoint), ("scratch", "none")):
            fcfg = FinetuneOptions(output=str(fdir / f"finetune_{name}"), checkpoint=ckpt, data=data,
                                  labels_fraction=fraction, epochs=epochs,
                                  warmup_epochs=round(scale.warmup_fraction * epochs, 4), eval_every_epochs=epochs,
                                  log_every_steps=50, **common, **restart,
                                  **(encoder_architecture(scale.model) if name == "scratch" else {}),
                                  **{**scale.finetune,
                                     "batch_size": fit_batch(scale.finetune["batch_size"], labels_count)})
            row[f"finetune_{name}"] = finished(Path(fcfg.output)) or clock.run(
                f"fine-tune {name} {fraction:g}", finetune, fcfg)
        results[f"{fraction:g}"] = row
        test_description = row["knn_mae"]["val"]
        _write(out, cfg, scale, pretrain_summary, results, clock, started, test_description, len(train_labels),
               test_images)
    return _write(out, cfg, scale, pretrain_summary, results, clock, started, test_description, len(train_labels),
                  test_images)


def schedule_for(table: dict[float, Any], fraction: float) -> Any:
    """The preset's entry for `fraction`, else the nearest listed fraction's (on a log scale)."""
    return table.get(fraction) or table[min(table, key=lambda f: abs(math.log(f / fraction)))]


# -- the report ----------------------------------------------------------------------------------------

def _write(out: Path, cfg: LabelEfficiencyOptions, scale: Scale, pretrain_summary: dict[str, Any],
           results: dict[str, dict[str, Any]], clock: Clock, started: float, test_description: str,
           train_images: int, test_images: int) -> dict[str, Any]:
    table = [{"fraction": row["fraction"], "labels": row["labels"],
              **{m: round(row[m]["top1"], 2) for m, _ in METHODS if m in row}} for row in results.values()]
    plot = _plot(out, table, pretrain_summary)
    command = command_line("label_efficiency.py", f"--scale {cfg.scale} --output {cfg.output}")
    summary = {"scale": cfg.scale, "command": command, "hardware": hardware(cfg.device),
               "wall_time_s": round(time.perf_counter() - started, 1), "stage_times_s": clock.times,
               "train_images": train_images, "test_images": test_images, "test": test_description,
               "table_top1": table, "pretrain": {k: v for k, v in pretrain_summary.items()
                                                 if k not in ("skipped_files",)},
               "runs": results, "plots": plot, "report": str(out / "report.md")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary, scale, cfg))
    return summary


def _plot(out: Path, table: list[dict[str, Any]], pretrain_summary: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    if table:
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, label in METHODS:
            points = [(row["labels"], row[method]) for row in table if method in row]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label, linestyle="--" if "random" in method else "-")
        ax.set_xscale("log")
        ax.set_xlabel("labeled training images")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title("Fashion-MNIST: accuracy vs labels")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_labels.png", dpi=120)
        plt.close(fig)
        plots["accuracy_vs_labels"] = "accuracy_vs_labels.png"
    history = pretrain_summary.get("knn_history")
    log = out / "pretrain" / "metrics.jsonl"
    if log.is_file() or history:
        fig, ax = plt.subplots(figsize=(6, 4))
        if log.is_file():
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            ax.plot([r["epoch"] for r in lines], [r["loss"] for r in lines], color="tab:blue")
            ax.set_ylabel("training loss (masked patches)", color="tab:blue")
        ax.set_xlabel("pre-training epoch")
        if history:
            twin = ax.twinx()
            twin.plot([h["epoch"] for h in history], [h["top1"] for h in history], marker="o", color="tab:red")
            twin.set_ylabel("kNN top-1 on test (%)", color="tab:red")
        ax.set_title("MAE pre-training")
        fig.tight_layout()
        fig.savefig(out / "pretraining.png", dpi=120)
        plt.close(fig)
        plots["pretraining"] = "pretraining.png"
    return plots


def _markdown(s: dict[str, Any], scale: Scale, cfg: LabelEfficiencyOptions) -> str:
    names = dict(METHODS)
    methods = [m for m, _ in METHODS if any(m in row for row in s["table_top1"])]
    lines = [f"# Label efficiency of MAE pre-training on Fashion-MNIST (scale `{s['scale']}`)", "",
             f"Command: `{s['command']}`  ", f"Hardware: {s['hardware']}  ",
             f"Wall time: {s['wall_time_s'] / 60:.1f} min  ",
             f"Test set: {s['test_images']} images of {s['test']}; training images: {s['train_images']}."]
    lines += [f"Note: {note}." for note in scale.notes]
    lines += ["", "## Test top-1 accuracy (%)", "",
              "| labels | fraction | " + " | ".join(names[m] for m in methods) + " |",
              "|---:|---:|" + "---:|" * len(methods)]
    for row in s["table_top1"]:
        cells = [f"{row[m]:.2f}" if m in row else "" for m in methods]
        lines.append(f"| {row['labels']} | {row['fraction']:g} | " + " | ".join(cells) + " |")
    p = s["pretrain"]
    lines += ["", "## Pre-training", "", *pretraining_lines(p, "the training images without labels")]
    if not p.get("reused"):
        if "knn_history" in p:
            curve = ", ".join(f"{h['epoch']:g}: {h['top1']:.1f}%" for h in p["knn_history"])
            lines.append(f"kNN top-1 during pre-training (epoch: accuracy; bank {p['knn_bank_images']}, "
                         f"queries {p['knn_query_images']}): {curve}.")
    for key, title in (("accuracy_vs_labels", "Accuracy vs labels"), ("pretraining", "Pre-training")):
        if key in s["plots"]:
            lines += ["", f"![{title}]({s['plots'][key]})"]
    lines += ["", "## Recipes", "",
              f"- Model: {json.dumps(scale.model)}",
              f"- Pre-training: {json.dumps(scale.pretrain)}",
              f"- Fine-tuning (MAE and scratch alike): {json.dumps(scale.finetune)}, epochs per label fraction "
              f"{json.dumps({f'{k:g}': v for k, v in scale.finetune_epochs.items()})}, warmup "
              f"{scale.warmup_fraction:.0%} of the epochs, evaluated once at the end (no checkpoint picking "
              "on the test set)",
              f"- Linear probe: {json.dumps(scale.linprobe)}, (epochs, blr) per label fraction "
              f"{json.dumps({f'{k:g}': v for k, v in scale.linprobe_schedule.items()})}, cls token "
              "(and, for the MAE encoder, the mean of the patch tokens), BatchNorm + Linear, LARS, features "
              "computed once, evaluated every tenth of the epochs (the table shows the last evaluation)",
              "- kNN: cls token (and mean-pooled, as above), k = 20, temperature 0.07, cosine similarity",
              "- Label subsets: stratified by class, seeded; the same subset for every method.", "",
              *times_lines(s["stage_times_s"], "f<fraction>/<method>_<init>/")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return experiment_main("label_efficiency", LabelEfficiencyOptions, label_efficiency, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

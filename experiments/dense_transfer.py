"""Does MAE pre-training help dense prediction when labels are few? An experiment on vitmae's public API.

On the built-in fashion-scenes: pre-train an MAE once on unlabeled training scenes (written by
`make-dataset` as a user's folder of images); then, with a few labeled scenes (100 and 1,000 by default),
train semantic segmentation (UperNet) from the MAE weights and from scratch with the same recipe and
budget, the linear probe (BN + 1x1 conv) on the frozen MAE encoder and on a frozen randomly initialised
one, and detection with instance masks (ViTDet Mask R-CNN) from the MAE weights and from scratch. Every
number is measured on the same validation scenes, whose items come from Fashion-MNIST's test split.
Writes RUN/report.md and RUN/metrics.json.

    python experiments/dense_transfer.py --scale cpu --output runs/dense-transfer

Scales: `tiny` is a smoke test (seconds; the numbers mean nothing), `cpu` fits a 2-core CPU (the
pre-training once, for long; each transfer run a few minutes), `gpu` is for one GPU. Every run gets the
same number of optimizer steps whatever its labels, so the smaller label budget trains more epochs. A run
directory that holds a finished run's metrics.json is reused and a cut-off pre-training resumes: an
interrupted experiment continues.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import vitmae
from vitmae.config import (ConfigError, DetectOptions, MakeDatasetOptions, PretrainOptions, RuntimeOptions,
                           SegmentOptions, opt)
from vitmae.tasks.detect import detect_run
from vitmae.tasks.make_dataset import make_dataset
from vitmae.tasks.pretrain import pretrain
from vitmae.tasks.segment import segment

from experiment_tools import (Clock, command_line, encoder_architecture, epochs_for, finished, hardware, parse_counts,
                              pretraining_lines, times_lines)
from experiment_tools import main as experiment_main


@dataclass
class DenseTransferOptions(RuntimeOptions):
    """Pre-train once on unlabeled scenes, then segment and detect with a few labeled ones: MAE against
    scratch (and frozen MAE against frozen random); a Markdown report."""

    output: str = opt("runs/dense-transfer", "directory of the experiment: every run, report.md, metrics.json")
    scale: str = opt("cpu", "tiny (a test: seconds) | cpu (a 2-core CPU: the pre-training 42 min, each "
                     "transfer run 1-4 min) | gpu (one GPU)", choices=lambda: list(SCALES))
    labeled: str | None = opt(None, "labeled training scenes, comma-separated, e.g. 100,1000 (default: the scale's)")
    tasks: str = opt("segment,detect", "which transfers: segment, detect or both, comma-separated")
    pretrained: str | None = opt(None, "skip pre-training: use this pre-trained checkpoint (its scenes' size)")


@dataclass
class Scale:
    size: int  # side of the scenes
    unlabeled: int  # pre-training scenes
    val: int  # validation scenes, the same for every run
    model: dict[str, Any]  # PretrainOptions architecture fields
    pretrain: dict[str, Any]
    segment: dict[str, Any]  # SegmentOptions fields of the UperNet runs (MAE and scratch)
    probe: dict[str, Any]  # SegmentOptions fields of the linear probes (frozen MAE and frozen random)
    detect: dict[str, Any]
    steps: int  # optimizer steps of every segmentation run
    detect_steps: int  # of every detection run
    labeled: str
    notes: list[str] = field(default_factory=list)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        size=32, unlabeled=64, val=16,
        model=dict(model="mae_vit_micro_patch4_28", img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2,
                   num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
        pretrain=dict(epochs=1, batch_size=16, heldout_samples=16, viz_every_epochs=0),
        segment=dict(batch_size=8, lr=1e-3), probe=dict(batch_size=8, lr=1e-2),
        detect=dict(batch_size=4, lr=1e-3, proposals=50, rois_per_image=32, pyramid_channels=32),
        steps=3, detect_steps=3, labeled="8,16", notes=["smoke test: a few steps of everything; the numbers mean nothing"],
    ),
    # 64-px scenes, patch 8 (64 tokens): ViT 192 wide, 6 blocks, about 42 min of pre-training on 2 idle cores,
    # 20 min of segmentation runs, 13 of detection. Measured (docs/results.md): no gain over scratch, with
    # norm-pix or pixel targets, 10 or 40 pre-training epochs, 300 or 1,200 transfer steps.
    "cpu": Scale(
        size=64, unlabeled=20000, val=500,
        model=dict(model="mae_vit_micro_patch4_28", img_size=64, patch_size=8, in_chans=1, embed_dim=192, depth=6,
                   num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75,
                   norm_pix_loss=False),
        pretrain=dict(epochs=40, batch_size=256, blr=1.5e-4, warmup_epochs=2, heldout_samples=500,
                      viz_every_epochs=10),
        segment=dict(batch_size=16, lr=2e-4, warmup_epochs=0),
        probe=dict(batch_size=16, lr=1e-2, warmup_epochs=0),
        detect=dict(batch_size=8, lr=2e-4, warmup_epochs=0, proposals=200, rois_per_image=64, pyramid_channels=64),
        steps=1200, detect_steps=600, labeled="100,1000",
        notes=["ViT 192 wide, 6 blocks, patch 8 on 64-px grayscale scenes (64 tokens), decoder 128x2, pixel targets "
               "(norm-pix off: with it the texture backgrounds made the targets mostly noise)"],
    ),
    "gpu": Scale(  # predicted 1200 s on an H200 (scripts/gpu_session.sh quality; several calls)
        size=96, unlabeled=50000, val=1000,
        model=dict(model="mae_vit_micro_patch4_28", img_size=96, patch_size=8, in_chans=1, embed_dim=192, depth=12,
                   num_heads=3, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8, mask_ratio=0.75,
                   norm_pix_loss=False),
        pretrain=dict(epochs=100, batch_size=512, blr=1.5e-4, warmup_epochs=5, heldout_samples=1000,
                      viz_every_epochs=25),
        segment=dict(batch_size=32, lr=2e-4, warmup_epochs=0, compile=False),
        probe=dict(batch_size=32, lr=1e-2, warmup_epochs=0, compile=False),
        detect=dict(batch_size=16, lr=2e-4, warmup_epochs=0, compile=False),
        steps=2000, detect_steps=2000, labeled="100,1000",
        notes=["ViT-Tiny (192 wide, 12 blocks), patch 8 on 96-px scenes (144 tokens), decoder 256x4, pixel targets"],
    ),
}
# (run, initialisation, head): the UperNet runs train everything; the probes freeze the encoder
SEGMENT_RUNS = (("segment_mae", "mae", "upernet"), ("segment_scratch", "scratch", "upernet"),
                ("probe_mae", "mae", "linear"), ("probe_random", "random", "linear"))
DETECT_RUNS = (("detect_mae", "mae"), ("detect_scratch", "scratch"))
TITLES = {"segment_mae": "UperNet, MAE init", "segment_scratch": "UperNet, scratch",
          "probe_mae": "linear probe, frozen MAE", "probe_random": "linear probe, frozen random",
          "detect_mae": "Mask R-CNN, MAE init", "detect_scratch": "Mask R-CNN, scratch"}


def dense_transfer(cfg: DenseTransferOptions) -> dict[str, Any]:
    scale = SCALES[cfg.scale]
    counts = parse_counts(cfg.labeled or scale.labeled, "scene counts", "100,1000")
    tasks = {t.strip() for t in cfg.tasks.split(",") if t.strip()}
    if not tasks or tasks - {"segment", "detect"}:
        raise ConfigError(f"--tasks takes segment, detect or both, not {cfg.tasks!r}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(device=cfg.device, precision=cfg.precision, seed=cfg.seed, num_workers=cfg.num_workers,
                  overwrite=True)  # a finished run is reused (its metrics.json); an unfinished one starts over
    clock, started = Clock("dense-transfer"), time.perf_counter()

    # 1. The unlabeled scenes, as a user's folder of images, and the pre-training on them.
    scenes = out / "scenes"
    if not (scenes / "classes.txt").is_file():
        clock.run("scenes", make_dataset, MakeDatasetOptions(name="fashion-scenes", out=str(scenes), num=scale.unlabeled,
                                                             num_val=scale.val, size=scale.size, seed=cfg.seed))
    if cfg.pretrained:
        checkpoint, pretrain_summary = cfg.pretrained, {"checkpoint": cfg.pretrained, "reused": True}
    else:
        run = out / "pretrain"
        cut_off = str(run) if (run / "checkpoints" / "latest").is_file() else None  # continues where it stopped
        pretrain_summary = finished(run) or clock.run(
            "pre-training", pretrain, PretrainOptions(output=str(run), data=str(scenes / "train" / "images"),
                                                     val_data=str(scenes / "val" / "images"), resume=cut_off,
                                                     **scale.model, **scale.pretrain, **common))
        checkpoint = str(run)
    random_init = out / "random_init.safetensors"  # the frozen floor: the same architecture, untrained
    if not random_init.is_file():
        torch.manual_seed(cfg.seed)
        vitmae.export(vitmae.MaskedAutoencoder(PretrainOptions(**scale.model).model_config()), random_init, "vitmae")
    inits = {"mae": dict(checkpoint=checkpoint), "random": dict(checkpoint=str(random_init)),
             "scratch": dict(checkpoint="none", **encoder_architecture(scale.model))}

    # 2. The transfers, on the first `n` training scenes (the labeled few) and the same validation scenes.
    results: dict[str, dict[str, Any]] = {}
    scene_data = dict(data="fashion-scenes", scene_size=scale.size, val_scenes=scale.val)
    for n in counts:
        row = results[str(n)] = {}
        for name, init, head in SEGMENT_RUNS if "segment" in tasks else ():
            recipe = scale.probe if head == "linear" else scale.segment
            epochs = epochs_for(scale.steps, n, recipe["batch_size"])
            scfg = SegmentOptions(output=str(out / f"n{n}" / name), head=head, scenes=n, max_steps=scale.steps,
                                 epochs=epochs, eval_every_epochs=epochs, **inits[init], **scene_data, **recipe,
                                 **common)
            row[name] = finished(scfg.output) or clock.run(f"{name} {n}", segment, scfg)
        for name, init in DETECT_RUNS if "detect" in tasks else ():
            epochs = epochs_for(scale.detect_steps, n, scale.detect["batch_size"])
            dcfg = DetectOptions(output=str(out / f"n{n}" / name), scenes=n, max_steps=scale.detect_steps, epochs=epochs,
                                eval_every_epochs=epochs, **inits[init], **scene_data, **scale.detect, **common)
            row[name] = finished(dcfg.output) or clock.run(f"{name} {n}", detect_run, dcfg)
    return _write(out, cfg, scale, pretrain_summary, results, clock, started)


# -- the report ----------------------------------------------------------------------------------------
def _table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label budget: mIoU and aAcc of the segmentations, box and mask AP of the detections."""
    table = []
    for n, row in results.items():
        entry: dict[str, Any] = {"labeled": int(n)}
        for name, summary in row.items():
            if name.startswith(("segment", "probe")):
                entry[name] = {"mIoU": summary["mIoU"], "aAcc": summary["aAcc"], "time_s": summary.get("train_time_s")}
            else:
                entry[name] = {"box_AP": summary["box"]["AP"], "mask_AP": summary.get("mask", {}).get("AP"),
                               "time_s": summary.get("train_time_s")}
        table.append(entry)
    return table


def _write(out: Path, cfg: DenseTransferOptions, scale: Scale, pretrain_summary: dict[str, Any],
           results: dict[str, dict[str, Any]], clock: Clock, started: float) -> dict[str, Any]:
    summary = {"scale": cfg.scale, "command": command_line("dense_transfer.py", f"--scale {cfg.scale} --output {cfg.output}"),
               "hardware": hardware(cfg.device), "wall_time_s": round(time.perf_counter() - started, 1),
               "stage_times_s": clock.times, "val_scenes": scale.val, "scene_size": scale.size,
               "steps_per_run": {"segment": scale.steps, "detect": scale.detect_steps}, "table": _table(results),
               "pretrain": {k: v for k, v in pretrain_summary.items() if k != "skipped_files"},
               "runs": results, "report": str(out / "report.md")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary, scale))
    return summary


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _markdown(s: dict[str, Any], scale: Scale) -> str:
    seg = [name for name, _, _ in SEGMENT_RUNS if any(name in row for row in s["table"])]
    det = [name for name, _ in DETECT_RUNS if any(name in row for row in s["table"])]
    lines = [f"# Dense transfer of MAE pre-training on fashion-scenes (scale `{s['scale']}`)", "",
             f"Command: `{s['command']}`  ", f"Hardware: {s['hardware']}  ",
             f"Wall time: {s['wall_time_s'] / 60:.1f} min  ",
             f"Validation: {s['val_scenes']} scenes of {s['scene_size']} px (items from Fashion-MNIST's test split); "
             f"every segmentation run: {s['steps_per_run']['segment']} optimizer steps, every detection run: "
             f"{s['steps_per_run']['detect']}."]
    lines += [f"Note: {note}." for note in scale.notes]
    for runs, title, first, second in ((seg, "Semantic segmentation: mIoU (pixel accuracy)", "mIoU", "aAcc"),
                                       (det, "Detection: box AP (mask AP)", "box_AP", "mask_AP")):
        if runs:
            lines += ["", f"## {title}, %", "", "| labeled scenes | " + " | ".join(TITLES[m] for m in runs) + " |",
                      "|---:|" + "---:|" * len(runs)]
            lines += [f"| {row['labeled']} | " + " | ".join(
                f"{_cell(row[m][first])} ({_cell(row[m][second])})" if m in row else "" for m in runs) + " |"
                for row in s["table"]]
    lines += ["", "## Pre-training", "", *pretraining_lines(s["pretrain"], f"{scale.unlabeled} unlabeled scenes")]
    lines += ["", "## Recipes", "", f"- Model: {json.dumps(scale.model)}",
              f"- Pre-training: {json.dumps(scale.pretrain)}",
              f"- Segmentation, UperNet (MAE and scratch alike): {json.dumps(scale.segment)}",
              f"- Segmentation, linear probe (frozen encoders): {json.dumps(scale.probe)}",
              f"- Detection (MAE and scratch alike): {json.dumps(scale.detect)}",
              "- Labeled scenes: the first n training scenes; every run evaluated once at the end on the same "
              "validation scenes (no checkpoint picked on them).", "", *times_lines(s["stage_times_s"], "n<labeled>/<run>/")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return experiment_main("dense_transfer", DenseTransferOptions, dense_transfer, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

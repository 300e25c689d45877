"""Does video MAE pre-training help when labels are few, and does it learn time? An experiment on vitmae's
public API.

On the built-in moving-fashion-mnist (Fashion-MNIST items moving on a canvas): pre-train a video MAE once
on the unlabeled training clips (tube masking, VideoMAE's), and once more with random space-time masking
(MAE-ST's) for the ablation. Then, with a few labeled clips per class:

- fine-tune from the MAE and from scratch, with the same recipe and the same number of steps, on two
  tasks: the direction of motion (8 classes; a single frame says nothing of it: it needs time) and the
  item's class (10; one frame is enough: it needs appearance);
- a linear probe on frozen features: the tube-masked MAE, the random-masked one, and a randomly
  initialised encoder (the floor);
- controls on the direction: the same probe on the tube-masked MAE's features of clips whose frames are
  one frame repeated, or shuffled. Both must be near chance (12.5%); if not, the task leaks.

Every number is measured on the same validation clips. Writes RUN/report.md and RUN/metrics.json.

    python experiments/video_transfer.py --scale cpu --output runs/video-transfer

Scales: `tiny` is a smoke test (seconds; the numbers mean nothing), `cpu` fits a 2-core CPU (about half an
hour in all), `gpu` is for one GPU. A run directory that holds a finished run's metrics.json is reused and
a cut-off pre-training resumes: an interrupted experiment continues.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vitmae
from vitmae.config import FinetuneOptions, LinprobeOptions, PretrainOptions, RuntimeOptions, opt
from vitmae.data import open_source
from vitmae.data.clips import ClipSampling, EvalClips
from vitmae.data.labels import label_subset
from vitmae.families.encoder import normalization
from vitmae.families.features import encode_source
from vitmae.tasks.finetune import finetune
from vitmae.tasks.linprobe import linprobe
from vitmae.tasks.pretrain import pretrain
from vitmae.train.runtime import Runtime

from experiment_tools import (Clock, command_line, encoder_architecture, epochs_for, finished, hardware, parse_counts,
                              pretraining_lines, times_lines)
from experiment_tools import main as experiment_main

DATA = "moving-fashion-mnist"
CHANCE = {"direction": 100 / 8, "class": 100 / 10}


@dataclass
class VideoTransferOptions(RuntimeOptions):
    """Pre-train a video MAE once on unlabeled clips, then fine-tune and probe with a few labeled ones: MAE
    against scratch on direction and class, tube against random masking, and the time controls."""

    output: str = opt("runs/video-transfer", "directory of the experiment: every run, report.md, metrics.json")
    scale: str = opt("cpu", "tiny (a test: seconds) | cpu (a 2-core CPU: about half an hour) | gpu (one GPU)",
                     choices=lambda: list(SCALES))
    labeled: str | None = opt(None, "labeled clips per class, comma-separated, e.g. 10,100 (default: the scale's)")


@dataclass
class Scale:
    clips: int  # training clips (unlabeled for pre-training; the labeled few are the first of each class)
    model: dict[str, Any]  # PretrainOptions architecture fields
    pretrain: dict[str, Any]
    finetune: dict[str, Any]  # FinetuneOptions fields, MAE and scratch alike
    probe: dict[str, Any]  # LinprobeOptions fields of the frozen probes
    steps: int  # optimizer steps of every fine-tuning run
    probe_steps: int
    labeled: str
    notes: list[str] = field(default_factory=list)


MICRO = dict(model="videomae_vit_micro_patch8_32", in_chans=1)  # 16 frames of 32 px, tubelet 2, patch 8
SCALES: dict[str, Scale] = {
    "tiny": Scale(
        clips=80, model=dict(**MICRO, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                             decoder_num_heads=2),
        pretrain=dict(epochs=1, batch_size=8, heldout_samples=8, viz_every_epochs=0),
        finetune=dict(batch_size=8, blr=1e-3), probe=dict(batch_size=8, blr=0.1),
        steps=2, probe_steps=2, labeled="2,4", notes=["smoke test: a few steps of everything; the numbers mean nothing"],
    ),
    # the preset: 128 wide, 6 blocks, decoder 64 x 2; 128 tubelets a clip, 16 visible at tube masking 0.9
    "cpu": Scale(
        clips=10000, model=dict(MICRO),
        pretrain=dict(epochs=12, batch_size=64, blr=1e-3, warmup_epochs=1, heldout_samples=256, viz_every_epochs=4),
        finetune=dict(batch_size=32, blr=1e-3, warmup_epochs=0, layer_decay=0.75, drop_path=0.1),
        probe=dict(batch_size=64, blr=0.1, warmup_epochs=0),
        steps=400, probe_steps=400, labeled="10,100",
        notes=["the CPU preset videomae_vit_micro_patch8_32: 128 wide, 6 blocks, 16 frames of 32 px, tubelets "
               "2x8x8 (128 a clip), decoder 64 x 2, pixel targets",
               "pre-training at blr 1e-3: at the MAE's 1.5e-4 the decoder still predicted the background "
               "everywhere after 8 of 12 epochs (docs/results.md)"],
    ),
    "gpu": Scale(
        clips=50000, model=dict(MICRO, embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=4,
                                decoder_num_heads=4),
        pretrain=dict(epochs=100, batch_size=256, blr=1.5e-4, warmup_epochs=5, heldout_samples=1000,
                      viz_every_epochs=25, compile=False),
        finetune=dict(batch_size=64, blr=1e-3, warmup_epochs=0, layer_decay=0.75, drop_path=0.1, compile=False),
        probe=dict(batch_size=256, blr=0.1, warmup_epochs=0),
        steps=2000, probe_steps=1000, labeled="10,100",
        notes=["ViT-Tiny width (192, 12 blocks) on 16 frames of 32 px, decoder 128 x 4"],
    ),
}
FINETUNES = (("direction", "mae"), ("direction", "scratch"), ("class", "mae"), ("class", "scratch"))
PROBES = (("probe_tube", "tube"), ("probe_random_masking", "random_masking"), ("probe_random_init", "random_init"))
TITLES = {"mae": "fine-tuned from the MAE", "scratch": "from scratch", "probe_tube": "frozen MAE, tube masking",
          "probe_random_masking": "frozen MAE, random masking", "probe_random_init": "frozen random encoder"}


class Reordered:
    """A video's centre clip with its frames reordered: `repeated` repeats its first frame, `shuffled`
    permutes them (drawn from the sample's generator): the clip with its time taken away."""

    def __init__(self, views: EvalClips, how: str):
        self.views, self.how, self.collate = views, how, views.collate

    def __call__(self, video, generator: torch.Generator | None = None) -> torch.Tensor:
        clip = self.views(video)  # (1, C, T, H, W)
        if self.how == "repeated":
            return clip[:, :, :1].expand_as(clip).clone()
        return clip[:, :, torch.randperm(clip.shape[2], generator=generator)]


def feature_probe(train: Any, val: Any, num_classes: int, steps: int = 300) -> float:
    """Top-1 (%) of a softmax regression on standardised frozen features (full-batch Adam): the controls'
    probe, one rule for every row it is compared across."""
    mean, std = train.features.mean(0), train.features.std(0) + 1e-6
    x, y = (train.features - mean) / std, train.labels
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(head(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = head((val.features - mean) / std).argmax(1)
    return round(float((predicted == val.labels).float().mean()) * 100, 2)


def controls(checkpoint: str, scale: Scale, per_class: int, cfg: VideoTransferOptions) -> dict[str, float]:
    """The direction probe on the MAE's features of ordered clips, of one frame repeated, of shuffled frames."""
    encoder = vitmae.load_pretrained(checkpoint).encoder.eval()
    config = encoder.config
    mean, std = normalization(config, DATA)
    views = EvalClips(ClipSampling(config.num_frames, 1), config.img_size, mean, std)
    options = dict(in_chans=config.in_chans, clip_label="direction", clips=scale.clips, seed=cfg.seed)
    train_all, val = open_source(DATA, "train", "clip", **options), open_source(DATA, "val", "clip", **options)
    train = label_subset(train_all, per_class=per_class, seed=cfg.seed)
    runtime = Runtime(cfg.device, cfg.precision)
    results = {}
    for how, transform in (("ordered", views), ("repeated", Reordered(views, "repeated")),
                           ("shuffled", Reordered(views, "shuffled"))):
        feats = [encode_source(encoder, source, transform, "mean", runtime, 64, cfg.num_workers) for source in (train, val)]
        results[how] = feature_probe(*feats, num_classes=8)
    return results


def video_transfer(cfg: VideoTransferOptions) -> dict[str, Any]:
    scale = SCALES[cfg.scale]
    counts = parse_counts(cfg.labeled or scale.labeled, "clips per class", "10,100")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(device=cfg.device, precision=cfg.precision, seed=cfg.seed, num_workers=cfg.num_workers,
                  overwrite=True)  # a finished run is reused (its metrics.json); an unfinished one starts over
    clock, started = Clock("video-transfer"), time.perf_counter()

    # 1. Pre-training, once per masking, on the unlabeled training clips.
    pretrained: dict[str, dict[str, Any]] = {}
    for masking in ("tube", "random"):
        run = out / f"pretrain_{masking}"
        cut_off = str(run) if (run / "checkpoints" / "latest").is_file() else None  # continues where it stopped
        pretrained[masking] = finished(run) or clock.run(
            f"pre-training ({masking} masking)", pretrain,
            PretrainOptions(output=str(run), data=DATA, clips=scale.clips, mask_type=masking, resume=cut_off,
                            **scale.model, **scale.pretrain, **common))
    random_init = out / "random_init.safetensors"  # the frozen floor: the same architecture, untrained
    if not random_init.is_file():
        torch.manual_seed(cfg.seed)
        vitmae.export(vitmae.MaskedAutoencoder(PretrainOptions(**scale.model).model_config()), random_init, "vitmae")
    inits = {"mae": dict(checkpoint=str(out / "pretrain_tube")),
             "scratch": dict(checkpoint="none", **encoder_architecture(scale.model))}
    frozen = {"tube": str(out / "pretrain_tube"), "random_masking": str(out / "pretrain_random"),
              "random_init": str(random_init)}

    # 2. Fine-tuning and probes with `n` labeled clips per class; the same validation clips for all.
    data = dict(data=DATA, clips=scale.clips)
    results: dict[str, dict[str, Any]] = {}
    for n in counts:
        row = results[str(n)] = {}
        for label, init in FINETUNES:
            epochs = epochs_for(scale.steps, n * (8 if label == "direction" else 10), scale.finetune["batch_size"])
            fcfg = FinetuneOptions(output=str(out / f"n{n}" / f"{label}_{init}"), clip_label=label, labels_per_class=n,
                                   max_steps=scale.steps, epochs=epochs, eval_every_epochs=epochs, **inits[init],
                                   **data, **scale.finetune, **common)
            row[f"{label}_{init}"] = finished(fcfg.output) or clock.run(f"{label} {init} {n}", finetune, fcfg)
        for name, encoder in PROBES:
            epochs = epochs_for(scale.probe_steps, n * 8, scale.probe["batch_size"])
            pcfg = LinprobeOptions(output=str(out / f"n{n}" / name), checkpoint=frozen[encoder], clip_label="direction",
                                   labels_per_class=n, max_steps=scale.probe_steps, epochs=epochs,
                                   eval_every_epochs=epochs, pool="mean", **data, **scale.probe, **common)
            row[name] = finished(pcfg.output) or clock.run(f"{name} {n}", linprobe, pcfg)
    saved = out / "controls.json"  # reused as the runs are
    control = json.loads(saved.read_text()) if saved.is_file() else None
    if control is None or control.get("labeled_per_class") != max(counts):
        control = {"labeled_per_class": max(counts), **clock.run("controls", controls, frozen["tube"], scale,
                                                                 max(counts), cfg)}
        saved.write_text(json.dumps(control) + "\n")
    return _write(out, cfg, scale, pretrained, results, control, clock, started)


# -- the report ----------------------------------------------------------------------------------------
def _write(out: Path, cfg: VideoTransferOptions, scale: Scale, pretrained: dict[str, dict[str, Any]],
           results: dict[str, dict[str, Any]], control: dict[str, Any], clock: Clock, started: float) -> dict[str, Any]:
    table = [{"labeled_per_class": int(n), **{name: {"top1": s["top1"], "best_top1": s.get("best_top1")}
                                              for name, s in row.items()}} for n, row in results.items()]
    summary = {"scale": cfg.scale, "command": command_line("video_transfer.py", f"--scale {cfg.scale} --output {cfg.output}"),
               "hardware": hardware(cfg.device), "wall_time_s": round(time.perf_counter() - started, 1),
               "stage_times_s": clock.times, "clips": scale.clips, "steps_per_run": scale.steps, "table": table,
               "controls": control, "chance": CHANCE,
               "pretrain": {k: {x: y for x, y in v.items() if x != "skipped_files"} for k, v in pretrained.items()},
               "report": str(out / "report.md")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary, scale))
    return summary


def _markdown(s: dict[str, Any], scale: Scale) -> str:
    lines = [f"# Video MAE transfer on moving-fashion-mnist (scale `{s['scale']}`)", "",
             f"Command: `{s['command']}`  ", f"Hardware: {s['hardware']}  ",
             f"Wall time: {s['wall_time_s'] / 60:.1f} min  ",
             f"{s['clips']} training clips (pre-training uses them without labels), {s['clips'] // 5} validation "
             f"clips; every fine-tuning run {s['steps_per_run']} optimizer steps; top-1 on the validation clips at "
             "the end of each run (no checkpoint picked on them)."]
    lines += [f"Note: {note}." for note in scale.notes]
    for label in ("direction", "class"):
        lines += ["", f"## Fine-tuning, {label} (chance {CHANCE[label]:.1f}%): top-1 %", "",
                  "| labeled clips per class | fine-tuned from the MAE | from scratch | MAE - scratch |", "|---:|---:|---:|---:|"]
        for row in s["table"]:
            mae, scratch = row[f"{label}_mae"]["top1"], row[f"{label}_scratch"]["top1"]
            lines.append(f"| {row['labeled_per_class']} | {mae:.1f} | {scratch:.1f} | {mae - scratch:+.1f} |")
    lines += ["", "## Linear probe on frozen features, direction: top-1 %", "",
              "| labeled clips per class | " + " | ".join(TITLES[name] for name, _ in PROBES) + " |",
              "|---:|" + "---:|" * len(PROBES)]
    lines += [f"| {row['labeled_per_class']} | " + " | ".join(f"{row[name]['top1']:.1f}" for name, _ in PROBES) + " |"
              for row in s["table"]]
    c = s["controls"]
    lines += ["", f"## Controls, direction (chance {CHANCE['direction']:.1f}%)", "",
              f"A softmax regression on the tube-masked MAE's mean-pooled features, {c['labeled_per_class']} labeled "
              "clips per class, the centre clip of each video:", "",
              "| clips | top-1 % |", "|---|---:|", f"| ordered frames | {c['ordered']:.1f} |",
              f"| one frame, repeated | {c['repeated']:.1f} |", f"| shuffled frames | {c['shuffled']:.1f} |"]
    for masking, p in s["pretrain"].items():
        lines += ["", f"## Pre-training, {masking} masking", "", *pretraining_lines(p, f"{s['clips']} unlabeled clips")]
    lines += ["", "## Recipes", "", f"- Model: {json.dumps(scale.model)}",
              f"- Pre-training: {json.dumps(scale.pretrain)}",
              f"- Fine-tuning (MAE and scratch alike): {json.dumps(scale.finetune)}",
              f"- Linear probes (frozen encoders, cached features, mean-pooled): {json.dumps(scale.probe)}",
              "- Labeled clips: the first n of each class (stratified, seeded), the same for every run.", "",
              *times_lines(s["stage_times_s"], "n<labeled>/<run>/")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return experiment_main("video_transfer", VideoTransferOptions, video_transfer, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

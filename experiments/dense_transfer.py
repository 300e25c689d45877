"""Does MAE pre-training help dense prediction when labels are few? An experiment on vitmae's public API.

On the built-in fashion-scenes: pre-train an MAE once on unlabeled training scenes (written by
`make-dataset` as a user's folder of images); then, with a few labeled scenes (100 and 1,000 by default),
train semantic segmentation (UperNet) from the MAE weights and from scratch with the same recipe and
budget, the linear probe (BN + 1x1 conv) on the frozen MAE encoder and on a frozen randomly initialised
one, and detection with instance masks (ViTDet Mask R-CNN) from the MAE weights and from scratch. Every
number is measured on the same validation scenes, whose items come from Fashion-MNIST's test split.
Each transfer is trained once per seed (`--seeds`, the same scenes and pre-trained encoder; the seed
draws the heads' initialisation, the data order and the augmentations), and the report gives the mean
and sample standard deviation over seeds, and MAE's lead over its baseline seed by seed. Writes
RUN/report.md and RUN/metrics.json.

    python experiments/dense_transfer.py --scale cpu --output runs/dense-transfer

A lever of the pre-training (`--mask-ratio`) changes only the MAE runs: `--baselines-from` takes the
scratch and frozen-random runs, which do not depend on it, from an earlier experiment of the same scale:

    python experiments/dense_transfer.py --scale cpu --mask-ratio 0.9 --baselines-from runs/dense-transfer \
        --output runs/dense-transfer-mask90

Scales: `tiny` is a smoke test (seconds; the numbers mean nothing), `cpu` fits a 2-core CPU (the
pre-training once, for long; each transfer run a few minutes), `gpu` is for one GPU. Every run gets the
same number of optimizer steps whatever its labels, so the smaller label budget trains more epochs. A run
directory that holds a finished run's metrics.json is reused and a cut-off pre-training resumes: an
interrupted experiment continues.
"""
from __future__ import annotations

import json
import statistics
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
    seeds: str | None = opt(None, "seeds of the transfer runs, comma-separated, e.g. 0,1,2 (default: the scale's); "
                            "the pre-training and the scenes use --seed")
    tasks: str = opt("segment,detect", "which transfers: segment, detect or both, comma-separated")
    pretrained: str | None = opt(None, "skip pre-training: use this pre-trained checkpoint (its scenes' size)")
    mask_ratio: float | None = opt(None, "mask ratio of the pre-training (default: the scale's)", min=0, below=1)
    baselines_from: str | None = opt(None, "take the runs that do not depend on the pre-training (scratch, frozen "
                                     "random) from this experiment directory of the same scale, seeds and labels")


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
    seeds: str  # of the transfer runs
    notes: list[str] = field(default_factory=list)


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        size=32, unlabeled=64, val=16,
        model=dict(model="mae_vit_micro_patch4_28", img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2,
                   num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
        pretrain=dict(epochs=1, batch_size=16, heldout_samples=16, viz_every_epochs=0),
        segment=dict(batch_size=8, lr=1e-3), probe=dict(batch_size=8, lr=1e-2),
        detect=dict(batch_size=4, lr=1e-3, proposals=50, rois_per_image=32, pyramid_channels=32),
        steps=3, detect_steps=3, labeled="8", seeds="0,1", notes=["smoke test: a few steps of everything; the numbers mean nothing"],
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
        steps=1200, detect_steps=600, labeled="100,1000", seeds="0,1,2",
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
        steps=2000, detect_steps=2000, labeled="100,1000", seeds="0,1,2",
        notes=["ViT-Tiny (192 wide, 12 blocks), patch 8 on 96-px scenes (144 tokens), decoder 256x4, pixel targets"],
    ),
}
# (run, initialisation, head): the UperNet runs train everything; the probes freeze the encoder
SEGMENT_RUNS = (("segment_mae", "mae", "upernet"), ("segment_scratch", "scratch", "upernet"),
                ("probe_mae", "mae", "linear"), ("probe_random", "random", "linear"))
DETECT_RUNS = (("detect_mae", "mae"), ("detect_scratch", "scratch"))
BASELINES = ("scratch", "random")  # initialisations that do not depend on the pre-training
# (what is compared, run, baseline, metric): MAE's lead seed by seed
LEADS = (("UperNet: MAE - scratch, mIoU", "segment_mae", "segment_scratch", "mIoU"),
         ("linear probe: frozen MAE - frozen random, mIoU", "probe_mae", "probe_random", "mIoU"),
         ("Mask R-CNN: MAE - scratch, box AP", "detect_mae", "detect_scratch", "box_AP"))
TITLES = {"segment_mae": "UperNet, MAE init", "segment_scratch": "UperNet, scratch",
          "probe_mae": "linear probe, frozen MAE", "probe_random": "linear probe, frozen random",
          "detect_mae": "Mask R-CNN, MAE init", "detect_scratch": "Mask R-CNN, scratch"}


def dense_transfer(cfg: DenseTransferOptions) -> dict[str, Any]:
    scale = SCALES[cfg.scale]
    counts = parse_counts(cfg.labeled or scale.labeled, "scene counts", "100,1000")
    seeds = parse_counts(cfg.seeds or scale.seeds, "seeds", "0,1,2", flag="--seeds", least=0)
    tasks = {t.strip() for t in cfg.tasks.split(",") if t.strip()}
    if not tasks or tasks - {"segment", "detect"}:
        raise ConfigError(f"--tasks takes segment, detect or both, not {cfg.tasks!r}")
    model = dict(scale.model, **({} if cfg.mask_ratio is None else {"mask_ratio": cfg.mask_ratio}))
    runs = [(name, init, head) for name, init, head in SEGMENT_RUNS if "segment" in tasks]
    runs += [(name, init, "mask-rcnn") for name, init in DETECT_RUNS if "detect" in tasks]
    reused = _baselines(cfg, counts, seeds, runs)
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
                                                     **model, **scale.pretrain, **common))
        checkpoint = str(run)
    random_init = out / "random_init.safetensors"  # the frozen floor: the same architecture, untrained
    if not random_init.is_file() and not reused:
        torch.manual_seed(cfg.seed)
        vitmae.export(vitmae.MaskedAutoencoder(PretrainOptions(**model).model_config()), random_init, "vitmae")
    inits = {"mae": dict(checkpoint=checkpoint), "random": dict(checkpoint=str(random_init)),
             "scratch": dict(checkpoint="none", **encoder_architecture(model))}

    # 2. The transfers, on the first `n` training scenes (the labeled few) and the same validation scenes,
    # once per seed.
    results: dict[str, dict[str, dict[str, Any]]] = {}
    scene_data = dict(data="fashion-scenes", scene_size=scale.size, val_scenes=scale.val)
    for n in counts:
        for seed in seeds:
            row = results.setdefault(str(n), {})[f"seed{seed}"] = {}
            for name, init, head in runs:
                where, seeded = str(out / f"n{n}" / f"seed{seed}" / name), {**common, "seed": seed}
                if (n, seed, name) in reused:
                    row[name] = reused[n, seed, name]
                elif head == "mask-rcnn":
                    epochs = epochs_for(scale.detect_steps, n, scale.detect["batch_size"])
                    row[name] = finished(where) or clock.run(f"{name} {n} seed {seed}", detect_run, DetectOptions(
                        output=where, scenes=n, max_steps=scale.detect_steps, epochs=epochs, eval_every_epochs=epochs,
                        **inits[init], **scene_data, **scale.detect, **seeded))
                else:
                    recipe = scale.probe if head == "linear" else scale.segment
                    epochs = epochs_for(scale.steps, n, recipe["batch_size"])
                    row[name] = finished(where) or clock.run(f"{name} {n} seed {seed}", segment, SegmentOptions(
                        output=where, head=head, scenes=n, max_steps=scale.steps, epochs=epochs,
                        eval_every_epochs=epochs, **inits[init], **scene_data, **recipe, **seeded))
    return _write(out, cfg, scale, model, pretrain_summary, results, clock, started)


def _baselines(cfg: DenseTransferOptions, counts: list[int], seeds: list[int],
               runs: list[tuple[str, str, str]]) -> dict[tuple[int, int, str], dict[str, Any]]:
    """--baselines-from: the finished scratch and frozen-random runs of an earlier experiment of this scale,
    by (scenes, seed, run); every one the experiment needs, or a clear error before anything is trained."""
    if not cfg.baselines_from:
        return {}
    source = Path(cfg.baselines_from)
    earlier = finished(source)
    if earlier is None or (earlier.get("scale"), earlier.get("seed")) != (cfg.scale, cfg.seed):
        raise ConfigError(f"--baselines-from {source}: not a finished experiment of scale {cfg.scale} and --seed "
                          f"{cfg.seed} (the seed that draws the scenes)")
    found, missing = {}, []
    for n in counts:
        for seed in seeds:
            for name, init, _ in runs:
                if init in BASELINES:
                    summary = finished(source / f"n{n}" / f"seed{seed}" / name)
                    if summary is None:
                        missing.append(f"n{n}/seed{seed}/{name}")
                    found[n, seed, name] = summary
    if missing:
        raise ConfigError(f"--baselines-from {source}: no finished run {', '.join(missing)}")
    return found


# -- the report ----------------------------------------------------------------------------------------
def _scores(name: str, summary: dict[str, Any]) -> dict[str, float | None]:
    if name.startswith(("segment", "probe")):
        return {"mIoU": summary["mIoU"], "aAcc": summary["aAcc"]}
    return {"box_AP": summary["box"]["AP"], "mask_AP": summary.get("mask", {}).get("AP")}


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (0 for one seed), and each seed's value."""
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "sd": None, "per_seed": values}
    return {"mean": statistics.fmean(known), "sd": statistics.stdev(known) if len(known) > 1 else 0.0,
            "per_seed": values}


def _table(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per label budget: each run's scores over the seeds (mean, sd, per seed) and MAE's leads,
    seed by seed."""
    table = []
    for n, by_seed in results.items():
        entry: dict[str, Any] = {"labeled": int(n), "seeds": [int(seed[4:]) for seed in by_seed]}
        names = list(next(iter(by_seed.values())))
        for name in names:
            scores = [_scores(name, row[name]) for row in by_seed.values()]
            entry[name] = {metric: _spread([s[metric] for s in scores]) for metric in scores[0]}
            entry[name]["time_s"] = _spread([row[name].get("train_time_s") for row in by_seed.values()])["mean"]
        entry["leads"] = {title: _spread([a - b for a, b in zip(entry[run][metric]["per_seed"],
                                                                entry[base][metric]["per_seed"])])
                          for title, run, base, metric in LEADS if run in names and base in names}
        table.append(entry)
    return table


def _write(out: Path, cfg: DenseTransferOptions, scale: Scale, model: dict[str, Any], pretrain_summary: dict[str, Any],
           results: dict[str, dict[str, dict[str, Any]]], clock: Clock, started: float) -> dict[str, Any]:
    summary = {"scale": cfg.scale, "seed": cfg.seed, "command": command_line("dense_transfer.py", f"--scale {cfg.scale} --output {cfg.output}"),
               "hardware": hardware(cfg.device), "wall_time_s": round(time.perf_counter() - started, 1),
               "stage_times_s": clock.times, "val_scenes": scale.val, "scene_size": scale.size, "model": model,
               "baselines_from": cfg.baselines_from,
               "steps_per_run": {"segment": scale.steps, "detect": scale.detect_steps}, "table": _table(results),
               "pretrain": {k: v for k, v in pretrain_summary.items() if k != "skipped_files"},
               "runs": results, "report": str(out / "report.md")}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary, scale))
    return summary


def _cell(spread: dict[str, Any], signed: bool = False) -> str:
    """`20.6 ± 0.4` over several seeds, `20.6` over one."""
    if spread["mean"] is None:
        return ""
    text = f"{spread['mean']:+.1f}" if signed else f"{spread['mean']:.1f}"
    return text + (f" ± {spread['sd']:.1f}" if len(spread["per_seed"]) > 1 else "")


def _markdown(s: dict[str, Any], scale: Scale) -> str:
    seg = [name for name, _, _ in SEGMENT_RUNS if any(name in row for row in s["table"])]
    det = [name for name, _ in DETECT_RUNS if any(name in row for row in s["table"])]
    seeds = s["table"][0]["seeds"]
    lines = [f"# Dense transfer of MAE pre-training on fashion-scenes (scale `{s['scale']}`)", "",
             f"Command: `{s['command']}`  ", f"Hardware: {s['hardware']}  ",
             f"Wall time: {s['wall_time_s'] / 60:.1f} min  ",
             f"Validation: {s['val_scenes']} scenes of {s['scene_size']} px (items from Fashion-MNIST's test split); "
             f"every segmentation run: {s['steps_per_run']['segment']} optimizer steps, every detection run: "
             f"{s['steps_per_run']['detect']}.  ",
             f"Seeds of the transfer runs: {', '.join(map(str, seeds))}"
             + (" (mean ± sample standard deviation over them).  " if len(seeds) > 1 else ".  ")]
    if s["baselines_from"]:
        lines.append(f"Scratch and frozen-random runs: those of {s['baselines_from']} (they do not depend on the "
                     "pre-training).")
    lines += [f"Note: {note}." for note in scale.notes]
    for runs, title, first, second in ((seg, "Semantic segmentation: mIoU (pixel accuracy)", "mIoU", "aAcc"),
                                       (det, "Detection: box AP (mask AP)", "box_AP", "mask_AP")):
        if runs:
            lines += ["", f"## {title}, %", "", "| labeled scenes | " + " | ".join(TITLES[m] for m in runs) + " |",
                      "|---:|" + "---:|" * len(runs)]
            lines += [f"| {row['labeled']} | " + " | ".join(
                f"{_cell(row[m][first])} ({_cell(row[m][second])})" if m in row else "" for m in runs) + " |"
                for row in s["table"]]
    leads = [title for title, *_ in LEADS if any(title in row["leads"] for row in s["table"])]
    if leads:
        lines += ["", "## MAE's lead, seed by seed (points)", "",
                  "| labeled scenes | " + " | ".join(leads) + " |", "|---:|" + "---:|" * len(leads)]
        lines += [f"| {row['labeled']} | " + " | ".join(
            f"{_cell(row['leads'][t], signed=True)} ({', '.join(f'{v:+.1f}' for v in row['leads'][t]['per_seed'])})"
            for t in leads) + " |" for row in s["table"]]
    lines += ["", "## Pre-training", "", *pretraining_lines(s["pretrain"], f"{scale.unlabeled} unlabeled scenes")]
    lines += ["", "## Recipes", "", f"- Model: {json.dumps(s['model'])}",
              f"- Pre-training: {json.dumps(scale.pretrain)}",
              f"- Segmentation, UperNet (MAE and scratch alike): {json.dumps(scale.segment)}",
              f"- Segmentation, linear probe (frozen encoders): {json.dumps(scale.probe)}",
              f"- Detection (MAE and scratch alike): {json.dumps(scale.detect)}",
              "- Labeled scenes: the first n training scenes, the same for every seed; every run evaluated once at "
              "the end on the same validation scenes (no checkpoint picked on them).", "",
              *times_lines(s["stage_times_s"], "n<labeled>/seed<seed>/<run>/")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return experiment_main("dense_transfer", DenseTransferOptions, dense_transfer, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())

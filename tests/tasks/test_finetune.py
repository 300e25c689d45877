"""Fine-tuning through the real CLI on real images, label subsets, and the recipe's randomness."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitmae.config import ConfigError, FinetuneOptions
from vitmae.data import FashionMNISTSource, build_source
from vitmae.data.augment import FinetuneTransform
from vitmae.data.labels import (HOLDOUT_FRACTION, label_subset, labeled_splits, source_labels, stratified_counts,
                                stratified_indices)
from vitmae.data.transforms import sample_generator
from vitmae.interop import export, load_classifier
from vitmae.model import create_model
from vitmae.tasks.finetune import finetune

TINY_ARCH = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_image_folder(root: Path, train_per_class: int, val_per_class: int, classes: int = 10) -> Path:
    """ImageFolder layout (train/<class>/, val/<class>/) of real Fashion-MNIST images as PNG files."""
    source = FashionMNISTSource("test")
    labels = source.labels
    for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, train_per_class)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, index in enumerate(np.flatnonzero(labels == c)[offset:offset + count]):
                Image.fromarray(source.images[index]).save(folder / f"{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch4_28", **TINY_ARCH)
    return export(model, tmp_path_factory.mktemp("mae") / "mae", "vitmae").parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data"), train_per_class=6, val_per_class=2)


def test_finetune_from_a_checkpoint_on_a_label_subset(run_cli, tmp_path, tiny_checkpoint, folder):
    out = tmp_path / "ft"
    result = run_cli("finetune", "--checkpoint", tiny_checkpoint, "--data", folder, "--labels-per-class", "4",
                     "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "1", "--num-workers", "0",
                     "--log-every-steps", "1", "--output", out)
    assert "top-1" in result.stdout and "best top-1" in result.stdout
    assert ("augmentation for 28x28 images with 1 channel(s): crops of 0.8-1 of the area, flip 0.5, label "
            "smoothing 0.1, mixup 0, cutmix 0, RandAugment off, random erasing 0") in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_images"] == 40 and m["train_images_available"] == 60 and m["val_images"] == 20
    assert m["steps"] == 10 and m["num_classes"] == 10 and m["classes"][:2] == ["c0", "c1"]
    assert [h["epoch"] for h in m["history"]] == [1, 2] and [h["step"] for h in m["history"]] == [5, 10]
    for h in m["history"]:
        assert 0 <= h["top1"] <= h["top5"] <= 100 and h["loss"] > 0
    assert m["top1"] == m["history"][-1]["top1"] and m["top5"] == m["history"][-1]["top5"]
    assert m["best_top1"] == max(h["top1"] for h in m["history"])
    assert m["init"] == str(tiny_checkpoint) and m["global_pool"] == "avg"
    assert m["augmentation"] == {"mixup": 0.0, "cutmix": 0.0, "randaug": False, "reprob": 0.0,
                                 "crop_min_scale": 0.8, "hflip": 0.5}  # the grayscale defaults
    assert (out / "checkpoints" / "best" / "model.safetensors").exists()
    assert Path(m["last_checkpoint"]).name == "step-00000010"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000010"
    # Where the model came from, rather than the preset it did not use; the defaults the images chose.
    config_text = (out / "config.yaml").read_text()
    config = yaml.safe_load(config_text)
    assert config["labels_per_class"] == 4 and config["checkpoint"] == str(tiny_checkpoint)
    assert config["model"] is None and config["mixup"] == 0.0 and config["crop_min_scale"] == 0.8
    source = m["model_source"]
    assert source["checkpoint"] == str(tiny_checkpoint) and source["format"] == "vitmae"
    assert source["resolved"] == str(tiny_checkpoint)
    assert source["architecture"] == m["model"] and source["architecture"]["embed_dim"] == 32
    assert config_text.startswith(f"# model_source: {tiny_checkpoint} (vitmae format")
    best, last = load_classifier(out / "checkpoints" / "best"), load_classifier(out)
    assert best.num_classes == last.num_classes == 10 and last.global_pool == "avg"
    assert not torch.equal(last.head.weight, torch.zeros_like(last.head.weight))


def test_finetune_from_scratch_with_every_augmentation(run_cli, tmp_path, folder):
    out = tmp_path / "scratch"
    config = tmp_path / "finetune.yaml"
    config.write_text("mixup: 0.8\ncutmix: 1.0\nrandaug: true\nreprob: 0.25\nsmoothing: 0.2\nbatch-size: 4\n")
    run_cli("finetune", "--config", config, "--checkpoint", "none", "--data", folder, "--embed-dim", "32",
            "--depth", "1", "--num-heads", "2", "--pool", "cls", "--drop-path", "0.1", "--epochs", "2",
            "--max-steps", "3", "--batch-size", "8", "--num-workers", "2", "--output", out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"] == "scratch" and m["global_pool"] == "token" and m["steps"] == 3
    assert m["model_source"]["preset"] == "mae_vit_micro_patch4_28"  # the preset was used: it says so
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "mae_vit_micro_patch4_28"
    assert m["augmentation"]["randaug"] and m["augmentation"]["mixup"] == 0.8 and m["smoothing"] == 0.2
    assert m["effective_batch_size"] == 8  # the flag wins over the file
    assert len(m["history"]) == 1 and 0 < m["history"][0]["epoch"] < 1  # evaluated where max_steps stopped it
    assert m["model"]["embed_dim"] == 32
    assert load_classifier(out).global_pool == "token"


@pytest.mark.parametrize("in_chans, img_size, recipe", [
    (3, 224, "heavy"), (3, (224, 160), "heavy"), (3, 65, "heavy"),
    (3, 64, "light"), (3, 32, "light"), (3, 28, "light"), (3, (224, 64), "light"),  # small, even in RGB
    (1, 224, "light"), (4, 224, "light"),  # not RGB
])
def test_augmentation_defaults_follow_the_images(in_chans, img_size, recipe):
    heavy = {"mixup": 0.8, "cutmix": 1.0, "randaug": True, "reprob": 0.25, "crop_min_scale": 0.08}
    light = {"mixup": 0.0, "cutmix": 0.0, "randaug": False, "reprob": 0.0, "crop_min_scale": 0.8}
    assert FinetuneOptions().augmentation(in_chans, img_size) == (heavy if recipe == "heavy" else light)
    # Options a user set are kept whatever the images.
    chosen = FinetuneOptions(mixup=0.2, randaug=True).augmentation(in_chans, img_size)
    assert chosen["mixup"] == 0.2 and chosen["randaug"] is True


def test_finetune_needs_a_checkpoint_and_consistent_label_options(run_cli, tmp_path, folder):
    with pytest.raises(ConfigError, match="--checkpoint"):
        finetune(FinetuneOptions(data=str(folder), output=str(tmp_path / "x")))
    result = run_cli("finetune", "--checkpoint", "none", "--data", folder, "--labels-fraction", "0.5",
                     "--labels-per-class", "2", "--output", tmp_path / "y", check=False)
    assert result.returncode == 2 and "not both" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stratified_subsets_are_exact_and_seeded():
    labels = FashionMNISTSource("train").labels  # 6,000 of each of the 10 classes
    one_percent = stratified_indices(labels, fraction=0.01, seed=0)
    assert len(one_percent) == 600
    assert np.bincount(labels[one_percent], minlength=10).tolist() == [60] * 10
    assert one_percent == stratified_indices(labels, fraction=0.01, seed=0)
    assert one_percent != stratified_indices(labels, fraction=0.01, seed=1)
    assert set(one_percent) <= set(stratified_indices(labels, fraction=0.1, seed=0))  # nested, same seed
    per_class = stratified_indices(labels, per_class=7, seed=3)
    assert np.bincount(labels[per_class], minlength=10).tolist() == [7] * 10

    uneven = np.array([0] * 5 + [1] * 3 + [2] * 2 + [-1] * 4)  # -1: unlabeled, never picked
    assert stratified_counts([5, 3, 2], 0.5) == [3, 1, 1]  # total round(0.5 * 10) = 5, largest remainder
    picked = stratified_indices(uneven, fraction=0.5, seed=0)
    assert len(picked) == 5 and all(uneven[i] >= 0 for i in picked)
    assert stratified_counts([1000, 1], 0.01) == [10, 1]  # a class never drops to zero

    source = label_subset(FashionMNISTSource("test"), per_class=3, seed=0)
    assert len(source) == 30 and sorted(source.labels) == sorted(list(range(10)) * 3)
    image, label = source[4]
    assert label == source.labels[4] and image.size == (28, 28)


def test_csv_without_validation_split_holds_out_a_stratified_tenth(tmp_path, folder):
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted((folder / "train").rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    train, val, description = labeled_splits(str(tmp_path / "labels.csv"), None, in_chans=1, seed=0)
    # 10% of 6 images per class rounds to 6 in all, but no class is left out of validation: one of each.
    assert HOLDOUT_FRACTION == 0.1 and len(val) == 10 and len(train) == 50
    assert sorted(source_labels(val).tolist()) == list(range(10))
    assert not set(train.paths) & set(val.paths)
    assert "held out" in description


def test_augmentation_is_per_sample_and_leaves_global_rngs_alone():
    image = build_source("fashion-mnist", "val")[0][0]
    transform = FinetuneTransform(28, (0.5,), (0.5,), scale=(0.35, 1.0), randaug="rand-m9-mstd0.5-inc1",
                                  reprob=1.0)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    a = transform(image, sample_generator(0, 0, 5))
    b = transform(image, sample_generator(0, 0, 5))
    c = transform(image, sample_generator(0, 1, 5))
    assert a.shape == (1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_model_ema_is_evaluated_kept_as_best_and_resumes_exactly(tmp_path, tiny_checkpoint, folder):
    """--model-ema: the moving average is what top1 measures and what checkpoints/best holds, and a run
    stopped and resumed averages on to exactly the weights of the run left alone."""
    from safetensors.torch import load_file

    def run(out, **options):
        cfg = FinetuneOptions(checkpoint=str(tiny_checkpoint), data=str(folder), epochs=4, batch_size=8,
                             warmup_epochs=1, num_workers=0, model_ema=True, model_ema_decay=0.9,
                             eval_every_epochs=4, output=str(out), **options)
        return finetune(cfg)

    whole = run(tmp_path / "whole")
    assert whole["model_ema_decay"] == 0.9 and "top1_without_ema" in whole
    assert whole["history"][-1]["top1"] == whole["top1"]
    run(tmp_path / "parts", max_steps=13)  # stops inside epoch 2 (7 steps of 8 per epoch)
    resumed = run(tmp_path / "parts", resume=str(tmp_path / "parts"))
    assert resumed["steps"] == whole["steps"] == 28

    def ema_and_raw(out):
        state = torch.load(sorted((out / "checkpoints").glob("step-*"))[-1] / "train_state.pt", weights_only=True)
        raw = load_file(sorted((out / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
        return state["extra"]["ema"], raw

    ema, raw = ema_and_raw(tmp_path / "whole")
    ema_resumed, _ = ema_and_raw(tmp_path / "parts")
    assert ema.keys() == ema_resumed.keys()
    assert all(torch.equal(ema[k], ema_resumed[k]) for k in ema)
    assert not torch.equal(ema["head.weight"], raw["head.weight"])  # an average, not the last weights
    # Evaluated once, at the end: the best model is the final average.
    assert [h["epoch"] for h in whole["history"]] == [4]
    best = load_file(tmp_path / "whole" / "checkpoints" / "best" / "model.safetensors")
    assert all(torch.equal(best[k], ema[k]) for k in ema if k in best) and "head.weight" in best

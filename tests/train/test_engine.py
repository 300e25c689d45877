import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from vitmae.model.flat_names import flat_named_parameters
from vitmae.config import PretrainOptions
from vitmae.data import FashionMNISTSource, PretrainTransform, build_dataset, default_normalization
from vitmae.model import MaskedAutoencoder, ViTClassifier
from vitmae.families.mae import MAEObjective
from vitmae.train import NonFiniteLossError, Trainer
from vitmae.train.engine import enable_grad_checkpointing
from vitmae.train.checkpoint import load_checkpoint
from vitmae.model.vit import param_groups
from vitmae.train.optim import lr_at
from tests.conftest import ROOT

TINY = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def tiny_setup(tmp_path, **train):
    options = dict(output=str(tmp_path / "run"), batch_size=8, num_workers=0, epochs=1)
    cfg = PretrainOptions(**{**options, **TINY, **train})
    model = MaskedAutoencoder(cfg.model_config())
    mean, std = default_normalization(1, "fashion-mnist")
    dataset = build_dataset(FashionMNISTSource("test"), PretrainTransform(28, mean, std), seed=0)
    objective = MAEObjective(0.75, "random", 4, seed=0, rank=0)
    return cfg, model, dataset, objective


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=10, save_every_steps=1)

    def breaks_at_step_3(model, batch, step, micro):
        loss = objective(model, batch, step, micro)
        return loss * math.nan if step == 3 else loss

    trainer = Trainer(model, breaks_at_step_3, dataset, cfg)
    with pytest.raises(NonFiniteLossError, match="at step 3.*step-00000002"):
        trainer.fit()
    weights, state, ckpt, _ = load_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-00000002" and state["progress"]["step"] == 2
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_accumulation_counts_optimizer_steps(tmp_path):
    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=3, accum_steps=2, log_every_steps=1)
    summary = Trainer(model, objective, dataset, cfg).fit()
    assert summary["steps"] == 3 and summary["images"] == 3 * 2 * 8
    assert summary["effective_batch_size"] == 16
    assert summary["lr"] == pytest.approx(cfg.blr * 16 / 256)


def test_lr_schedule_warmup_then_half_cosine():
    assert lr_at(1, 1.0, 100, 10) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 100, 10) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 100, 10, min_lr=0.01) == pytest.approx(0.01)
    values = [lr_at(s, 1.0, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_step_schedule_warms_up_then_divides_by_ten_twice():
    assert lr_at(5, 1.0, 270, 10, schedule="step") == pytest.approx(0.5)
    assert lr_at(240, 1.0, 270, 10, schedule="step") == pytest.approx(1.0)  # 8/9 of 270
    assert lr_at(241, 1.0, 270, 10, schedule="step") == pytest.approx(0.1)
    assert lr_at(261, 1.0, 270, 10, schedule="step") == pytest.approx(0.01)  # after 26/27


def test_poly_schedule_warms_up_then_falls_linearly_to_min_lr():
    # mmseg's PolyLR (power 1, eta_min 0.1) over the 90 steps after a 10-step warm-up
    assert lr_at(5, 1.0, 100, 10, 0.1, "poly") == pytest.approx(0.5)
    assert lr_at(10, 1.0, 100, 10, 0.1, "poly") == pytest.approx(1.0)
    assert lr_at(19, 1.0, 100, 10, 0.1, "poly") == pytest.approx(0.1 + 0.9 * (1 - 9 / 90))
    assert lr_at(55, 1.0, 100, 10, 0.1, "poly") == pytest.approx(0.55)
    assert lr_at(100, 1.0, 100, 10, 0.1, "poly") == pytest.approx(0.1)


def test_no_weight_decay_on_biases_norms_and_frozen_tables():
    model = MaskedAutoencoder(PretrainOptions(**TINY).model_config())
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in flat_named_parameters(model)}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "blocks.0.attn.qkv.weight" in decayed and "cls_token" in decayed  # as the official code
    assert "blocks.0.attn.qkv.bias" in plain and "norm.weight" in plain
    assert "pos_embed" not in decayed | plain  # frozen sin-cos table


KILLED_WRITER = textwrap.dedent("""
    import sys, torch
    from vitmae.config import PretrainOptions
    from vitmae.model import MaskedAutoencoder
    from vitmae.train.checkpoint import TRAIN_STATE_KEYS, save_checkpoint
    model = MaskedAutoencoder(PretrainOptions(embed_dim=64, depth=2, num_heads=2).model_config())
    print("ready", flush=True)
    for step in range(1, 10_000):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        state = {**dict.fromkeys(TRAIN_STATE_KEYS, {}), "progress": {"step": step}}
        save_checkpoint(sys.argv[1], f"step-{step:08d}", model, state, keep=2)
""")


def test_checkpoints_survive_a_kill_at_any_moment(tmp_path):
    """A writer saving checkpoints in a loop is killed at arbitrary moments; every time, the latest
    checkpoint loads and is whole (all weights from the same save)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for attempt in range(4):
        run = tmp_path / f"run{attempt}"
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(run)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        while not (run / "checkpoints" / "latest").exists():
            time.sleep(0.01)
        time.sleep(0.05 + 0.07 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        weights, state, _, notes = load_checkpoint(run)
        assert notes == []  # the checkpoint `latest` names is whole: no fallback was needed
        step = state["progress"]["step"]
        assert all(torch.all(w == step) for name, w in weights.items() if "pos_embed" not in name)
        assert len(list((run / "checkpoints").glob("step-*"))) <= 3


def test_logged_loss_is_the_mean_over_its_window_across_epoch_ends(tmp_path):
    """Three steps per epoch, logged every two steps: windows that straddle epoch ends."""
    from torch.utils.data import Subset

    cfg, model, dataset, objective = tiny_setup(tmp_path, epochs=3, log_every_steps=2)
    dataset = Subset(dataset, range(24))  # 3 steps of 8 per epoch

    def constant(model, batch, step, micro):
        return objective(model, batch, step, micro) * 0 + 1.0

    Trainer(model, constant, dataset, cfg).fit()
    import json

    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6, 8, 9]
    assert all(l["loss"] == pytest.approx(1.0) for l in lines)


def test_a_non_finite_loss_between_checks_is_found_before_anything_is_saved(tmp_path):
    """Losses are read in batches (at logs, saves and epoch ends), yet the error names the very step."""
    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=10, save_every_steps=5, log_every_steps=50)

    def breaks_at_step_7(model, batch, step, micro):
        loss = objective(model, batch, step, micro)
        return loss * math.inf if step == 7 else loss

    with pytest.raises(NonFiniteLossError, match="at step 7.*step-00000005"):
        Trainer(model, breaks_at_step_7, dataset, cfg).fit()
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").glob("step-*"))] == ["step-00000005"]


def read_losses(run):
    import json

    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_training_follows_the_eager_loss_curve(tmp_path):
    """`--compile` (the GPU default) trains the same model: same losses step by step, to fp32 rounding."""
    curves = []
    for compile in (False, True):
        torch.manual_seed(0)
        cfg, model, dataset, objective = tiny_setup(tmp_path / str(compile), max_steps=4, log_every_steps=1,
                                                    compile=compile)
        trainer = Trainer(model, objective, dataset, cfg)
        assert trainer.compiled is compile
        summary = trainer.fit()
        assert summary["compiled"] is compile
        curves.append(read_losses(tmp_path / str(compile) / "run"))
    assert len(curves[1]) == 4
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)


def test_a_bad_compile_mode_is_a_config_error(tmp_path):
    from vitmae.config import ConfigError

    with pytest.raises(ConfigError, match="unknown --compile-mode 'fastest'"):
        cfg, model, dataset, objective = tiny_setup(tmp_path, compile=True, compile_mode="fastest")
        Trainer(model, objective, dataset, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_the_fast_path_agrees_with_the_reference_to_bf16_tolerance(device):
    """Compiled + bf16 autocast (the GPU default) against eager fp32 (equal to transformers, tested in
    tests/interop): the same loss and gradients on the same batch and noise, to bf16 rounding."""
    from vitmae.train.engine import compile_model
    from vitmae.train.runtime import autocast

    torch.manual_seed(0)
    model = MaskedAutoencoder(PretrainOptions(**TINY).model_config()).to(device)
    images = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(device)
    noise = torch.rand(16, 49, generator=torch.Generator().manual_seed(2)).to(device)
    reference = model(images, noise=noise).loss
    reference.backward()
    reference_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    fast = compile_model(model, True, "default", torch.device(device))
    with autocast(torch.device(device), "bf16"):
        fast_loss = fast(images, noise=noise).loss
    fast_loss.backward()
    fast_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert fast_loss.item() == pytest.approx(reference.item(), rel=2e-2)
    for ref, got in zip(reference_grads, fast_grads, strict=True):
        cosine = torch.nn.functional.cosine_similarity(ref.flatten().float(), got.flatten().float(), dim=0)
        assert cosine > 0.99


def classifier_trainer(run, **train) -> Trainer:
    """A tiny classifier with drop path, trained with activation checkpointing."""
    cfg, _, dataset, _ = tiny_setup(run, **{"grad_checkpointing": True, **train})
    torch.manual_seed(0)
    model = ViTClassifier(cfg.model_config(), 10, drop_path_rate=0.3)

    def objective(model, batch, step, micro):
        return torch.nn.functional.cross_entropy(model(batch.images), batch.targets)

    return Trainer(model, objective, dataset, cfg)


def test_resume_is_bit_exact_with_grad_checkpointing_and_drop_path(tmp_path):
    """The recomputed blocks replay the drop-path draws without advancing the random state: a run killed
    and resumed ends with the weights of the uninterrupted one, bit for bit."""
    whole = classifier_trainer(tmp_path / "whole", max_steps=4)
    assert whole.model.encoder.grad_checkpointing
    whole.fit()
    classifier_trainer(tmp_path / "parts", max_steps=2).fit()
    resumed = classifier_trainer(tmp_path / "parts", max_steps=4, resume=str(tmp_path / "parts" / "run"))
    assert resumed.fit()["steps"] == 4
    expected = whole.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    plain = classifier_trainer(tmp_path / "plain", max_steps=4, grad_checkpointing=False)
    plain.fit()  # the same drop-path draws as without checkpointing
    for name, value in plain.model.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6, rtol=0), name


def test_grad_checkpointing_reaches_the_encoder_inside_a_detector():
    from vitmae.model import ModelConfig, ViTEncoder
    from vitmae.model.detection import vitdet

    config = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16,
                         decoder_depth=1, decoder_num_heads=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    detector = vitdet(ViTEncoder(config), num_classes=2, masks=False, img_size=(32, 32), pyramid_channels=16)
    enable_grad_checkpointing(detector)  # torchvision's FasterRCNN has no such method; its backbone has
    assert detector.backbone.encoder.grad_checkpointing


def test_grad_checkpointing_a_model_without_blocks_is_a_config_error():
    from vitmae.config import ConfigError

    with pytest.raises(ConfigError, match="--grad-checkpointing: a Linear has no blocks"):
        enable_grad_checkpointing(torch.nn.Linear(2, 2))


def test_a_long_cpu_run_says_so_after_its_first_steps_with_the_options_that_decide_it(tmp_path, monkeypatch, capsys):
    import vitmae.train.engine as engine

    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=6)
    monkeypatch.setattr(engine, "LONG_RUN_S", 0.0)  # any run is "long"
    Trainer(model, objective, dataset, cfg, cost_options=("num_workers",)).fit()
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: at ")]
    assert len(notes) == 1, notes  # once, after the first timed steps
    assert "the remaining 2 steps take about" in notes[0]
    assert "what decides it: --batch-size 8, --epochs 1, --num-workers 0;" in notes[0]


def test_a_short_run_projects_nothing(tmp_path, capsys):
    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=6)
    Trainer(model, objective, dataset, cfg).fit()
    assert "note: at " not in capsys.readouterr().out

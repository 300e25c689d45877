"""Opt-in FP8 training (torchao float8): the same model, parameters and checkpoints, the same loss curve
within float8 rounding. On a CPU torchao emulates float8, so the numerics are checked here too."""
import sys

import pytest
import torch

from vitmae.model.flat_names import flat_name
from vitmae.tasks.bench import bench_step
from vitmae.config import ConfigError, model_config
from vitmae.interop import load_pretrained
from vitmae.train import Trainer

from .test_engine import read_losses, tiny_setup

pytest.importorskip("torchao.float8")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fp8_training_keeps_the_loss_curve_and_the_checkpoint_format(tmp_path, device):
    """Batches of 7 images: token counts not divisible by 16, which FP8 matrix products need padded."""
    curves = {}
    for fp8 in (False, True):
        torch.manual_seed(0)
        cfg, model, dataset, objective = tiny_setup(tmp_path / str(fp8), max_steps=8, log_every_steps=1,
                                                    blr=1e-3, warmup_epochs=0.001, fp8=fp8, batch_size=7,
                                                    device=device, precision="bf16" if device == "cuda" else "fp32")
        names = [name for name, _ in model.named_parameters()]
        trainer = Trainer(model, objective, dataset, cfg)
        swapped = [flat_name(model, name) for name, m in model.named_modules()
                   if type(m).__name__ == "Float8Linear"]
        assert len(swapped) == (8 if fp8 else 0)  # qkv, proj, fc1, fc2 of one encoder and one decoder block
        assert all(name.startswith(("blocks.", "decoder_blocks.")) for name in swapped)
        assert [name for name, _ in model.named_parameters()] == names
        trainer.fit()
        curves[fp8] = read_losses(tmp_path / str(fp8) / "run")
    assert len(curves[True]) == 8
    assert curves[True] == pytest.approx(curves[False], rel=3e-2)
    assert curves[True][-1] < curves[True][0]  # it learns
    reloaded = load_pretrained(tmp_path / "True" / "run")  # an ordinary checkpoint
    assert type(reloaded.encoder.blocks[0].attn.qkv) is torch.nn.Linear


def test_bench_times_the_fp8_step_on_the_same_weights():
    config = model_config("mae_vit_tiny_patch16", img_size=32, patch_size=8, embed_dim=32, depth=1,
                          num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    report = bench_step(config, batch_size=4, compare=("hf",), steps=2, warmup=1, fp8=True)
    vitmae, hf = report["results"]
    assert vitmae["impl"] == "vitmae-fp8" and report["config"]["fp8"]
    assert vitmae["first_loss"] == pytest.approx(hf["first_loss"], rel=3e-2)


def test_fp8_without_torchao_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # as if torchao were not installed
    cfg, model, dataset, objective = tiny_setup(tmp_path, fp8=True)
    with pytest.raises(ConfigError, match=r"--fp8 needs torchao: pip install 'vitmae\[fp8\]'"):
        Trainer(model, objective, dataset, cfg)

"""Config files that are not what they claim: each command that reads a checkpoint stops with one line
(exit 2), never a traceback or a hang."""
import json
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

from vitmae.cli import main
from vitmae.interop import convert


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """A real Hugging Face ViTMAE checkpoint written by transformers, and damaged copies of its config."""
    pytest.importorskip("transformers")
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    root = tmp_path_factory.mktemp("hf")
    config = ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=28, patch_size=4, num_channels=1, decoder_hidden_size=32,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)
    ViTMAEForPreTraining(config).save_pretrained(root / "good")
    damaged = {"patch_size 0": lambda c: {**c, "patch_size": 0},
               "image_size list": lambda c: {**c, "image_size": [28]},
               "a JSON list": lambda c: [c]}
    for name, damage in damaged.items():
        shutil.copytree(root / "good", root / name)
        good = json.loads((root / "good" / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps(damage(good)))
    Image.new("L", (28, 28)).save(root / "image.png")
    return root


COMMANDS = {"info": lambda ckpt, tmp: ["info", ckpt],
            "convert": lambda ckpt, tmp: ["convert", ckpt, tmp / "out", "--to", "timm"],
            "reconstruct": lambda ckpt, tmp: ["reconstruct", "--checkpoint", ckpt, ckpt.parent / "image.png",
                                              "--out", tmp / "recon"],
            "finetune": lambda ckpt, tmp: ["finetune", "--checkpoint", ckpt, "--max-steps", "1", "--output",
                                           tmp / "ft", "--num-workers", "0"]}


@pytest.mark.parametrize("damage, reason", [("patch_size 0", "patch_size=0"), ("image_size list", "not a size"),
                                            ("a JSON list", "a JSON list")])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_hf_config_is_one_line(hf_checkpoints, tmp_path, capsys, command, damage, reason):
    code = main([str(a) for a in COMMANDS[command](hf_checkpoints / damage, tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = [l for l in err.splitlines() if l.strip()][-1]
    assert reason in line and ("config.json" in line or "model.safetensors" in line)
    assert not (tmp_path / "ft").exists() and not (tmp_path / "out").exists()


def test_the_undamaged_checkpoint_converts(hf_checkpoints, tmp_path):
    assert convert(hf_checkpoints / "good", tmp_path / "timm.safetensors", "timm").is_file()


@pytest.mark.parametrize("command", ["info", "convert", "finetune"])
def test_a_device_file_is_refused_not_read(tmp_path, capsys, command):
    """`/dev/zero` never ends: only regular files and directories are read (a hang fails after 30 s)."""
    def hung(signum, frame):
        raise TimeoutError(f"vitmae {command} /dev/zero still reading after 30 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        code = main([str(a) for a in COMMANDS[command](Path("/dev/zero"), tmp_path)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2 and "not a regular file or a directory" in capsys.readouterr().err

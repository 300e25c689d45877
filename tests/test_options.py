"""One validation layer for every option of every command: flags, YAML files and Python alike."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from vitmae.cli import main
from vitmae.config import ConfigError, FinetuneOptions, PretrainOptions
from vitmae.options import base_type, choices_of
from vitmae.tasks import TASKS


def command_line(task, name: str, value: str) -> list[str]:
    """`task` with `--name value`, and placeholders for its positional and required options."""
    args = [task.name]
    for f in task.options.option_fields():
        choices = choices_of(f)
        value_of_it = choices[0] if choices else "placeholder"
        if f.metadata["positional"]:
            args.append(value_of_it)
        elif f.metadata["required"] and f.name != name:
            args += ["--" + f.name.replace("_", "-"), value_of_it]
    return args + ["--" + name.replace("_", "-"), value]


def out_of_range() -> list[tuple[str, str, str]]:
    """(command, option, a value outside its declared range) for every bounded numeric option."""
    cases = []
    for task in TASKS.values():
        hints = typing.get_type_hints(task.options)
        for f in task.options.option_fields():
            kind, _ = base_type(hints[f.name])
            m = f.metadata
            if kind not in (int, float):
                continue
            for bound, offset in (("min", -1), ("max", 1), ("above", 0), ("below", 0)):
                if m[bound] is not None:
                    value = m[bound] + offset
                    cases.append((task.name, f.name, str(int(value) if kind is int else float(value))))
            if kind is float:
                cases.append((task.name, f.name, "nan"))
    return cases


CASES = out_of_range()


def test_every_command_declares_help_for_every_option():
    for task in TASKS.values():
        for f in task.options.option_fields():
            assert len(f.metadata["help"]) > 12 and f.metadata["help"] != f.name.replace("_", " "), (task.name, f.name)
    assert len(CASES) > 100  # the table below covers every bounded option of every command


@pytest.mark.parametrize("command,option,value", CASES, ids=[f"{c}-{o}-{v}" for c, o, v in CASES])
def test_out_of_range_options_exit_2_with_one_line(capsys, command, option, value):
    code = main(command_line(TASKS[command], option, value))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "--" + option.replace("_", "-") in err, err


@pytest.mark.parametrize("text,message", [
    ("epochs: ten\n", "--epochs takes an integer, not 'ten'"),
    ("batch_size: [1, 2]\n", "--batch-size takes an integer"),
    ("mask_ratio: '0.5'\n", "--mask-ratio takes a number"),
    ("lr: .nan\n", "--lr must be a finite number"),
    ("img_size: -28\n", "--img-size must be at least 1"),
    ("masking: checkerboard\n", "unknown --masking 'checkerboard'; choose from: random, block, grid"),
    ("epochs: 0\n", "--epochs must be at least 1, got 0"),
])
def test_yaml_values_of_the_wrong_type_or_range_are_one_line_errors(tmp_path, capsys, text, message):
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    assert main(["pretrain", "--config", str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_python_construction_is_validated_the_same_way():
    with pytest.raises(ConfigError, match="--warmup-epochs must be at least 0"):
        PretrainOptions(warmup_epochs=-1)
    with pytest.raises(ConfigError, match="--clip-grad must be above 0"):
        FinetuneOptions(clip_grad=-1.0)
    with pytest.raises(ConfigError, match="unknown --pool 'max'"):
        FinetuneOptions(pool="max")
    cfg = PretrainOptions(img_size=[32, 48], lr=1)  # YAML-style values become the declared types
    assert cfg.img_size == (32, 48) and isinstance(cfg.lr, float)


def test_the_names_before_options_were_called_options_still_import():
    import vitmae.config as config

    old = ["Bench", "Detect", "Embed", "Evaluate", "Finetune", "Knn", "Linprobe", "Predict", "Pretrain", "Segment",
           "Train"]
    assert all(getattr(config, name + "Config") is getattr(config, name + "Options") for name in old)


def test_a_renamed_option_of_a_saved_run_still_reads(tmp_path):
    from vitmae.options import read_options_file

    saved = tmp_path / "config.yaml"
    saved.write_text("global_pool: false\nepochs: 3\n")
    assert read_options_file(saved, FinetuneOptions) == {"pool": "cls", "epochs": 3}


def test_no_gpu_and_unknown_devices_are_config_errors(capsys):
    import torch

    if not torch.cuda.is_available():
        assert main(["pretrain", "--device", "cuda", "--max-steps", "1"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["pretrain", "--device", "tpu"]) == 2
    assert "unknown --device 'tpu'" in capsys.readouterr().err


def test_help_lists_every_option_with_its_text(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(FinetuneOptions):
        assert "--" + f.name.replace("_", "-") in out
    assert "layer-wise lr decay" in out and "(one of: cls, mean)" not in out  # the help text names them


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith("vitmae ")

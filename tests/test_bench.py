"""The benchmark runs both implementations on the same weights and inputs; no timing is asserted."""
import json

import pytest

from vitmae.tasks.bench import bench_step, mae_train_flops
from vitmae.config import model_config


def test_flop_formula_matches_the_reference_figure_for_vit_base():
    # REFERENCE.md: an MAE ViT-B/16 training step costs about 58.7 GFLOPs per 224-px image.
    assert mae_train_flops(model_config("mae_vit_base_patch16")) / 1e9 == pytest.approx(58.7, rel=0.005)


def test_bench_compares_with_transformers_on_the_same_model():
    config = model_config("mae_vit_tiny_patch16", img_size=32, patch_size=8, embed_dim=32, depth=1,
                          num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    report = bench_step(config, batch_size=4, compare=("hf",), steps=2, warmup=1)
    assert [r["impl"] for r in report["results"]] == ["vitmae", "hf"]
    vitmae, hf = report["results"]
    assert vitmae["first_loss"] == pytest.approx(hf["first_loss"], rel=1e-5)  # same weights, same batch
    for result in report["results"]:
        assert result["img_s"] > 0 and result["step_ms"] > 0
        assert result["peak_mem_gib"] is None and result["mfu"] is None  # CPU: no device memory, no peak
    assert report["speedup_vs_hf"] == pytest.approx(report["results"][0]["img_s"] / report["results"][1]["img_s"], rel=1e-2)
    assert report["config"]["batch_size"] == 4 and report["config"]["embed_dim"] == 32
    json.dumps(report)  # the --json output is plain JSON


@pytest.mark.parametrize("mask_type", ["tube", "random"])
def test_bench_compares_a_video_mae_with_transformers_videomae(mask_type):
    """The same clips, weights and mask (transformers' bool_masked_pos from the noise, as many kept as the
    model keeps) and VideoMAE's target on both sides: the same first loss."""
    config = model_config("videomae_vit_micro_patch8_32", in_chans=3, embed_dim=32, depth=1, num_heads=2,
                          decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, num_frames=4,
                          mask_type=mask_type)
    report = bench_step(config, batch_size=2, compare=("hf",), steps=1, warmup=1)
    vitmae, hf = report["results"]
    assert (vitmae["impl"], hf["impl"]) == ("vitmae", "hf")
    assert vitmae["first_loss"] == pytest.approx(hf["first_loss"], rel=1e-5)
    assert report["config"]["pixel_target"] == "videomae" and report["config"]["num_frames"] == 4


def test_bench_refuses_a_one_channel_video_comparison(run_cli):
    result = run_cli("bench", "--model", "videomae_vit_micro_patch8_32", "--compare", "hf", "--steps", "1",
                     "--warmup", "1", "--batch-size", "1", "--device", "cpu", check=False)
    assert result.returncode == 2 and "bench a 3-channel model (--in-chans 3)" in result.stderr


def test_bench_cli_with_input_pipeline_writes_json(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--device", "cpu", "--model", "mae_vit_micro_patch4_28", "--embed-dim", "32",
                     "--depth", "1", "--num-heads", "2", "--decoder-embed-dim", "32", "--decoder-depth", "1",
                     "--batch-size", "8", "--steps", "2", "--warmup", "1", "--compare", "hf",
                     "--data", "fashion-mnist", "--num-workers", "0", "--json", out)
    report = json.loads(out.read_text())
    assert report["config"]["precision"] == "fp32" and report["config"]["embed_dim"] == 32
    assert {r["impl"] for r in report["results"]} == {"vitmae", "hf"}
    assert report["pipeline"]["pipeline_img_s"] > 0 and report["pipeline"]["end_to_end_img_s"] > 0
    assert "speed-up over transformers" in result.stdout


@pytest.mark.slow
def test_bench_against_compiled_transformers_reports_each_speedup():
    config = model_config("mae_vit_tiny_patch16", img_size=32, patch_size=8, embed_dim=32, depth=1,
                          num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    report = bench_step(config, batch_size=4, compare=("hf", "hf-compiled"), steps=2, warmup=1, compile=True)
    assert [r["impl"] for r in report["results"]] == ["vitmae-compiled", "hf", "hf-compiled"]
    first_losses = [r["first_loss"] for r in report["results"]]
    assert first_losses == pytest.approx([first_losses[0]] * 3, rel=1e-4)
    assert set(report) >= {"speedup_vs_hf", "speedup_vs_hf_compiled"} and report["config"]["compiled"]


@pytest.mark.cuda
def test_bench_on_the_gpu_reports_memory_and_matches_transformers_in_bf16():
    config = model_config("mae_vit_tiny_patch16", img_size=64, patch_size=8)
    report = bench_step(config, batch_size=32, device="cuda", precision="bf16", compare=("hf",), steps=3, warmup=2)
    vitmae, hf = report["results"]
    assert vitmae["impl"] == "vitmae-compiled"  # the pretrain default on GPUs
    assert vitmae["first_loss"] == pytest.approx(hf["first_loss"], rel=2e-2)
    assert vitmae["peak_mem_gib"] > 0 and hf["peak_mem_gib"] > 0


@pytest.mark.parametrize(("augment_on", "timed"), [("device", "device"), ("auto", "workers")])
def test_bench_times_the_input_pipeline_where_it_augments(run_cli, tmp_path, augment_on, timed):
    from vitmae.data import PhotosSource

    photos = PhotosSource()
    for i in range(len(photos)):
        photos[i][0].save(tmp_path / f"photo{i:02d}.jpg", quality=90)
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--device", "cpu", "--model", "mae_vit_tiny_patch16", "--img-size", "32",
                     "--patch-size", "8", "--embed-dim", "32", "--depth", "1", "--num-heads", "2",
                     "--decoder-embed-dim", "32", "--decoder-depth", "1", "--decoder-num-heads", "2",
                     "--batch-size", "4", "--steps", "2", "--warmup", "1", "--data", tmp_path,
                     "--num-workers", "0", "--augment-on", augment_on, "--json", out)
    pipeline = json.loads(out.read_text())["pipeline"]
    assert pipeline["augment_on"] == timed  # auto on a CPU: the workers
    assert pipeline["pipeline_img_s"] > 0 and pipeline["end_to_end_img_s"] > 0
    assert f"augmenting on the {timed}" in result.stdout

"""`vitmae bench`: the training step of vitmae's own path (the one `vitmae pretrain` runs) against
transformers' ViTMAEForPreTraining (a video model: VideoMAEForPreTraining), same configuration, batch,
noise and precision, in one process, interleaved, after warm-up; medians of the per-step times.

A video model is timed with VideoMAE's target (`pixel_target videomae`), so that both compute the same
loss; transformers takes the clips as (B, T, C, H, W) and the mask as `bool_masked_pos`, made from the
same noise (the lowest noise is kept).

FLOPs per image (forward; training counts 3x): per block per token 2 * (3 + 1 + 2 * mlp_ratio) * D^2 for the
matrix products plus 4 * T * D for attention over T tokens; the encoder runs on the visible tokens + cls,
the decoder on all L + 1; plus the patch embedding (on all L patches), decoder embedding and prediction.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.device_augment import AUGMENT_ON, resolve_augment_on
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from ..families.mae import pretrain_data
from ..model import MaskedAutoencoder, ModelConfig, flat_state_dict
from ..model.masking import make_noise, num_kept, num_kept_for
from ..options import opt
from ..train.config import COMPILE_MODES, RuntimeOptions
from ..train.engine import compile_model
from ..model.vit import param_groups
from ..train.optim import build_adamw
from ..train.runtime import Runtime, autocast
from .options import MAEOptions, Task, redefault

# Dense bf16 matrix peak measured on the project's H100 (REFERENCE.md); other devices: --peak-tflops.
KNOWN_PEAK_TFLOPS = {"NVIDIA H100 80GB HBM3": 796.0}


def _transformer_flops(tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    per_token = 2 * (3 + 1 + 2 * mlp_ratio) * dim * dim + 4 * tokens * dim
    return depth * tokens * per_token


def mae_train_flops(c: ModelConfig, mask_ratio: float | None = None) -> float:
    """Training FLOPs (forward + backward) per image."""
    ratio = c.mask_ratio if mask_ratio is None else mask_ratio
    patches, patch_dim = c.num_patches, c.patching.values(c.in_chans)
    visible = num_kept(patches, ratio) + 1
    forward = (2 * patches * patch_dim * c.embed_dim
               + _transformer_flops(visible, c.embed_dim, c.depth, c.mlp_ratio)
               + 2 * visible * c.embed_dim * c.decoder_embed_dim
               + _transformer_flops(patches + 1, c.decoder_embed_dim, c.decoder_depth, c.decoder_mlp_ratio)
               + 2 * patches * c.decoder_embed_dim * patch_dim)
    return 3 * forward


@dataclass
class Contender:
    name: str
    step: Callable[[Tensor, Tensor], Tensor]  # (images, noise) -> loss, one full optimizer step
    times: list[float]
    first_loss: float | None = None  # from identical weights and inputs: the numerics check
    peak_mem_gib: float | None = None


def _step_fn(forward: Callable[[Tensor, Tensor], Tensor], model: nn.Module, device: torch.device,
             precision: str) -> Callable[[Tensor, Tensor], Tensor]:
    optimizer = build_adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95), device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(images: Tensor, noise: Tensor) -> Tensor:
        with autocast(device, precision):
            loss = forward(images, noise)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _vitmae_contender(model: MaskedAutoencoder, device: torch.device, precision: str, compile: bool | None,
                      compile_mode: str = "default", fp8: bool = False) -> Contender:
    """The model as `vitmae pretrain` runs it: compiled by the same rule (by default on GPUs only)."""
    name = "vitmae"
    if fp8:
        from ..train.fp8 import convert_to_fp8

        convert_to_fp8(model)
        name += "-fp8"
    forward_model = compile_model(model, compile, compile_mode, device)
    step = _step_fn(lambda x, n: forward_model(x, noise=n).loss, model, device, precision)
    if forward_model is not model:
        name += "-compiled" + ("" if compile_mode == "default" else f"-{compile_mode}")
    return Contender(name, step, [])


def _videomae_contender(model: MaskedAutoencoder, device: torch.device, precision: str, compile: bool) -> Contender:
    """transformers' VideoMAEForPreTraining with `model`'s weights; the mask from the same noise."""
    try:
        from transformers import VideoMAEConfig, VideoMAEForPreTraining
    except ImportError:
        raise ConfigError("--compare hf needs transformers: pip install 'vitmae[hf]'") from None
    from ..interop.hf import check_videomae_exportable
    from ..interop.keymaps import config_to_videomae, from_ours

    check_videomae_exportable(model.config, "VideoMAEForPreTraining", ())
    hf = VideoMAEForPreTraining(VideoMAEConfig(**config_to_videomae(model.config, "VideoMAEForPreTraining",
                                                                    not model.config.encoder_norm)))
    hf.load_state_dict(from_ours(flat_state_dict(model), "videomae_v5_memory"))  # the names in memory
    hf.to(device).train()
    forward_model = torch.compile(hf) if compile else hf
    kept = num_kept_for(model.config.mask_type, model.config.grid_size, model.config.mask_ratio)  # as the model

    def forward(clips: Tensor, noise: Tensor) -> Tensor:
        mask = torch.ones_like(noise, dtype=torch.bool).scatter_(1, noise.argsort(1)[:, :kept], False)
        return forward_model(pixel_values=clips.transpose(1, 2), bool_masked_pos=mask).loss

    step = _step_fn(forward, hf, device, precision)
    return Contender("hf-compiled" if compile else "hf", step, [])


def _hf_contender(model: MaskedAutoencoder, device: torch.device, precision: str, compile: bool) -> Contender:
    if model.config.is_video:
        return _videomae_contender(model, device, precision, compile)
    try:
        from transformers import ViTMAEConfig, ViTMAEForPreTraining
    except ImportError:
        raise ConfigError("--compare hf needs transformers: pip install 'vitmae[hf]'") from None
    from ..interop.keymaps import config_to_hf, from_ours

    config = ViTMAEConfig(**config_to_hf(model.config))
    config._attn_implementation = "sdpa"
    hf = ViTMAEForPreTraining(config)
    hf.load_state_dict(from_ours(flat_state_dict(model), "hf_v5_memory"))  # same weights, same loss
    hf.to(device).train()
    forward_model = torch.compile(hf) if compile else hf
    step = _step_fn(lambda x, n: forward_model(pixel_values=x, noise=n).loss, hf, device, precision)
    return Contender("hf-compiled" if compile else "hf", step, [])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_batches(batches, count: int, work, device: torch.device) -> float:
    """Images per second over `count` batches (after one untimed batch), doing `work` on each. The device
    is waited for only at the ends, as in training, so that preparing a batch may overlap the work queued
    before it."""
    iterator = iter(batches)
    work(next(iterator))
    _sync(device)
    images, start = 0, time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
        work(batch)
        images += len(batch)
    _sync(device)
    return images / (time.perf_counter() - start)


def bench_pipeline(config: ModelConfig, data: str, batch_size: int, device: str = "cpu",
                   precision: str = "fp32", num_workers: int = 4, steps: int = 10, seed: int = 0,
                   compile: bool | None = None, augment_on: str = "auto") -> dict[str, Any]:
    """The input pipeline of `vitmae pretrain` alone (decode, crop, flip, normalise, collate, copy to the
    device; `augment_on` says where the first three run, as in `vitmae pretrain`), then data + training
    step end to end."""
    from ..data import EpochSampler, build_loader

    dev = torch.device(device)
    augment_on = resolve_augment_on(augment_on, dev.type)
    _, dataset, _, _ = pretrain_data(data, config, seed=seed, on_device=augment_on == "device")
    sampler = None if isinstance(dataset, torch.utils.data.IterableDataset) else EpochSampler(len(dataset), seed)
    loader = build_loader(dataset, batch_size, sampler, num_workers, pin_memory=dev.type == "cuda")
    to_device = lambda batch: batch.to(dev, non_blocking=True)  # noqa: E731
    data_img_s = _time_batches(loader, steps, to_device, dev)
    model = MaskedAutoencoder(config).to(dev).train()
    train_step = _vitmae_contender(model, dev, precision, compile).step

    def step(batch) -> None:
        images = to_device(batch).images
        train_step(images, torch.rand(len(images), config.num_patches, device=dev))

    step_img_s = _time_batches(loader, steps, step, dev)
    return {"data": data, "num_workers": num_workers, "augment_on": augment_on,
            "pipeline_img_s": round(data_img_s, 1), "end_to_end_img_s": round(step_img_s, 1)}


def bench_step(config: ModelConfig, batch_size: int, device: str = "cpu", precision: str = "fp32",
               compare: tuple[str, ...] = (), steps: int = 10, warmup: int = 3, compile: bool | None = None,
               peak_tflops: float | None = None, seed: int = 0, compile_mode: str = "default",
               fp8: bool = False) -> dict[str, Any]:
    dev = torch.device(device)
    torch.manual_seed(seed)
    if config.is_video:  # VideoMAE's target, which transformers computes (un-normalising with ImageNet's statistics)
        if compare and config.in_chans != 3:
            raise ConfigError("--compare hf with a video model: transformers' VideoMAEForPreTraining un-normalises "
                              "RGB clips only; bench a 3-channel model (--in-chans 3)")
        rgb = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD} if config.in_chans == 3 else {}
        config = config.replace(pixel_target="videomae", **rgb)
    model = MaskedAutoencoder(config).to(dev).train()
    others = []
    for other in compare:  # built first: from the weights before any FP8 conversion
        if other not in ("hf", "hf-compiled"):
            raise ConfigError(f"unknown --compare {other!r}; choose from: hf, hf-compiled")
        others.append(_hf_contender(model, dev, precision, compile=other == "hf-compiled"))
    contenders = [_vitmae_contender(model, dev, precision, compile, compile_mode, fp8), *others]
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, config.in_chans, *config.input_size, generator=generator).to(dev)
    noise = make_noise(config.mask_type or "random", batch_size, config.grid_size, config.mask_ratio, generator).to(dev)
    for c in contenders:  # warm-up: allocator, autotuning, compilation
        c.first_loss = float(c.step(images, noise))
        for _ in range(warmup - 1):
            c.step(images, noise)
        _sync(dev)
    for _ in range(steps):  # interleaved, so drifting clocks and load affect every contender alike
        for c in contenders:
            _sync(dev)
            start = time.perf_counter()
            c.step(images, noise)
            _sync(dev)
            c.times.append(time.perf_counter() - start)
    for c in contenders:  # peak memory of one step of each, measured alone
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            c.step(images, noise)
            _sync(dev)
            c.peak_mem_gib = torch.cuda.max_memory_allocated(dev) / 2**30
    flops = mae_train_flops(config)
    peak = peak_tflops or (KNOWN_PEAK_TFLOPS.get(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None)
    results = []
    for c in contenders:
        median = statistics.median(c.times)
        img_s = batch_size / median
        results.append({
            "impl": c.name, "first_loss": c.first_loss, "img_s": round(img_s, 1), "step_ms": round(median * 1000, 2),
            "peak_mem_gib": None if c.peak_mem_gib is None else round(c.peak_mem_gib, 3),
            "tflops": round(img_s * flops / 1e12, 3),
            "mfu": None if peak is None else round(img_s * flops / (peak * 1e12), 4),
        })
    report: dict[str, Any] = {
        "config": {**config.to_dict(), "batch_size": batch_size, "device": str(dev), "precision": precision,
                   "steps": steps, "warmup": warmup, "compiled": "compiled" in contenders[0].name, "fp8": fp8,
                   "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                   "torch": torch.__version__, "train_gflops_per_image": round(flops / 1e9, 3)},
        "results": results,
    }
    for other in results[1:]:  # speedup_vs_hf, speedup_vs_hf_compiled
        report["speedup_vs_" + other["impl"].replace("-", "_")] = round(results[0]["img_s"] / other["img_s"], 3)
    return report


COMPARE = ("hf", "hf-compiled")


@dataclass
class BenchOptions(MAEOptions, RuntimeOptions):
    """`vitmae bench`: images/s, peak memory and MFU of the training step, against transformers."""

    model: str = redefault(MAEOptions, "model", "mae_vit_base_patch16")
    batch_size: int = opt(64, "images per step", min=1)
    compare: str | None = opt(None, "also time transformers' ViTMAEForPreTraining (a video model: "
                              "VideoMAEForPreTraining; same config, batch, noise): hf and/or hf-compiled, "
                              "comma-separated")
    steps: int = opt(10, "timed steps of each implementation", min=1)
    warmup: int = opt(3, "untimed steps first (compilation, autotuning)", min=1)
    compile: bool | None = opt(None, "torch.compile vitmae's step, as `vitmae pretrain` does (default: on GPUs)")
    compile_mode: str = opt("default", "torch.compile mode", choices=COMPILE_MODES)
    fp8: bool = opt(False, "vitmae's step with its blocks' linear layers in float8, as `vitmae pretrain --fp8`")
    peak_tflops: float | None = opt(None, "the device's peak TFLOP/s, for MFU (known for the H100)", above=0)
    json: str | None = opt(None, "also write the report to this JSON file")
    data: str | None = opt(None, "also time the input pipeline alone and data + step end to end on these images")
    num_workers: int = redefault(RuntimeOptions, "num_workers", 4)
    augment_on: str = opt("auto", "the input pipeline's augmentation: workers | device | auto (device on a GPU)",
                          choices=AUGMENT_ON)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [c for c in (self.compare or "").split(",") if c and c not in COMPARE]
        if unknown:
            raise ConfigError(f"unknown --compare {unknown[0]!r}; choose from: {', '.join(COMPARE)}")


def bench(cfg: BenchOptions) -> dict[str, Any]:
    """Time the step (and the pipeline with `data`) as `cfg` says; the report is also written to `cfg.json`."""
    runtime = Runtime(cfg.device, cfg.precision)
    device, precision = runtime.device, runtime.precision
    model_cfg = cfg.model_config()
    compare = tuple(c for c in (cfg.compare or "").split(",") if c)
    result = bench_step(model_cfg, cfg.batch_size, str(device), precision, compare, cfg.steps, cfg.warmup,
                        cfg.compile, cfg.peak_tflops, cfg.seed, cfg.compile_mode, cfg.fp8)
    if cfg.data:
        result["pipeline"] = bench_pipeline(model_cfg, cfg.data, cfg.batch_size, str(device), precision,
                                            cfg.num_workers, cfg.steps, cfg.seed, compile=cfg.compile,
                                            augment_on=cfg.augment_on)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(r: dict[str, Any], cfg: BenchOptions) -> list[str]:
    lines = []
    for row in r["results"]:
        memory = "" if row["peak_mem_gib"] is None else f", peak memory {row['peak_mem_gib']:.2f} GiB"
        mfu = "" if row["mfu"] is None else f", MFU {row['mfu']:.1%}"
        lines.append(f"{row['impl']:>16}: {row['img_s']:9.1f} img/s ({row['step_ms']:.1f} ms/step){memory}{mfu}")
    for other in r["results"][1:]:
        speedup = r["speedup_vs_" + other["impl"].replace("-", "_")]
        lines.append(f"speed-up over transformers{' (compiled)' if 'compiled' in other['impl'] else ''}: "
                     f"{speedup:.2f}x")
    if "pipeline" in r:
        p = r["pipeline"]
        lines.append(f"input pipeline (augmenting on the {p['augment_on']}): {p['pipeline_img_s']:.1f} img/s alone, "
                     f"{p['end_to_end_img_s']:.1f} img/s with the step")
    return lines


TASK = Task("bench", "time the training step (and the input pipeline) against transformers", BenchOptions, bench,
            report)

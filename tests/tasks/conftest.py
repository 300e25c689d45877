"""A tiny segmentation run that learns, trained once per test session: the segment, predict and evaluate
tests read it rather than each training their own."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def train_on_one_thread(train, cfg) -> Path:
    """`train(cfg)` with one intra-op thread (tiny products on a shared 2-core machine: faster and steadier
    so); its run directory."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return Path(cfg.output)


@pytest.fixture(scope="session")
def learned_segmentation_run(tmp_path_factory) -> Path:
    """From scratch on 320 scenes of 32 px (64 for validation), 6 epochs: its metrics.json, segmenter.json
    and best and last checkpoints."""
    from vitmae.tasks.segment import SegmentOptions, segment

    run = tmp_path_factory.mktemp("segment") / "run"
    return train_on_one_thread(segment, SegmentOptions(
        checkpoint="none", scene_size=32, scenes=320, batch_size=32, epochs=6, lr=2e-3, warmup_epochs=0.5,
        num_workers=0, device="cpu", output=str(run), **TINY))


@pytest.fixture(scope="session")
def detection_run(tmp_path_factory) -> Path:
    """A tiny Mask R-CNN from scratch, two steps on 16 scenes of 32 px (a second on 2 cores): it detects
    nothing well, but it detects, with low scores. Its detector.json and checkpoints."""
    from vitmae.tasks.detect import DetectOptions, detect_run

    run = tmp_path_factory.mktemp("detect") / "run"
    return train_on_one_thread(detect_run, DetectOptions(
        checkpoint="none", scenes=16, scene_size=32, max_steps=2, window_size=4, pyramid_channels=16,
        rois_per_image=64, proposals=100, detections_per_image=10, jitter_scale=(1.0, 1.0), batch_size=8,
        num_workers=0, device="cpu", output=str(run), **TINY))

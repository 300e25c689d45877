"""The runtime's forward pass over a loader: eval mode inside, the model's own mode after (also when the
caller stops early or fails), batches with no readable image passed over and their files reported."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vitmae.data import Batch
from vitmae.train.runtime import Runtime, eval_mode


def _batch(n: int, skipped: list[tuple[str, str]]) -> Batch:
    return Batch(images=torch.ones(n, 2), targets=torch.zeros(n, dtype=torch.long),
                 indices=torch.arange(n), skipped=skipped)


def test_forward_each_runs_in_eval_mode_without_grad_and_reports_the_unreadable_files():
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5)).train()
    loader = [_batch(2, []), _batch(0, [("a.png", "truncated")]), _batch(1, [("b.png", "empty file")])]
    skipped: list[tuple[str, str]] = []
    seen = []
    for batch, out in Runtime("cpu", "fp32").forward_each(model, loader, lambda b: model(b.images), skipped):
        seen.append((len(batch), model.training, out.requires_grad))
    assert seen == [(2, False, False), (1, False, False)]  # the empty batch is not run
    assert skipped == [("a.png", "truncated"), ("b.png", "empty file")]
    assert model.training


def test_the_mode_comes_back_when_the_caller_stops_or_fails():
    model = nn.Linear(2, 2).train()
    outputs = Runtime("cpu", "fp32").forward_each(model, [_batch(1, [])] * 3, lambda b: model(b.images), [])
    next(outputs)
    assert not model.training
    outputs.close()  # the caller stopped after the first batch
    assert model.training
    with pytest.raises(RuntimeError, match="failed"), eval_mode(model):
        assert not model.training
        raise RuntimeError("failed")
    assert model.training
    frozen = nn.Linear(2, 2).eval()
    with eval_mode(frozen):
        pass
    assert not frozen.training  # a model evaluated in eval mode stays there

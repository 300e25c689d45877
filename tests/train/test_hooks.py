"""The one evaluation schedule every evaluator follows (train/hooks.py), on a real run of the engine: when
it evaluates, what the history and the best entry hold, and which weights RUN/checkpoints/best keeps."""
from __future__ import annotations

import torch

from vitmae.interop.vitmae_format import load_vitmae
from vitmae.model import ModelConfig, ViTClassifier, flat_state_dict
from vitmae.train import Trainer
from vitmae.train.config import TrainOptions
from vitmae.train.hooks import PeriodicEvaluation


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, count: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 1, 8, 8, generator=generator)
        self.labels = torch.randint(0, 3, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), index


class ScriptedScore(PeriodicEvaluation):
    """Scores 1, 5, 2, 4, ... in turn; keeps a copy of the weights it saw at each evaluation."""

    best_key, save_best, at_start, timed = "score", True, True, True

    def __init__(self, every: int, total: int):
        self.every, self.total = every, total
        self.scores, self.points, self.weights = iter([1.0, 5.0, 2.0, 4.0, 3.0]), [], []

    def evaluate(self, trainer):
        return {"score": next(self.scores)}

    def line(self, entry):
        return f"score {entry['score']:g}"

    def on_record(self, trainer, entry, point):
        self.points.append((entry["epoch"], point))
        self.weights.append({k: v.clone() for k, v in flat_state_dict(trainer.model).items()})  # names as in files


def cross_entropy(model, batch, step, micro):
    return torch.nn.functional.cross_entropy(model(batch.images), batch.targets)


def test_every_evaluator_runs_at_the_start_on_schedule_at_the_last_epoch_and_where_the_run_stops(tmp_path, capsys):
    torch.manual_seed(0)
    model = ViTClassifier(ModelConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2), 3)
    cfg = TrainOptions(output=str(tmp_path / "run"), epochs=4, max_steps=7, batch_size=4, num_workers=0,
                      warmup_epochs=0, log_to="", device="cpu")
    hook = ScriptedScore(every=2, total=3)  # 8 images, 2 steps an epoch: epoch 2, 3, then stopped in epoch 4
    trainer = Trainer(model, cross_entropy, RandomImages(8), cfg, hooks=[hook])
    trainer.fit()

    trainer_state = trainer.extra_state
    history = trainer_state["history"]
    assert hook.points == [(0, "start"), (2, "epoch"), (3, "epoch"), (3.5, "end")] and len(history) == 4
    assert [(e["epoch"], e["step"], e["score"]) for e in history] == [(0, 0, 1.0), (2, 4, 5.0), (3, 6, 2.0),
                                                                       (3.5, 7, 4.0)]
    assert all(e["time_s"] >= 0 for e in history)
    assert trainer_state["best"] == history[1]  # the highest score, not the last

    best, _ = load_vitmae(tmp_path / "run" / "checkpoints" / "best")
    assert all(torch.equal(best[k], v) for k, v in hook.weights[1].items())  # the weights scored 5
    printed = capsys.readouterr().out
    assert "epoch 2: score 5" in printed and "epoch 3.5: score 4" in printed

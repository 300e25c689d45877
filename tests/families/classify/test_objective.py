"""The classification objective: mixup / cutmix keyed by the step, so that a resumed run mixes alike."""
import torch

from vitmae.data.loader import Batch
from vitmae.families.classify import ClassificationObjective


def test_mixup_objective_is_keyed_by_step():
    objective = ClassificationObjective(10, 0.1, mixup=0.8, cutmix=1.0, seed=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    images = torch.randn(6, 1, 28, 28)
    batch = lambda: Batch(images.clone(), torch.arange(6), torch.arange(6), [])  # noqa: E731
    first, again, other = objective(model, batch(), 1, 0), objective(model, batch(), 1, 0), objective(model, batch(), 2, 0)
    assert first.item() == again.item() and first.item() != other.item()
    odd = Batch(images[:5].clone(), torch.arange(5), torch.arange(5), [])
    assert torch.isfinite(objective(model, odd, 3, 0))  # an odd batch (a skipped image) still mixes

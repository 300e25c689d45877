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


def test_cutmix_on_clips_pastes_one_box_through_every_frame():
    """VideoMAE's fine-tuning mixes clips: the box cuts rows and columns, the same in every frame."""
    objective = ClassificationObjective(4, 0.0, mixup=0.0, cutmix=1.0, seed=0)
    seen = []
    model = lambda clips: seen.append(clips.clone()) or torch.zeros(len(clips), 4)  # noqa: E731
    clips = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 5, 16, 16).contiguous()  # clip n is all n
    objective(model, Batch(clips, torch.arange(4), torch.arange(4), []), 1, 0)
    mixed = seen[0]
    assert mixed.shape == (4, 3, 5, 16, 16)
    assert torch.equal(mixed, mixed[:, :, :1].expand_as(mixed))  # the same in every frame
    pasted = mixed[0, 0, 0] != 0
    assert 0 < int(pasted.sum()) < 256 and set(mixed[0, 0, 0][pasted].tolist()) == {3.0}  # from the mirror clip

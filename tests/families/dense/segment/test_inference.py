"""Sliding-window inference: the whole image where the window covers it, averaged windows elsewhere."""
import pytest
import torch

from vitmae.families.dense.segment import TTA_SCALES, predicted_mask, sliding_window_logits, tta_probabilities
from vitmae.model import ViTEncoder, model_config
from vitmae.model.segmentation import Segmenter


def test_sliding_window_equals_whole_image_when_the_window_covers_it():
    torch.manual_seed(0)
    config = model_config("mae_vit_micro_patch4_28", img_size=(32, 32), embed_dim=32, depth=2, num_heads=2)
    model = Segmenter(ViTEncoder(config), num_classes=4, head="linear").eval()
    images = torch.randn(2, 1, 32, 48)
    whole = model(images)
    assert torch.equal(sliding_window_logits(model, images, 4, crop=48, stride=32), whole)
    # windows of a per-pixel model (a 1x1 conv) average to the whole-image prediction
    pointwise = torch.nn.Conv2d(1, 4, 1).eval()
    slid = sliding_window_logits(pointwise, images, 4, crop=16, stride=12)
    assert torch.allclose(slid, pointwise(images), atol=1e-6)


def tiny_segmenter() -> Segmenter:
    torch.manual_seed(0)
    config = model_config("mae_vit_micro_patch4_28", img_size=(16, 16), embed_dim=32, depth=2, num_heads=2)
    return Segmenter(ViTEncoder(config), num_classes=3, head="upernet").eval()


def test_tta_of_one_scale_without_flips_is_the_single_scale_prediction_exactly():
    model, images = tiny_segmenter(), torch.randn(2, 1, 24, 20)
    single = sliding_window_logits(model, images, 3, crop=16, stride=10)
    probabilities = tta_probabilities(model, images, 3, crop=16, stride=10, scales=(1.0,), flip=False)
    assert torch.equal(probabilities, single.softmax(1))
    assert (predicted_mask(model, images[0], 3, 16, 10) == probabilities[0].argmax(0).numpy()).all()


def test_flip_only_averages_the_prediction_and_the_flipped_prediction_of_the_flipped_image():
    model, images = tiny_segmenter(), torch.randn(2, 1, 24, 20)
    flipped = sliding_window_logits(model, images.flip(-1), 3, crop=16, stride=10).softmax(1).flip(-1)
    plain = sliding_window_logits(model, images, 3, crop=16, stride=10).softmax(1)
    assert torch.allclose(tta_probabilities(model, images, 3, 16, 10, scales=(1.0,), flip=True), (plain + flipped) / 2)


@pytest.mark.slow
def test_tta_over_mmseg_scales_gives_probabilities_of_the_image_size():
    model, image = tiny_segmenter(), torch.randn(1, 20, 28)
    probabilities = tta_probabilities(model, image[None], 3, crop=16, stride=10)  # views 10x14 .. 35x49
    assert TTA_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert probabilities.shape == (1, 3, 20, 28)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 20, 28), atol=1e-5)
    mask = predicted_mask(model, image, 3, 16, 10, tta=True)
    assert mask.shape == (20, 28) and set(mask.ravel().tolist()) <= {0, 1, 2}

"""Sliding-window inference: the whole image where the window covers it, averaged windows elsewhere."""
import torch

from vitmae.families.dense.segment import sliding_window_logits
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

"""The sizes of a dense run from its data and its encoder: the crop never larger than the images nor the
encoder's training size, mixed sizes by their median short side, large images capped, detection sizes from
the encoder's width and the input's area, the paper's exact values, and every given value winning."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitmae.data.decode import header_size
from vitmae.families.dense.sizing import (PHOTO_CROP, detect_input_sizing, detect_sizing, pyramid_width, sampled_sizes, segment_sizing,
                                          stride_of, upernet_sizing)
from vitmae.model import ModelConfig, ViTEncoder
from vitmae.model.segmentation import Segmenter


def test_small_images_are_cropped_at_their_own_size():
    sizing = segment_sizing("auto", None, None, None, [(32, 32)] * 5, 4)
    assert sizing.values == {"crop_size": 32, "stride": 21}
    assert sizing.line().startswith("sized from the data and the encoder: crop 32 (images 32x32, a random encoder")
    assert "stride 21 (2/3 of the crop)" in sizing.line()


def test_the_encoder_training_size_limits_the_crop():
    assert segment_sizing("auto", None, None, 224, [(480, 640)], 16).values == {"crop_size": 224, "stride": 149}
    assert segment_sizing("auto", None, None, 28, [(32, 32)], 4).values["crop_size"] == 28
    assert "encoder trained at 28" in segment_sizing("auto", None, None, 28, [(32, 32)], 4).line()


def test_large_images_and_a_random_encoder_are_capped_at_the_photo_crop():
    assert segment_sizing("auto", None, None, None, [(2000, 3000)], 16).values["crop_size"] == PHOTO_CROP
    assert segment_sizing("auto", None, None, 1024, [(2000, 3000)], 16).values["crop_size"] == PHOTO_CROP


def test_mixed_sizes_take_the_median_short_side_in_whole_patches_and_say_so():
    sizes = [(300, 500), (500, 301), (90, 90), (1000, 1000), (310, 400)]
    sizing = segment_sizing("auto", None, None, 512, sizes, 16)
    assert sizing.values["crop_size"] == 288  # median short side 301, down to whole 16-px patches
    assert "images of mixed sizes: median short side 301 of 5 sampled" in sizing.line()


def test_given_values_win_even_when_equal_to_what_would_be_sized():
    assert segment_sizing("auto", 32, None, None, [(32, 32)], 4).values == {"stride": 21}
    assert segment_sizing("paper", 32, 21, None, [(32, 32)], 4).values == {}
    assert segment_sizing("paper", 32, 21, None, [(32, 32)], 4).line() is None
    given = detect_sizing("auto", 256, 512, 1000, 192, (64, 64))
    assert given.values == {} and given.line() is None
    assert detect_sizing("paper", 16, None, 100, 768, (64, 64)).values == {"rois_per_image": 512}


def test_the_paper_recipe_gives_the_published_sizes():
    assert segment_sizing("paper", None, None, 28, [(32, 32)], 4).values == {"crop_size": 512, "stride": 341}
    assert stride_of(512) == 341  # mmseg's slide inference of the MAE recipe
    paper = detect_sizing("paper", None, None, None, 32, (64, 64))
    assert paper.values == {"pyramid_channels": 256, "rois_per_image": 512, "proposals": 1000}
    assert paper.line().startswith("the paper's sizes (--recipe paper): pyramid 256 channels (ViTDet's)")


def test_detection_sizes_follow_the_encoder_width_and_the_input_area():
    assert [pyramid_width(d) for d in (32, 192, 384, 768, 1024, 1280)] == [32, 64, 128, 256, 256, 256]
    assert detect_sizing("auto", None, None, None, 192, (64, 64)).values == {
        "pyramid_channels": 64, "rois_per_image": 64, "proposals": 100}  # the floors on small inputs
    assert detect_sizing("auto", None, None, None, 768, (1024, 1024)).values == {
        "pyramid_channels": 256, "rois_per_image": 512, "proposals": 1000}  # ViTDet's at its own size
    assert detect_sizing("auto", None, None, None, 768, (512, 512)).values == {
        "pyramid_channels": 256, "rois_per_image": 128, "proposals": 250}
    assert detect_sizing("auto", None, None, None, 768, (2048, 2048)).values["rois_per_image"] == 512  # capped
    line = detect_sizing("auto", None, None, None, 192, (64, 64)).line()
    assert "pyramid 64 channels (a third of the encoder's 192" in line and "64 RoIs per image" in line


def test_the_detector_input_is_never_larger_than_the_images():
    small = detect_input_sizing("auto", (224, 224), [(64, 64)] * 5, 16)
    assert small.values == {"img_size": (64, 64)}
    assert small.reasons["img_size"] == "input 64x64 (images 64x64, encoder trained at 224x224, patch 16)"
    mixed = detect_input_sizing("auto", (224, 224), [(48, 70), (60, 90), (50, 100)], 16)
    assert mixed.values == {"img_size": (96, 96)}  # median longer side 90, in whole patches
    for sizing in (detect_input_sizing("auto", (224, 224), [(300, 400)], 16),  # large images: the encoder's
                   detect_input_sizing("paper", (224, 224), [(64, 64)], 16),  # ViTDet's rule: the encoder's
                   detect_input_sizing("auto", (224, 224), [], 16)):
        assert sizing.values == {} and sizing.line() is None


def test_image_sizes_are_read_from_the_headers(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated a quarter turn: width and height swap
    Image.new("RGB", (40, 30)).save(tmp_path / "b.jpg", exif=exif)
    np.save(tmp_path / "c.npy", np.zeros((4, 20, 24), np.float32))  # channels first
    (tmp_path / "d.png").write_bytes(b"not an image")
    paths = [str(tmp_path / name) for name in ("a.png", "b.jpg", "c.npy", "d.png")]
    assert [header_size(p, 4 if p.endswith(".npy") else 3) for p in paths] == [(30, 40), (40, 30), (20, 24), None]
    assert sampled_sizes(paths[:2] + paths[3:], 3) == [(30, 40), (40, 30)]
    assert len(sampled_sizes(paths[:1] * 1000, 3)) == 64


@pytest.mark.parametrize("recipe", ["auto", "paper"])
def test_unreadable_images_leave_the_encoder_size(recipe):
    assert segment_sizing(recipe, None, None, 64, [], 8).values["crop_size"] == (64 if recipe == "auto" else 512)


def test_upernet_widths_follow_the_encoder_and_the_paper_gives_mmseg_s():
    assert upernet_sizing("auto", None, None, 192).values == {"head_channels": 128, "aux_channels": 64}
    assert upernet_sizing("auto", None, None, 1024).values == {"head_channels": 512, "aux_channels": 256}
    assert upernet_sizing("auto", None, None, 24).values == {"head_channels": 32, "aux_channels": 16}
    paper = upernet_sizing("paper", None, None, 192)
    assert paper.values == {"head_channels": 768, "aux_channels": 256}
    assert "UperNet 768 channels (mmseg's); auxiliary head 256 (mmseg's)" in paper.line()
    # a width given wins, and the auxiliary head follows it unless given too
    assert upernet_sizing("auto", 96, None, 192).values == {"aux_channels": 48}
    assert upernet_sizing("paper", 96, 40, 192).values == {}
    crop = segment_sizing("paper", None, None, 28, [(32, 32)], 4)
    assert crop.merged(paper).values == {"crop_size": 512, "stride": 341, "head_channels": 768, "aux_channels": 256}


def test_the_segmenter_is_built_at_the_sized_widths():
    encoder = ViTEncoder(ModelConfig(img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=2))
    widths = upernet_sizing("paper", None, None, encoder.embed_dim).values
    model = Segmenter(encoder, 3, "upernet", None, widths["head_channels"], widths["aux_channels"])
    assert model.head.classifier[1].in_channels == 768 and model.aux_head.body[0][0].out_channels == 256
    assert Segmenter(encoder, 3).head.classifier[1].in_channels == 32  # no widths: sized from the encoder

"""The sizes of a dense run that follow from its data and its encoder, resolved once when the run starts.

`--recipe auto` (the default) sizes what the user did not give from the images and the encoder, so that
a first run on small images with a small encoder takes minutes, not hours; `--recipe paper` gives the
published sizes (mmseg's MAE UperNet on ADE20K, ViTDet's Mask R-CNN on COCO) for reproducing them. An
option the user gave (a flag, a YAML key, a Python argument: any value but None) wins over both.

- Segmentation: the crop is the encoder's training size, never larger than the images (the median short
  side of a sample of them, read from the file headers), a whole number of patches; the sliding-window
  stride is 2/3 of the crop (mmseg's 512 / 341). UperNet is two thirds of the encoder's width (at most
  512) and its auxiliary FCN head half that; the paper's are 768 and 256.
- Detection: the input is the encoder's training size, never larger than the images (the median of their
  longer sides, from the COCO file, rounded up to whole patches): the detector resizes each image to fit
  it, so a larger input would only upsample small images. The pyramid is a third of the encoder's width (ViTDet's 256 for ViT-B's 768; at most 256, at
  least 32, a multiple of 16); the RoIs sampled per image and the region proposals scale with the input's
  area against ViTDet's 1024 x 1024 (at most ViTDet's 512 and 1000, at least 64 and 100).

The functions below take numbers and return a `Sizing`: the values, why each, and the one line a run
prints; the tasks measure the data (`sampled_sizes`) and apply it to their options (`Sizing.applied`).
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...data.decode import header_size
from ...model.segmentation import upernet_widths

RECIPES = ("auto", "paper")
RECIPE_HELP = "auto: sizes from the data and the encoder | paper: the published sizes ({}); a flag given wins"
PHOTO_CROP = 512  # the recipe's crop for photographs: the largest crop sized, whatever the encoder
# mmseg's MAE ViT-B UperNet, ADE20K 512 x 512 (stride 341 follows)
PAPER_SEGMENT = {"crop_size": PHOTO_CROP, "head_channels": 768, "aux_channels": 256}
PAPER_DETECT = {"pyramid_channels": 256, "rois_per_image": 512, "proposals": 1000}  # ViTDet (RPN 2000 / 1000)
VITDET_SIDE = 1024  # ViTDet's input side, against which RoIs and proposals scale with the area
MIN_ROIS, MIN_PROPOSALS, MIN_PYRAMID = 64, 100, 32
DETECT_WORDS = {"pyramid_channels": "pyramid {} channels", "rois_per_image": "{} RoIs per image",
                "proposals": "{} proposals, twice as many in training"}
SAMPLED = 64  # images whose headers are read to size a folder's crop


@dataclass(frozen=True)
class Sizing:
    """Options sized for a run: `values` by field name, `reasons` why each (only those sized, not given)."""

    recipe: str
    values: dict[str, int]
    reasons: dict[str, str]

    def applied(self, options: Any) -> Any:
        """`options` with the sized values in place of the Nones (a copy, validated again)."""
        return dataclasses.replace(options, **self.values)

    def merged(self, other: Sizing) -> Sizing:
        """These sizes and `other`'s, in one line."""
        return Sizing(self.recipe, {**self.values, **other.values}, {**self.reasons, **other.reasons})

    def line(self) -> str | None:
        """The one line a run prints of it; None when every size was given."""
        if not self.values:
            return None
        source = "the paper's sizes (--recipe paper)" if self.recipe == "paper" else "sized from the data and the encoder"
        return f"{source}: {'; '.join(self.reasons.values())} (a flag given wins)"


def stride_of(crop: int) -> int:
    """The sliding-window stride of a crop: 2/3 of it, as mmseg's 512 / 341."""
    return max(1, crop * 2 // 3)


def sampled_sizes(paths: Sequence[str], in_chans: int, count: int = SAMPLED) -> list[tuple[int, int]]:
    """(height, width) of up to `count` images spread evenly over `paths`, from their headers (no pixel
    decoded); unreadable files are left out."""
    step = max(1, len(paths) // count)
    sizes = (header_size(path, in_chans) for path in list(paths)[::step][:count])
    return [size for size in sizes if size is not None]


def _images_text(sizes: Sequence[tuple[int, int]]) -> str:
    if len(set(sizes)) == 1:
        return f"images {sizes[0][0]}x{sizes[0][1]}"
    return f"images of mixed sizes: median short side {round(statistics.median(min(s) for s in sizes))} of " \
           f"{len(sizes)} sampled"


def segment_sizing(recipe: str, crop_size: int | None, stride: int | None, trained_at: int | None,
                   image_sizes: Sequence[tuple[int, int]], patch: int) -> Sizing:
    """The crop and stride of a segmentation run: `crop_size` and `stride` as given (None: to size);
    `trained_at` the encoder's training size (None: a random encoder without --img-size); `image_sizes`
    (height, width) of the training images measured; `patch` the encoder's patch size."""
    values, reasons = {}, {}
    if crop_size is None:
        if recipe == "paper":
            crop_size = PAPER_SEGMENT["crop_size"]
            reasons["crop_size"] = f"crop {crop_size} (mmseg's MAE recipe on ADE20K)"
        else:
            limit = min(trained_at or PHOTO_CROP, PHOTO_CROP)
            encoder = f"encoder trained at {trained_at}" if trained_at else f"a random encoder, at most {PHOTO_CROP}"
            side = round(statistics.median(min(s) for s in image_sizes)) if image_sizes else limit
            images = _images_text(image_sizes) if image_sizes else "no image readable"
            crop_size = max(8, patch, min(limit, side) // patch * patch)  # whole patches (the option's least: 8)
            reasons["crop_size"] = f"crop {crop_size} ({images}, {encoder}, patch {patch})"
        values["crop_size"] = crop_size
    if stride is None:
        values["stride"] = stride_of(crop_size)
        reasons["stride"] = f"stride {values['stride']} (2/3 of the crop)"
    return Sizing(recipe, values, reasons)


def detect_input_sizing(recipe: str, trained_at: tuple[int, int], image_sizes: Sequence[tuple[int, int]],
                        patch: int) -> Sizing:
    """The detector's input (`img_size`) of a run that did not give one: under `auto`, the encoder's
    training size `trained_at` capped at the images (`image_sizes`, (height, width)): the median longer
    side, rounded up to whole patches; sized (and said) only where that is smaller. The paper's recipe
    keeps the encoder's size, as ViTDet trains at its encoder's."""
    if recipe == "paper" or not image_sizes:
        return Sizing(recipe, {}, {})
    longest = round(statistics.median(max(size) for size in image_sizes))
    side = -(-longest // patch) * patch
    if side >= max(trained_at):
        return Sizing(recipe, {}, {})
    return Sizing(recipe, {"img_size": (side, side)},
                  {"img_size": f"input {side}x{side} ({_images_text(image_sizes)}, encoder trained at "
                               f"{trained_at[0]}x{trained_at[1]}, patch {patch})"})


def upernet_sizing(recipe: str, head_channels: int | None, aux_channels: int | None, embed_dim: int) -> Sizing:
    """The widths of the UperNet head and its auxiliary FCN head (None: to size) on an encoder `embed_dim`
    wide."""
    if recipe == "paper":
        sized = (head_channels or PAPER_SEGMENT["head_channels"], PAPER_SEGMENT["aux_channels"])
        why = "mmseg's"
    else:
        sized, why = upernet_widths(embed_dim, head_channels), f"from the encoder's {embed_dim}"
    values, reasons = {}, {}
    for name, given, value, words in (("head_channels", head_channels, sized[0], "UperNet {} channels"),
                                      ("aux_channels", aux_channels, sized[1], "auxiliary head {}")):
        if given is None:
            values[name], reasons[name] = value, f"{words.format(value)} ({why})"
    return Sizing(recipe, values, reasons)


def pyramid_width(embed_dim: int) -> int:
    """A third of the encoder's width, as ViTDet's 256 of ViT-B's 768: a multiple of 16, 32 to 256."""
    return max(MIN_PYRAMID, min(PAPER_DETECT["pyramid_channels"], 16 * round(embed_dim / 48)))


def area_scaled(paper: int, floor: int, input_size: tuple[int, int]) -> int:
    """ViTDet's `paper` count scaled by the input's area against 1024 x 1024, at least `floor`, at most
    `paper`."""
    return max(floor, min(paper, round(paper * input_size[0] * input_size[1] / VITDET_SIDE ** 2)))


def detect_sizing(recipe: str, pyramid_channels: int | None, rois_per_image: int | None, proposals: int | None,
                  embed_dim: int, input_size: tuple[int, int]) -> Sizing:
    """The pyramid width, RoIs per image and proposals of a detection run (None: to size) for an encoder of
    `embed_dim` and the detector's input (height, width)."""
    area = f"input {input_size[0]}x{input_size[1]} against ViTDet's {VITDET_SIDE}"
    auto = {"pyramid_channels": (pyramid_width(embed_dim), f"a third of the encoder's {embed_dim}, at least "
                                 f"{MIN_PYRAMID}"),
            "rois_per_image": (area_scaled(PAPER_DETECT["rois_per_image"], MIN_ROIS, input_size),
                               f"{area}, at least {MIN_ROIS}"),
            "proposals": (area_scaled(PAPER_DETECT["proposals"], MIN_PROPOSALS, input_size),
                          f"{area}, at least {MIN_PROPOSALS}")}
    given = {"pyramid_channels": pyramid_channels, "rois_per_image": rois_per_image, "proposals": proposals}
    values, reasons = {}, {}
    for name in (name for name, value in given.items() if value is None):
        value, why = (PAPER_DETECT[name], "ViTDet's") if recipe == "paper" else auto[name]
        values[name], reasons[name] = value, f"{DETECT_WORDS[name].format(value)} ({why})"
    return Sizing(recipe, values, reasons)

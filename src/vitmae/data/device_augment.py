"""Device-side augmentation: a batch is JPEG-decoded, cropped, resized, flipped and normalised on the
device it trains on (batched nvJPEG and roi_align on a GPU; libjpeg and the same roi_align on a CPU).

PIL in DataLoader workers decodes and resizes one image at a time, on the CPU: 16 cores feed about
2,200 JPEG photos/s, less than an H100 trains a ViT-B/16 MAE on. Here the workers do only the cheap part:

    worker, per sample (`DeviceAugment.encode`)
        read the file's bytes and its image size from the header (nothing is decoded), and draw the crop
        box and flip from the sample's generator with `PretrainTransform.plan`, the draws of the
        workers' path. Ship the JPEG bytes, or, for anything the device's decoder would not decode
        exactly as `load_image` does (PNG, CMYK, EXIF-rotated, grayscale for an RGB model, .npy,
        Fashion-MNIST's arrays), the pixels `load_image` decodes.
    worker, per batch (`DeviceAugment.collate`)
        put the payloads of each kind end to end in one buffer -> `EncodedBatch`
    main process, `EncodedBatch.to(device)` (the engine moves every batch there)
        decode all JPEG files in one call on the device and copy the decoded pixels there; crop and
        resize every image with one roi_align call per chunk of images; flip; scale; normalise -> `Batch`

So a sample gets the same crop and flip on both paths, whatever the worker count, and unreadable files
are reported alike: the workers turn them into `Skipped` markers, and a JPEG file that passed the header
check but that the device's decoder rejects is dropped from its batch and added to `Batch.skipped`; the
rest of the batch survives. Pixels differ a little: roi_align averages ceil(box / output) squared
bilinear samples per output pixel (an antialiased bilinear resize), where PIL resizes bicubic.
"""
from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from PIL import ExifTags, Image
from torch import Tensor

from vitmae.data.decode import ImageLike, UnreadableImage, load_image, pixel_limit_problem
from vitmae.data.loader import Batch, TransformedDataset
from vitmae.data.shards import ShardSource
from vitmae.data.source import Skipped, Source, skip_sample
from vitmae.data.transforms import (CropPlan, Normalize, PretrainTransform, Size, image_size, image_tensor,
                                    sample_generator)
from vitmae.errors import ConfigError

# A chunk of images zero-padded to one size for roi_align takes at most this much memory: 256 photos of
# 500x375 fit in one chunk (0.6 GB); a few huge images (a 10,000-pixel panorama) get chunks of their own.
MAX_PADDED_BYTES = 1 << 30


class EncodedImage(NamedTuple):
    """A sample as a worker ships it."""

    data: Tensor  # a JPEG file (1-D uint8), or decoded pixels (C, H, W): uint8, or float32 for arrays
    plan: CropPlan
    path: str  # to report the file if the device's decoder rejects it


class Slot(NamedTuple):
    """Where a sample's payload lies in its batch: `buffers[kind][start:end]`, of `shape`."""

    kind: str  # "jpeg": a JPEG file; "uint8" or "float32": decoded pixels
    start: int
    end: int
    shape: tuple[int, ...]


class DeviceAugment:
    """A `PretrainTransform` split in two: `encode` per sample in the workers, the rest on whole batches
    where they go (`EncodedBatch.to`)."""

    def __init__(self, transform: PretrainTransform, in_chans: int) -> None:
        self.transform, self.in_chans = transform, in_chans

    def encode(self, path: str, stored: bytes | ImageLike, generator: torch.Generator) -> EncodedImage:
        """A sample as it is stored (a file's bytes, or an image) -> its payload and plan.

        Raises UnreadableImage as `load_image` does.
        """
        size = jpeg_size(stored, self.in_chans) if isinstance(stored, bytes) else None
        if size is not None:
            data = torch.frombuffer(bytearray(stored), dtype=torch.uint8)
        else:
            img = load_image(stored, self.in_chans) if isinstance(stored, bytes) else stored
            data, size = image_tensor(img), image_size(img)
        return EncodedImage(data, self.transform.plan(*size, generator), path)

    def collate(self, samples: Sequence[tuple[EncodedImage, int, int] | Skipped]) -> EncodedBatch:
        good = [s for s in samples if not isinstance(s, Skipped)]
        buffers, slots = pack([image.data for image, _, _ in good])
        plans = [image.plan for image, _, _ in good]
        return EncodedBatch(
            buffers=buffers,
            slots=slots,
            boxes=torch.tensor([[p.left, p.top, p.left + p.width, p.top + p.height] for p in plans],
                               dtype=torch.float32).reshape(-1, 4),
            flips=torch.tensor([p.flip for p in plans], dtype=torch.bool),
            indices=torch.tensor([index for _, _, index in good], dtype=torch.long),
            targets=torch.tensor([label for _, label, _ in good], dtype=torch.long),
            paths=[image.path for image, _, _ in good],
            skipped=[(s.path, s.reason) for s in samples if isinstance(s, Skipped)],
            size=self.transform.size,
            normalize=self.transform.normalize,
        )


@dataclass
class EncodedBatch:
    """A batch as the workers leave it. `.to(device)` decodes, crops, flips and normalises it there and
    gives the `Batch` a training step takes."""

    buffers: dict[str, Tensor]  # per kind of payload (Slot.kind), the batch's payloads end to end
    slots: list[Slot]  # where each sample's payload lies
    boxes: Tensor  # (N, 4) float32: each crop as (left, top, right, bottom) in its image's pixels
    flips: Tensor  # (N,) bool
    indices: Tensor  # (N,) long
    targets: Tensor  # (N,) long class ids (-1: none)
    paths: list[str]
    skipped: list[tuple[str, str]]  # (path, reason) of the samples the workers could not read
    size: Size  # of the output images
    normalize: Normalize

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> EncodedBatch:  # DataLoader(pin_memory=True): decoded pixels copy asynchronously
        return replace(self, buffers={kind: buffer if kind == "jpeg" else buffer.pin_memory()
                                      for kind, buffer in self.buffers.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        device = torch.device(device)

        def moved(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        images, failed = self._decode(device, non_blocking)
        decoded = [i for i, img in enumerate(images) if img is not None]
        rows = torch.tensor(decoded, dtype=torch.long)
        x = torch.empty(0, device=device)
        if decoded:
            x = crop_resize([images[i] for i in decoded], moved(self.boxes[rows]), self.size)
            x = torch.where(moved(self.flips[rows]).view(-1, 1, 1, 1), x.flip(-1), x)
            # 8-bit pixels to [0, 1] as on the workers' path; float arrays keep their own values.
            scale = torch.tensor([1.0 if self.slots[i].kind == "float32" else 1 / 255 for i in decoded])
            x = self.normalize(x * moved(scale).view(-1, 1, 1, 1))
        return Batch(images=x, targets=moved(self.targets[rows]), indices=moved(self.indices[rows]),
                     skipped=self.skipped + failed)

    def _decode(self, device: torch.device, non_blocking: bool) -> tuple[list[Tensor | None], list[tuple[str, str]]]:
        """Each sample's pixels (C, H, W) on `device`, None where the decoder rejected its JPEG file; and
        (path, reason) of those files."""
        # Decoded pixels are copied there; JPEG files stay: the decoder reads them from the host.
        buffers = {kind: buffer if kind == "jpeg" else buffer.to(device, non_blocking=non_blocking)
                   for kind, buffer in self.buffers.items()}
        images: list[Tensor | None] = [None if s.kind == "jpeg" else buffers[s.kind][s.start:s.end].view(s.shape)
                                       for s in self.slots]
        jpegs = [i for i, s in enumerate(self.slots) if s.kind == "jpeg"]
        files = [buffers["jpeg"][self.slots[i].start:self.slots[i].end] for i in jpegs]
        failed = []
        for i, decoded in zip(jpegs, decode_jpegs(files, self.normalize.mean.shape[0], device)):
            if isinstance(decoded, Tensor):
                images[i] = decoded
            else:
                failed.append((self.paths[i], decoded))
        return images, failed


class DeviceAugmentDataset(TransformedDataset):
    """Sample i of a map-style source encoded for device-side augmentation: `(EncodedImage, label, i)` or
    `Skipped`; its loader batches them into `EncodedBatch`es."""

    transform: DeviceAugment

    @property
    def collate_fn(self):
        return self.transform.collate

    def __getitem__(self, index: int) -> tuple[EncodedImage, int, int] | Skipped:
        path = self.source.paths[index]
        try:
            stored, label = self.source.stored(index)
            generator = sample_generator(self.seed, self._epoch.get(), index)
            return self.transform.encode(path, stored, generator), label, index
        except UnreadableImage as err:
            return skip_sample(path, err.reason)


class DeviceAugmentShards(ShardSource):
    """WebDataset shards whose workers ship each sample's image member encoded (`DeviceAugment.encode`)."""

    @property
    def collate_fn(self):
        return self.transform.collate

    def _prepare(self, path: str, stored: bytes, transform: DeviceAugment, generator: torch.Generator) -> EncodedImage:
        return transform.encode(path, stored, generator)


def build_device_dataset(source: Source | ShardSource, transform: PretrainTransform, in_chans: int,
                         seed: int = 0) -> DeviceAugmentDataset | DeviceAugmentShards:
    """`build_dataset(source, transform, seed)` for device-side augmentation: the same crops and flips,
    done where the batches go."""
    augment = DeviceAugment(transform, in_chans)
    if isinstance(source, ShardSource):
        shards = DeviceAugmentShards(source.shards, source.in_chans, source.shuffle, source.rank, source.world_size)
        return shards.with_transform(augment, seed)
    return DeviceAugmentDataset(source, augment, seed)


def jpeg_size(data: bytes, in_chans: int) -> Size | None:
    """(height, width) of a JPEG file that the device's decoder decodes as `load_image` does, read from
    its header alone; None for any other file, which the worker decodes with `load_image` instead.

    That is a complete file (one that ends in the EOI marker: decoders differ on truncated ones) already
    in the model's mode ('L' for 1 channel, 'RGB' for 3) and not EXIF-rotated. The others (CMYK,
    grayscale for RGB, rotated, truncated, not JPEG at all) take the workers' decoder, which also gives an
    unreadable file the same `Skipped` reason as the workers' path does.
    """
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None or not data.startswith(b"\xff\xd8") or not data.endswith(b"\xff\xd9"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # load_image says why
            with Image.open(io.BytesIO(data)) as img:  # lazy: parses the header, decodes nothing
                orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                if (img.format in ("JPEG", "MPO") and img.mode == mode and orientation == 1
                        and pixel_limit_problem(img.width, img.height) is None):  # else load_image refuses it
                    return img.height, img.width
    except Exception:  # whatever is wrong with the file, load_image will say it
        pass
    return None


def pack(payloads: Sequence[Tensor]) -> tuple[dict[str, Tensor], list[Slot]]:
    """The payloads of each kind end to end in one flat buffer, so that a batch crosses from a worker to
    the main process as a few shared-memory tensors rather than one per image (each costs a file
    descriptor and a memory map to receive)."""
    parts: dict[str, list[Tensor]] = {}
    ends: dict[str, int] = {}
    slots = []
    for data in payloads:
        kind = "jpeg" if data.dim() == 1 else str(data.dtype).removeprefix("torch.")
        start = ends.get(kind, 0)
        ends[kind] = start + data.numel()
        parts.setdefault(kind, []).append(data.flatten())
        slots.append(Slot(kind, start, ends[kind], tuple(data.shape)))
    return {kind: torch.cat(flat) for kind, flat in parts.items()}, slots


def decode_jpegs(files: Sequence[Tensor], channels: int, device: torch.device) -> list[Tensor | str]:
    """JPEG files (1-D uint8 tensors on the CPU) decoded on `device` in one call (batched nvJPEG on a GPU)
    into (channels, H, W) uint8 images; for a file the decoder rejects, the reason instead. Only when the
    batched call fails are the files decoded one by one, to find the bad ones."""
    from torchvision.io import ImageReadMode, decode_jpeg  # imported here: `import vitmae.data` stays light

    if not files:
        return []
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders in favour of TorchCodec's; they work as documented.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_jpeg(list(files), mode=mode, device=device)
        except RuntimeError:
            pass
        results: list[Tensor | str] = []
        for file in files:
            try:
                results.append(decode_jpeg(file, mode=mode, device=device))
            except RuntimeError as err:
                results.append(f"the {device.type} JPEG decoder rejects it: {_decoder_message(err)}")
        return results


def crop_resize(images: Sequence[Tensor], boxes: Tensor, size: Size,
                max_padded_bytes: int = MAX_PADDED_BYTES) -> Tensor:
    """Crop `boxes` (left, top, right, bottom) out of images (C, H_i, W_i) of any sizes and resize the
    crops to `size`: (N, C, *size) float32 on the images' device, one roi_align call per chunk of images.

    roi_align (aligned: pixel centres at +0.5, as in `F.interpolate(align_corners=False)`) averages
    ceil(box / output) samples per output pixel along each axis, each sample bilinear: an antialiased
    resize when shrinking, a bilinear one when enlarging. The images of a chunk are zero-padded to one size.
    """
    from torchvision.ops import roi_align  # imported here: `import vitmae.data` stays light

    channels, device = images[0].shape[0], images[0].device
    out = torch.empty(len(images), channels, *size, device=device)
    for chunk in _chunks(images, max_padded_bytes):
        height = max(images[i].shape[1] for i in chunk) + 1
        width = max(images[i].shape[2] for i in chunk) + 1
        padded = torch.zeros(len(chunk), channels, height, width, device=device)
        for row, i in enumerate(chunk):
            _, h, w = images[i].shape
            padded[row, :, :h, :w] = images[i]
            # roi_align samples up to half a pixel beyond a box; where the box ends at the image's edge
            # that must read the edge again, as in an unpadded image, not the padding.
            padded[row, :, h, :w] = images[i][:, -1]
            padded[row, :, : h + 1, w] = padded[row, :, : h + 1, w - 1]
        # Built on the host and copied without waiting: torch.tensor(..., device="cuda") would wait for
        # the GPU to finish the work queued before it (the previous training step).
        index = torch.tensor(chunk).to(device, non_blocking=True)
        rows = torch.arange(len(chunk), device=device, dtype=torch.float32)[:, None]
        rois = torch.cat([rows, boxes[index]], dim=1)
        out[index] = roi_align(padded, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out


def _chunks(images: Sequence[Tensor], max_padded_bytes: int) -> list[list[int]]:
    """Positions of the images in groups whose padded float32 tensor (one more row and column than the
    largest) fits in max_padded_bytes; largest first, so images of like sizes share a chunk."""
    order = sorted(range(len(images)), key=lambda i: images[i].shape[1] * images[i].shape[2], reverse=True)
    chunks: list[list[int]] = []
    height = width = 0
    for i in order:
        channels, h, w = images[i].shape
        if chunks and (len(chunks[-1]) + 1) * channels * max(height, h + 1) * max(width, w + 1) * 4 <= max_padded_bytes:
            chunks[-1].append(i)
            height, width = max(height, h + 1), max(width, w + 1)
        else:
            chunks.append([i])
            height, width = h + 1, w + 1
    return chunks


def _decoder_message(err: RuntimeError) -> str:
    """The decoder's own words, without torchvision's source location ("decode_jpeg, .../x.cpp:171, ")."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\w+, \S+:\d+, ", "", line)


AUGMENT_ON = ("auto", "workers", "device")


def resolve_augment_on(augment_on: str, device_type: str) -> str:
    """Where pre-training decodes, crops and flips: 'workers' (PIL in the DataLoader workers) or 'device'
    (the training device, this module); 'auto' is the device when it is a GPU."""
    if augment_on not in AUGMENT_ON:
        raise ConfigError(f"unknown --augment-on {augment_on!r}; choose from: {', '.join(AUGMENT_ON)}")
    if augment_on == "auto":
        return "device" if device_type == "cuda" else "workers"
    return augment_on

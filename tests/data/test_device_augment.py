"""Device-side augmentation against the workers' path, on real photos (scikit-image's) saved as JPEG files.

The CPU runs the device path here (libjpeg, roi_align on the CPU); the last test runs it on CUDA when
there is a GPU.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.ops import roi_align

from tests.conftest import jpeg_without_quantization_tables
from vitmae.data import (IMAGENET_MEAN, IMAGENET_STD, EncodedBatch, EpochSampler, FashionMNISTSource,
                         ImageFolderSource, PhotosSource, PretrainTransform, ShardSource, build_dataset,
                         build_device_dataset, build_loader, collate, default_normalization, load_image,
                         sample_generator)
from vitmae.data.device_augment import crop_resize, decode_jpegs
from vitmae.data.fashion_mnist import FASHION_MNIST_ROOT
from vitmae.data.transforms import image_size, image_tensor, resized_crop

SIZE = 64


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """scikit-image's photos as RGB JPEG files of quality 90."""
    root = tmp_path_factory.mktemp("jpegs")
    photos = PhotosSource()
    for i in range(len(photos)):
        photos[i][0].save(root / f"photo{i:02d}.jpg", quality=90)
    return root


def both_paths(source, size: int = SIZE, seed: int = 0, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    transform = PretrainTransform(size, mean, std)
    return build_dataset(source, transform, seed), build_device_dataset(source, transform, in_chans, seed), transform


def test_device_path_crops_and_flips_by_the_workers_plans(jpeg_folder):
    source = ImageFolderSource(jpeg_folder)
    workers, device, transform = both_paths(source, seed=3)
    sizes = [image_size(source[i][0]) for i in range(len(source))]
    for epoch in range(20):
        device.set_epoch(epoch)
        for index in range(len(source)):
            worker_plan = transform.plan(*sizes[index], sample_generator(3, epoch, index))
            image, _, got_index = device[index]
            assert got_index == index and image.plan == worker_plan
    # The workers' transform crops and flips by its plan.
    img = source[5][0]
    top, left, h, w, flip = transform.plan(*image_size(img), sample_generator(3, 0, 5))
    expected = transform.normalize(resized_crop(img, (top, left, h, w), (SIZE, SIZE)))
    torch.testing.assert_close(workers[5][0], expected.flip(-1) if flip else expected)


def test_batches_carry_the_plans(jpeg_folder):
    source = ImageFolderSource(jpeg_folder)
    _, device, _ = both_paths(source, seed=1)
    batch = next(iter(build_loader(device, batch_size=6, sampler=EpochSampler(len(device), seed=1))))
    assert isinstance(batch, EncodedBatch) and len(batch) == 6
    for box, flip, index in zip(batch.boxes.tolist(), batch.flips.tolist(), batch.indices.tolist()):
        top, left, h, w, plan_flip = device[index][0].plan
        assert box == [left, top, left + w, top + h] and flip == plan_flip


def test_crop_statistics_match_random_resized_crop_and_are_the_same_on_both_paths(jpeg_folder):
    source = ImageFolderSource(jpeg_folder)
    _, device, transform = both_paths(source, seed=0)
    sizes = [image_size(source[i][0]) for i in range(len(source))]
    device_plans, worker_plans, keys = [], [], []
    for epoch in range(30):
        device.set_epoch(epoch)
        for index in range(len(source)):
            device_plans.append(device[index][0].plan)
            worker_plans.append(transform.plan(*sizes[index], sample_generator(0, epoch, index)))
            keys.append(index)
    assert device_plans == worker_plans

    torch.manual_seed(0)  # torchvision's own draws, from an unrelated stream: compare distributions
    crop = T.RandomResizedCrop(SIZE, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    theirs = [crop.get_params(torch.empty(3, *sizes[i]), crop.scale, crop.ratio) for i in keys]
    area = lambda boxes: np.array([h * w / np.prod(sizes[i]) for (_, _, h, w, *_), i in zip(boxes, keys)])  # noqa: E731
    aspect = lambda boxes: np.array([w / h for _, _, h, w, *_ in boxes])  # noqa: E731
    ours = device_plans
    assert len(ours) == 420
    assert area(ours).min() >= 0.2 - 0.01 and area(ours).max() <= 1.0
    assert aspect(ours).min() >= 3 / 4 - 0.02 and aspect(ours).max() <= 4 / 3 + 0.02
    assert abs(area(ours).mean() - area(theirs).mean()) < 0.04  # standard error of the difference ~0.016
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area(ours), q) - np.quantile(area(theirs), q)) < 0.07
        assert abs(np.quantile(aspect(ours), q) - np.quantile(aspect(theirs), q)) < 0.07
    assert 0.42 < np.mean([plan.flip for plan in ours]) < 0.58


def test_cpu_jpeg_decoder_gives_the_pixels_pil_gives(jpeg_folder):
    files = sorted(jpeg_folder.glob("*.jpg"))[:4]
    decoded = decode_jpegs([torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files], 3,
                           torch.device("cpu"))
    for file, pixels in zip(files, decoded):
        assert torch.equal(pixels, image_tensor(load_image(file, 3)))


def test_output_pixels_agree_with_the_workers_path(jpeg_folder):
    source = ImageFolderSource(jpeg_folder)
    workers, device, _ = both_paths(source, size=96)
    sampler = EpochSampler(len(source), seed=0, shuffle=False)
    ours, theirs = [], []
    for epoch in range(3):
        workers.set_epoch(epoch)
        device.set_epoch(epoch)
        batch = next(iter(build_loader(device, len(source), sampler))).to("cpu")
        reference = next(iter(build_loader(workers, len(source), sampler)))
        assert torch.equal(batch.indices, reference.indices) and batch.skipped == reference.skipped == []
        ours.append(batch.images)
        theirs.append(reference.images)
    ours, theirs = torch.cat(ours), torch.cat(theirs)
    assert ours.shape == theirs.shape == (3 * len(source), 3, 96, 96)
    # Bilinear averaging (roi_align) against PIL's bicubic: about 1/255 apart (normalised units ~ 1/0.225).
    per_image = (ours - theirs).abs().mean(dim=(1, 2, 3))
    assert per_image.mean() < 0.03 and per_image.max() < 0.07  # measured: 0.023 and 0.050
    # Another sample's crop is far further away: the bound above tells right crops from wrong ones.
    assert (ours - theirs.roll(1, dims=0)).abs().mean(dim=(1, 2, 3)).min() > 0.3
    torch.testing.assert_close(ours.mean(dim=(0, 2, 3)), theirs.mean(dim=(0, 2, 3)), atol=0.003, rtol=0)
    torch.testing.assert_close(ours.std(dim=(0, 2, 3)), theirs.std(dim=(0, 2, 3)), atol=0, rtol=0.015)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_files_are_skipped_and_the_rest_of_the_batch_comes_through(jpeg_folder, tmp_path, num_workers):
    good = sorted(jpeg_folder.glob("*.jpg"))[:6]
    for path in good:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    data = good[0].read_bytes()
    bad = {
        "truncated.jpg": data[: len(data) // 2],
        "notes.jpg": b"this is not an image",
        "empty.jpg": b"",
        "no_tables.jpg": jpeg_without_quantization_tables(data),  # passes the header check; the decoder rejects it
    }
    for name, payload in bad.items():
        (tmp_path / name).write_bytes(payload)
    workers, device, _ = both_paths(ImageFolderSource(tmp_path))
    loader = build_loader(device, batch_size=10, sampler=EpochSampler(10, seed=0), num_workers=num_workers)
    encoded = next(iter(loader))
    assert len(encoded) == 7 and sorted(Path(p).name for p, _ in encoded.skipped) == ["empty.jpg", "notes.jpg",
                                                                                       "truncated.jpg"]
    batch = encoded.to("cpu")
    assert len(batch) == 6 and batch.images.shape == (6, 3, SIZE, SIZE) and torch.isfinite(batch.images).all()
    assert sorted(Path(workers.source.paths[i]).name for i in batch.indices.tolist()) == [p.name for p in good]
    reasons = {Path(path).name: reason for path, reason in batch.skipped}
    assert sorted(reasons) == sorted(bad)
    assert reasons["no_tables.jpg"] == "the cpu JPEG decoder rejects it: Quantization table 0x00 was not defined"
    # The workers' path skips the same files, and for those the workers reject, with the same reasons.
    reference = next(iter(build_loader(workers, batch_size=10, sampler=EpochSampler(10, seed=0))))
    reference_reasons = {Path(path).name: reason for path, reason in reference.skipped}
    assert sorted(reference_reasons) == sorted(bad)
    assert all(reasons[name] == reference_reasons[name] for name in bad if name != "no_tables.jpg")


def test_a_batch_of_only_unreadable_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_text("not an image")
    _, device, _ = both_paths(ImageFolderSource(tmp_path))
    batch = next(iter(build_loader(device, batch_size=2))).to("cpu")
    assert len(batch) == 0 and batch.images.numel() == 0 and len(batch.skipped) == 2


def test_files_the_device_does_not_decode_come_out_as_on_the_workers_path(tmp_path):
    astronaut = PhotosSource()[0][0]
    assert astronaut.mode == "RGB"
    photo = astronaut.resize((200, 150))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    files = {
        "plain.jpg": (photo, {"quality": 90}),
        "lossless.png": (photo, {}),
        "gray.jpg": (photo.convert("L"), {"quality": 90}),
        "rotated.jpg": (photo, {"quality": 90, "exif": exif}),
        "cmyk.jpg": (photo.convert("CMYK"), {"quality": 90}),
    }
    for name, (img, options) in files.items():
        img.save(tmp_path / name, **options)
    source = ImageFolderSource(tmp_path)
    workers, device, _ = both_paths(source)
    names = [Path(p).name for p in source.paths]
    for index, name in enumerate(names):
        image = device[index][0]
        if name == "plain.jpg":  # the one the device decodes: its bytes are shipped
            assert image.data.dim() == 1 and image.data.numpy().tobytes() == (tmp_path / name).read_bytes()
        else:  # decoded by the worker, exactly as on the workers' path (gray to RGB, rotated, CMYK to RGB)
            assert torch.equal(image.data, image_tensor(load_image(source.paths[index], 3)))
    assert image_size(load_image(source.paths[names.index("rotated.jpg")], 3)) == (200, 150)
    batch = device.collate_fn([device[i] for i in range(len(names))]).to("cpu")
    reference = collate([workers[i] for i in range(len(names))])
    assert torch.equal(batch.indices, reference.indices)
    assert (batch.images - reference.images).abs().mean(dim=(1, 2, 3)).max() < 0.06


def test_one_channel_models_decode_gray_jpegs_on_the_device(tmp_path):
    photo = PhotosSource()[0][0].resize((120, 90))
    photo.convert("L").save(tmp_path / "gray.jpg", quality=90)
    photo.save(tmp_path / "rgb.jpg", quality=90)
    source = ImageFolderSource(tmp_path, in_chans=1)
    workers, device, _ = both_paths(source, in_chans=1, mean=(0.5,), std=(0.5,))
    kinds = {Path(source.paths[i]).name: device[i][0].data.dim() for i in range(2)}
    assert kinds == {"gray.jpg": 1, "rgb.jpg": 3}  # RGB to gray is PIL's conversion, in the worker
    batch = device.collate_fn([device[0], device[1]]).to("cpu")
    reference = collate([workers[0], workers[1]])
    assert batch.images.shape == reference.images.shape == (2, 1, SIZE, SIZE)
    assert (batch.images - reference.images).abs().mean() < 0.03


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_arrays_take_the_device_path():
    source = FashionMNISTSource("test")
    mean, std = default_normalization(1, "fashion-mnist")
    workers, device, _ = both_paths(source, size=28, in_chans=1, mean=mean, std=std)
    batch = device.collate_fn([device[i] for i in range(64)]).to("cpu")
    reference = collate([workers[i] for i in range(64)])
    assert batch.images.shape == reference.images.shape == (64, 1, 28, 28)
    assert (batch.images - reference.images).abs().mean() < 0.05  # measured 0.033: 28 px digits, sharp edges


def test_worker_count_does_not_change_the_batches(jpeg_folder):
    batches = {}
    for num_workers in (0, 2):
        _, device, _ = both_paths(ImageFolderSource(jpeg_folder), seed=4)
        device.set_epoch(2)
        loader = build_loader(device, 5, EpochSampler(len(device), seed=4), num_workers=num_workers)
        batches[num_workers] = [batch.to("cpu") for batch in loader]
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)


def test_crop_resize_is_roi_align_of_each_image_alone():
    generator = torch.Generator().manual_seed(0)
    shapes = [(37, 50), (64, 31), (20, 20), (80, 90)]
    images = [torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8) for h, w in shapes]
    # Boxes that end at the images' bottom-right edges and boxes smaller than the output (enlarged).
    boxes = torch.tensor([[10, 7, 50, 37], [0, 0, 31, 64], [5, 5, 15, 12], [3, 60, 90, 80]], dtype=torch.float32)
    alone = torch.cat([roi_align(img[None].float(), torch.cat([torch.zeros(1, 1), box[None]], 1), (24, 24),
                                 spatial_scale=1.0, sampling_ratio=-1, aligned=True)
                       for img, box in zip(images, boxes)])
    one_chunk = crop_resize(images, boxes, (24, 24))
    chunk_each = crop_resize(images, boxes, (24, 24), max_padded_bytes=1)
    torch.testing.assert_close(one_chunk, alone, atol=1e-3, rtol=0)
    torch.testing.assert_close(chunk_each, alone, atol=1e-3, rtol=0)


def test_crop_resize_of_a_whole_image_is_the_image_or_its_average_pooling():
    image = torch.randint(0, 256, (3, 32, 48), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    whole = torch.tensor([[0.0, 0.0, 48.0, 32.0]])
    torch.testing.assert_close(crop_resize([image], whole, (32, 48))[0], image.float(), atol=1e-3, rtol=0)
    halved = F.avg_pool2d(image.float()[None], 2)
    torch.testing.assert_close(crop_resize([image], whole, (16, 24)), halved, atol=1e-3, rtol=0)


def test_shards_take_the_device_path(tmp_path):
    photos = PhotosSource()
    for shard in range(2):
        with tarfile.open(tmp_path / f"train-{shard}.tar", "w") as tar:
            for i in range(4):
                buffer = io.BytesIO()
                photos[shard * 4 + i][0].save(buffer, format="JPEG", quality=90)
                image = b"<html>oops</html>" if (shard, i) == (1, 2) else buffer.getvalue()
                for name, payload in ((f"{shard}{i:03d}.jpg", image), (f"{shard}{i:03d}.cls", str(i).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    shards = ShardSource(str(tmp_path / "train-{0..1}.tar"))
    workers, device, _ = both_paths(shards, seed=2)
    [reference] = list(build_loader(workers, batch_size=8, num_workers=0, drop_last=False))
    [encoded] = list(build_loader(device, batch_size=8, num_workers=0, drop_last=False))
    batch = encoded.to("cpu")
    skipped = [Path(path).name for path, _ in batch.skipped]
    assert skipped == ["train-1.tar#1002"] == [Path(path).name for path, _ in reference.skipped]
    assert torch.equal(batch.indices, reference.indices) and torch.equal(batch.targets, reference.targets)
    assert (batch.images - reference.images).abs().mean(dim=(1, 2, 3)).max() < 0.06


@pytest.mark.cuda
def test_cuda_path_matches_the_cpu_device_path(jpeg_folder, tmp_path):
    for path in sorted(jpeg_folder.glob("*.jpg")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    data = (tmp_path / "photo00.jpg").read_bytes()
    (tmp_path / "no_tables.jpg").write_bytes(jpeg_without_quantization_tables(data))
    PhotosSource()[1][0].save(tmp_path / "lossless.png")  # decoded by the workers, cropped on the GPU
    _, device, _ = both_paths(ImageFolderSource(tmp_path), size=96)
    loader = build_loader(device, batch_size=len(device), pin_memory=True, drop_last=False)
    encoded = next(iter(loader))
    on_cpu = encoded.to("cpu")
    on_gpu = encoded.to("cuda", non_blocking=True)
    assert on_gpu.images.device.type == "cuda" and on_gpu.indices.device.type == "cuda"
    assert [Path(p).name for p, _ in on_gpu.skipped] == [Path(p).name for p, _ in on_cpu.skipped] == ["no_tables.jpg"]
    assert torch.equal(on_gpu.indices.cpu(), on_cpu.indices)
    # nvJPEG's IDCT and upsampling differ from libjpeg's by a level or two of 255.
    difference = (on_gpu.images.cpu() - on_cpu.images).abs().mean(dim=(1, 2, 3))
    assert difference.max() < 0.03

"""Data: sources -> robust decoding -> per-sample seeded transforms -> batches.

    source = open_source("fashion-mnist", "train", "image")  # or "class", "mask", "detection": registry.py
    mean, std = default_normalization(1, "fashion-mnist")
    dataset = build_dataset(source, PretrainTransform(28, mean, std), seed=0)
    sampler = EpochSampler(len(dataset), seed=0)
    loader = build_loader(dataset, batch_size=256, sampler=sampler, num_workers=2)
    for epoch in range(epochs):
        sampler.set_epoch(epoch); dataset.set_epoch(epoch)
        for batch in loader:  # Batch(images, indices, labels, skipped)
            ...

Device-side augmentation (`device_augment`): workers ship encoded JPEG files and crop plans, and each
batch is decoded, cropped, flipped and normalised where it goes:

    dataset = build_device_dataset(source, PretrainTransform(224, mean, std), in_chans=3, seed=0)
    for batch in build_loader(dataset, ...):  # EncodedBatch
        batch = batch.to("cuda", non_blocking=True)  # Batch, as above
"""
from vitmae.data.decode import IMAGE_EXTENSIONS, ImageLike, UnreadableImage, convert_image, load_image
from vitmae.data.loader import (
    Batch,
    JointTransform,
    EpochSampler,
    TransformedDataset,
    build_dataset,
    build_loader,
    collate,
    readable,
)
from vitmae.data.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNISTSource
from vitmae.data.files import CsvSource, ImageFilesSource, ImageFolderSource
from vitmae.data.photos import PhotosSource
from vitmae.data.registry import SOURCE_KINDS, SourceKind, build_source, open_source
from vitmae.data.shards import ShardSource, expand_braces
from vitmae.data.source import DataError, Skipped, Source
from vitmae.data.transforms import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    PretrainTransform,
    ResizeTransform,
    Transform,
    default_normalization,
    random_resized_crop_params,
    sample_generator,
)
from vitmae.data.device_augment import DeviceAugment, EncodedBatch, build_device_dataset
from vitmae.data.labels import source_labels, stratified_indices
# video: clip sources (files, frame folders, lists, the built-in moving-fashion-mnist), decoding, clips
from vitmae.data.video_decode import (FRAME_EXTENSIONS, MAX_FRAMES, VIDEO_EXTENSIONS, FrameArray, FrameFolder,
                                      Video, VideoFile, open_video)
from vitmae.data.video import ClipFileSource, ClipFolderSource, ClipListSource
from vitmae.data.moving_fashion import DIRECTIONS, MOVING_FASHION, MovingFashionSource
from vitmae.data.clips import (ClipDataset, ClipSampling, EvalClips, TrainClips, collate_clips,
                               collate_views)

__all__ = [
    "IMAGE_EXTENSIONS", "ImageLike", "UnreadableImage", "convert_image", "load_image",
    "Batch", "EpochSampler", "TransformedDataset", "build_dataset", "build_loader", "collate",
    "FASHION_MNIST_CLASSES", "CsvSource", "DataError", "FashionMNISTSource", "ImageFolderSource",
    "PhotosSource", "ShardSource", "Skipped", "Source", "build_source", "expand_braces", "ImageFilesSource",
    "SOURCE_KINDS", "SourceKind", "open_source",
    "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform",
    "PretrainTransform", "ResizeTransform", "Transform", "default_normalization", "random_resized_crop_params",
    "sample_generator", "DeviceAugment", "EncodedBatch", "build_device_dataset", "source_labels",
    "stratified_indices", "JointTransform", "readable",
    "FRAME_EXTENSIONS", "MAX_FRAMES", "VIDEO_EXTENSIONS", "FrameArray", "FrameFolder", "Video", "VideoFile",
    "open_video", "ClipFileSource", "ClipFolderSource", "ClipListSource", "DIRECTIONS", "MOVING_FASHION",
    "MovingFashionSource", "ClipDataset", "ClipSampling", "EvalClips", "TrainClips", "collate_clips",
    "collate_views",
]

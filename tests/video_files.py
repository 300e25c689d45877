"""Video files for the video data tests, written by PyAV in the test itself (its wheel bundles FFmpeg's
encoders, so nothing is downloaded): clips whose frames say their own index, frame folders, and the bad
files a clip folder may hold. Each writer returns the path it wrote."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

# suffix -> (encoder, pixel format) of each container a clip folder may hold
CONTAINERS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"), ".avi": ("mpeg4", "yuv420p"),
              ".mkv": ("ffv1", "yuv420p"), ".mov": ("libx264", "yuv420p")}


def have_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises its own UnknownCodecError, or ValueError in older releases
        return False
    return True


def index_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB frame that says its index (0-255) through lossy coding: the left half's gray level gives
    index // 16, the right half's index % 16, 16 levels apart."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:, : width // 2] = 16 * (index // 16) + 8
    frame[:, width // 2 :] = 16 * (index % 16) + 8
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The index an `index_frame` says, read back from its decoded pixels (H, W, C)."""
    height, width = frame.shape[:2]
    high = round((float(frame[height // 2, width // 4, 0]) - 8) / 16)
    low = round((float(frame[height // 2, 3 * width // 4, 0]) - 8) / 16)
    return 16 * high + low


def write_clip(path: Path, frames: int, suffix_codec: tuple[str, str] | None = None, fps: int = 25,
               gop: int = 12, width: int = 64, height: int = 48) -> Path:
    """A clip of `frames` index frames, a keyframe every `gop` frames; the codec from the suffix."""
    import av

    codec, pix_fmt = suffix_codec or CONTAINERS[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_frame(i % 256, width, height), "rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, frames: int, width: int = 64, height: int = 48, ext: str = ".png") -> Path:
    """A folder of `frames` index frames named frame_1 ... frame_N (no zero padding: natural order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        Image.fromarray(index_frame(i, width, height)).save(folder / f"frame_{i + 1}{ext}")
    return folder


def write_audio_only(path: Path) -> Path:
    """A Matroska file with one audio stream and no video."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def write_frameless(path: Path) -> Path:
    """An AVI with a video stream and no frame in it."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def avi_claiming(path: Path, width: int | None = None, height: int | None = None,
                 frames: int | None = None) -> Path:
    """A 4-frame ffv1 AVI whose header claims another frame size or frame count: its BITMAPINFOHEADER and
    main header give the size, its main and stream headers the count (FFmpeg believes them until it
    decodes)."""
    write_clip(path, 4, ("ffv1", "yuv420p"))
    data = bytearray(path.read_bytes())
    main, stream, info = data.find(b"avih") + 8, data.find(b"strh") + 8, data.find(b"strf") + 8
    if width is not None:
        struct.pack_into("<ii", data, info + 4, width, height)
        struct.pack_into("<II", data, main + 32, width, height)
    if frames is not None:
        struct.pack_into("<I", data, main + 16, frames)
        struct.pack_into("<I", data, stream + 32, frames)
    path.write_bytes(bytes(data))
    return path


def truncated(source: Path, target: Path, keep: float = 0.5) -> Path:
    target.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
    return target


def corrupted(source: Path, target: Path, seed: int = 0) -> Path:
    """A copy whose middle half is random bytes."""
    data = bytearray(source.read_bytes())
    low, high = len(data) // 4, 3 * len(data) // 4
    data[low:high] = np.random.default_rng(seed).integers(0, 256, high - low, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target

"""Video decoding: the frames a clip needs, read from a video file (PyAV), a folder of frames or memory.

A `Video` is what a clip source gives for a sample: its frame count, known before anything is decoded,
and `read(indices)`, which decodes those frames only, as a (len(indices), H, W, C) uint8 array. The clip
transforms (`clips.py`) choose the indices, so a 16-frame clip of a two-hour film decodes about 16
frames and what lies between them and the keyframe before them, not the film.

A video file's header is checked when it is opened, before any frame is decoded: a frame over the pixel
limit (`decode.MAX_PIXELS`, the one limit of every decoder) or more than MAX_FRAMES frames is refused.
Bad files raise `UnreadableImage`, which the loader turns into a skipped, listed sample, as for images:
an empty file, a file FFmpeg cannot read, no video stream, no frames, a corrupt packet, and a stream that
ends well before the frame count its header gives (a truncated copy).

PyAV is imported only where a video file is opened (`pip install 'vitmae[video]'`); frame folders and
the built-in clips (`moving_fashion.py`) do not need it.
"""
from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vitmae.data.decode import IMAGE_EXTENSIONS, UnreadableImage, load_image, pixel_limit_problem
from vitmae.data.source import DataError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
# the images a frame folder's frames may be (not .npy arrays: a frame is 8-bit)
FRAME_EXTENSIONS = tuple(ext for ext in IMAGE_EXTENSIONS if ext != ".npy")
# Frames of one video: over 9 hours at 30 fps. Read at call time, so tests (and users) may change it.
MAX_FRAMES = 1_000_000
# A wanted frame more than this many frames past the last one decoded is reached by seeking to the
# keyframe before it rather than by decoding everything between (keyframes are often 1-10 s apart).
SEEK_GAP = 64


class Video(Protocol):
    path: str
    num_frames: int  # from the header (a video file's estimate may be off by a frame or two)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames `indices` (each in 0..num_frames-1, any order, repeats allowed): (len, H, W, C) uint8."""
        ...

    def close(self) -> None: ...


def frame_count_problem(count: int) -> str | None:
    """Why a video of `count` frames is refused (None if it is not)."""
    if count <= MAX_FRAMES:
        return None
    return f"{count} frames, over the limit of {MAX_FRAMES} frames"


class FrameArray:
    """Frames held in memory, (T, H, W, C) uint8: the built-in clips."""

    def __init__(self, frames: np.ndarray, path: str = "<frames>") -> None:
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be a (T, H, W, C) uint8 array, not {frames.dtype} {frames.shape}")
        self.frames, self.path, self.num_frames = frames, path, len(frames)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)]

    def close(self) -> None:
        pass


def natural_key(name: str) -> list[Any]:
    """Sort key of a file name in natural order: frame_2.jpg before frame_10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class FrameFolder:
    """A folder of images, in natural order of their names, as the frames of one clip. Each frame is read
    by `decode.load_image` (so the image pixel limit holds for it) when a clip needs it; every frame read
    must have the size of the first one read."""

    def __init__(self, path: str | Path, in_chans: int = 3) -> None:
        self.path, self.in_chans = str(path), in_chans
        try:
            names = [entry.name for entry in os.scandir(path) if not entry.name.startswith(".")
                     and entry.name.lower().endswith(FRAME_EXTENSIONS) and entry.is_file()]
        except OSError as err:
            raise UnreadableImage(self.path, err.strerror or type(err).__name__) from err
        if not names:
            raise UnreadableImage(self.path, f"no frames ({', '.join(FRAME_EXTENSIONS)}) in the folder")
        if problem := frame_count_problem(len(names)):
            raise UnreadableImage(self.path, problem)
        self.frames = [os.path.join(self.path, name) for name in sorted(names, key=natural_key)]
        self.num_frames = len(self.frames)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        loaded: dict[int, np.ndarray] = {}
        for i in sorted(set(indices)):
            try:
                frame = np.asarray(load_image(self.frames[i], self.in_chans), dtype=np.uint8)
            except UnreadableImage as err:  # named by the clip, with the frame in the reason
                raise UnreadableImage(self.path, f"frame {os.path.basename(self.frames[i])}: {err.reason}") from err
            frame = frame.reshape(*frame.shape[:2], -1)
            first = next(iter(loaded.items()), None)
            if first is not None and frame.shape != first[1].shape:
                raise UnreadableImage(self.path, f"frame {os.path.basename(self.frames[i])} is "
                                                 f"{frame.shape[1]}x{frame.shape[0]}, frame "
                                                 f"{os.path.basename(self.frames[first[0]])} is "
                                                 f"{first[1].shape[1]}x{first[1].shape[0]}")
            loaded[i] = frame
        return np.stack([loaded[i] for i in indices])

    def close(self) -> None:
        pass


def _pyav():
    try:
        import av
    except ImportError:
        raise DataError("reading video files needs PyAV: pip install 'vitmae[video]'") from None
    return av


# Every VideoFile of this process, and what a forked child (a DataLoader worker) inherited of them. A
# child must never free an inherited decoder: freeing one waits for its threads, which exist only in the
# parent, and the child would hang. So the child keeps them, unused, until it exits (workers end with
# os._exit, which frees nothing).
_video_files: weakref.WeakSet = weakref.WeakSet()
_inherited: list = []


def _keep_inherited_decoders() -> None:
    for video in list(_video_files):
        _inherited.extend(part for part in (video._container, video._stream) if part is not None)
        video._container = video._stream = None


os.register_at_fork(after_in_child=_keep_inherited_decoders)


def decoder_threads() -> int:
    """Decoder threads of a video opened here: 1 in a DataLoader worker (the workers already keep the
    cores busy, and each FFmpeg thread would compete with them), else 0 (FFmpeg's choice)."""
    from torch.utils.data import get_worker_info

    return 1 if get_worker_info() is not None else 0


class VideoFile:
    """A video file's first video stream, opened with PyAV and its header checked; frames are decoded by
    `read`, after a seek to the keyframe before the first one wanted.

    A frame's index comes from its timestamp and the stream's frame rate (round((pts - start) * rate)),
    so a seek lands where decoding from the start would have counted; a wanted index the stream does not
    have (a variable frame rate) takes the last frame before it. `threads`: decoder threads (None:
    `decoder_threads()`). `decoded` counts the frames decoded so far: what the seeks saved.
    """

    def __init__(self, path: str | Path, in_chans: int = 3, threads: int | None = None) -> None:
        self.path = str(path)
        self._container = self._stream = None
        _video_files.add(self)
        av = _pyav()
        self._errors = (av.FFmpegError, OSError, ValueError, EOFError)
        if in_chans not in (1, 3):
            raise UnreadableImage(self.path, f"{in_chans} channels requested from a video file; "
                                             "its frames have 1 (gray) or 3 (RGB)")
        self._format = "gray" if in_chans == 1 else "rgb24"
        self.decoded = 0
        try:
            empty = os.path.getsize(self.path) == 0
            self._container = None if empty else av.open(self.path, metadata_errors="ignore")
        except self._errors as err:
            raise UnreadableImage(self.path, _short_reason(err)) from err
        if empty:
            raise UnreadableImage(self.path, "empty file")
        try:
            self._open_stream(threads)
        except BaseException:
            self.close()
            raise

    def _open_stream(self, threads: int | None) -> None:
        if not self._container.streams.video:
            raise UnreadableImage(self.path, "no video stream")
        stream = self._stream = self._container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise UnreadableImage(self.path, "no frame size in the header")
        if problem := pixel_limit_problem(width, height):
            raise UnreadableImage(self.path, f"frames of {problem}")
        rate = stream.average_rate or stream.guessed_rate
        self._rate = float(rate) if rate else 0.0
        self._time_base = float(stream.time_base) if stream.time_base else 0.0
        self._start = stream.start_time or 0
        self.num_frames = self._header_frames()
        if problem := frame_count_problem(self.num_frames):
            raise UnreadableImage(self.path, problem)
        if self.num_frames == 0:
            raise UnreadableImage(self.path, "no frames")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = decoder_threads() if threads is None else threads

    def _header_frames(self) -> int:
        """The frame count the container states, or its duration times the frame rate; without either,
        the packets counted (read, not decoded; the count stops past MAX_FRAMES)."""
        stream = self._stream
        if stream.frames:
            return int(stream.frames)
        if self._rate and stream.duration and self._time_base:
            return round(stream.duration * self._time_base * self._rate)
        if self._rate and self._container.duration:
            return round(self._container.duration / 1_000_000 * self._rate)
        count = 0
        try:
            for packet in self._container.demux(stream):
                count += packet.size > 0
                if count > MAX_FRAMES:
                    break
        except self._errors as err:
            raise UnreadableImage(self.path, _short_reason(err)) from err
        return count

    @property
    def _seekable(self) -> bool:
        return bool(self._rate and self._time_base)

    def _frames_from(self, index: int) -> Iterator[tuple[int, Any]]:
        """(index, frame) of the stream's frames from the keyframe at or before frame `index` on (from the
        start when the stream has no frame rate or time base to seek by)."""
        if self._seekable:
            timestamp = self._start + round(index / self._rate / self._time_base)
            self._container.seek(timestamp, stream=self._stream, backward=True, any_frame=False)
        else:
            self._container.seek(0)
        counted = -1
        for frame in self._container.decode(self._stream):
            self.decoded += 1
            if frame.pts is not None and self._seekable:
                counted = round((frame.pts - self._start) * self._time_base * self._rate)
            elif self._seekable:  # a frame without a timestamp after a seek cannot be placed
                raise UnreadableImage(self.path, "frames without timestamps")
            else:
                counted += 1
            yield counted, frame

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames (a video that cannot give them is closed, and the error says why)."""
        if self._container is None:
            raise ValueError(f"{self.path}: the video was closed")
        wanted = sorted(set(int(i) for i in indices))
        chosen: dict[int, Any] = {}  # wanted index -> (index, frame) of the frame that stands for it
        frames: Iterator[tuple[int, Any]] | None = None
        held = pending = None  # the last frame at or before the wanted index; a frame decoded past it
        ended = False
        try:
            for w in wanted:
                if frames is None or (self._seekable and not ended and w > held[0] + SEEK_GAP):
                    frames, held, pending = self._frames_from(w), None, None
                while not ended and (held is None or held[0] < w):
                    if pending is None:
                        pending = next(frames, None)
                        ended = pending is None
                        if ended:
                            break
                    if held is not None and pending[0] > w:  # no frame has index w (a variable rate)
                        break
                    held, pending = pending, None
                if held is None:
                    raise UnreadableImage(self.path, "no frame could be decoded")
                if ended and held[0] < w - self._tolerance:
                    raise UnreadableImage(self.path, f"truncated: the stream ends at frame {held[0] + 1} of "
                                                     f"the {self.num_frames} its header gives")
                chosen[w] = held
            arrays = {index: frame.to_ndarray(format=self._format) for index, frame in chosen.values()}
        except UnreadableImage:
            self.close()
            raise
        except self._errors as err:
            self.close()
            raise UnreadableImage(self.path, _short_reason(err)) from err
        if len({array.shape for array in arrays.values()}) > 1:
            raise UnreadableImage(self.path, "the frame size changes within the stream")
        out = np.stack([arrays[chosen[int(i)][0]] for i in indices])
        return out.reshape(*out.shape[:3], -1)

    @property
    def _tolerance(self) -> int:
        """Frames a stream may end short of its header's count: a count from the duration may be off."""
        return max(2, self.num_frames // 100)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None

    def __del__(self) -> None:
        self.close()


def open_video(path: str | Path, in_chans: int = 3) -> Video:
    """A folder as a FrameFolder, a file as a VideoFile."""
    return FrameFolder(path, in_chans) if os.path.isdir(path) else VideoFile(path, in_chans)


def _short_reason(err: BaseException) -> str:
    """FFmpeg's or the system's reason, without the file name it may end with."""
    text = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    text = text.splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."

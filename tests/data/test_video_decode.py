"""Video decoding (data/video_decode.py): the frames asked for, with seeks; frame folders; bad files."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from tests import video_files as vf  # noqa: E402
from vitmae.data import decode, video_decode  # noqa: E402
from vitmae.data.decode import UnreadableImage  # noqa: E402
from vitmae.data.video_decode import FrameArray, FrameFolder, VideoFile, natural_key, open_video  # noqa: E402

SUFFIXES = [suffix for suffix, (codec, _) in vf.CONTAINERS.items() if vf.have_encoder(codec)]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_container_gives_the_frames_asked_for_in_the_order_asked(tmp_path: Path, suffix: str) -> None:
    path = vf.write_clip(tmp_path / f"clip{suffix}", 90)
    video = VideoFile(path, in_chans=3)
    assert abs(video.num_frames - 90) <= 1  # webm and mkv state a duration, not a count
    wanted = [0, 5, 44, 89, 44, 3, 88]
    frames = video.read(wanted)
    assert frames.shape == (len(wanted), 48, 64, 3) and frames.dtype == np.uint8
    assert [vf.frame_index(f) for f in frames] == wanted


def test_gray_frames_have_one_channel(tmp_path: Path) -> None:
    frames = VideoFile(vf.write_clip(tmp_path / "c.mp4", 10), in_chans=1).read([2, 7])
    assert frames.shape == (2, 48, 64, 1)
    assert [vf.frame_index(f) for f in frames] == [2, 7]


def test_a_clip_far_into_a_long_video_is_reached_by_seeking(tmp_path: Path) -> None:
    path = vf.write_clip(tmp_path / "long.mp4", 600, gop=12)
    video = VideoFile(path, 1)
    assert [vf.frame_index(f) % 256 for f in video.read(range(580, 596))] == [i % 256 for i in range(580, 596)]
    assert video.decoded < 16 + 2 * 12  # the clip and what lies between it and its keyframe, not 596 frames
    spread = VideoFile(path, 1)
    assert [vf.frame_index(f) % 256 for f in spread.read([3, 300, 590])] == [3, 300 % 256, 590 % 256]
    assert spread.decoded < 3 * 2 * 12  # a seek for each clip far from the last


def test_frames_past_the_end_repeat_the_last_one(tmp_path: Path) -> None:
    # a count from the duration may be a frame or two over: the stream's last frame stands in
    video = VideoFile(vf.write_clip(tmp_path / "c.webm", 20), 1)
    assert [vf.frame_index(f) for f in video.read([18, 19, video.num_frames])] == [18, 19, 19]


def test_decoder_threads_are_one_in_a_dataloader_worker_and_ffmpegs_choice_elsewhere() -> None:
    from torch.utils.data import DataLoader, Dataset

    class Threads(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> int:
            return video_decode.decoder_threads()

    assert video_decode.decoder_threads() == 0
    assert next(iter(DataLoader(Threads(), num_workers=1, collate_fn=list))) == [1]


def test_frame_folders_read_their_images_in_natural_order(tmp_path: Path) -> None:
    folder = vf.write_frame_folder(tmp_path / "clip", 12)
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a frame")
    video = open_video(folder, 3)
    assert isinstance(video, FrameFolder) and video.num_frames == 12
    assert [vf.frame_index(f) for f in video.read([11, 0, 9, 1])] == [11, 0, 9, 1]  # frame_10 after frame_9
    assert sorted(["f_10.png", "f_9.png", "f_1.png"], key=natural_key) == ["f_1.png", "f_9.png", "f_10.png"]


def test_a_frame_folder_with_a_bad_frame_or_another_size_is_unreadable(tmp_path: Path, photo) -> None:
    folder = vf.write_frame_folder(tmp_path / "clip", 4)
    (folder / "frame_3.png").write_text("not an image")
    with pytest.raises(UnreadableImage, match="frame frame_3.png: not an image"):
        FrameFolder(folder).read([0, 2])
    assert FrameFolder(folder).read([0, 1]).shape == (2, 48, 64, 3)  # a clip without it reads
    photo(40, 30).save(folder / "frame_3.png")
    with pytest.raises(UnreadableImage, match="frame frame_3.png is 40x30, frame frame_1.png is 64x48"):
        FrameFolder(folder).read([0, 2])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableImage, match="no frames"):
        FrameFolder(tmp_path / "empty")


def test_frame_arrays_give_their_frames() -> None:
    frames = np.stack([vf.index_frame(i) for i in range(5)])
    assert [vf.frame_index(f) for f in FrameArray(frames).read([4, 4, 0])] == [4, 4, 0]


# bad files: each an UnreadableImage with its reason, which the loader lists (test_video.py)
def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    good = vf.write_clip(folder / "good.mp4", 60, gop=10)
    webm = vf.write_clip(folder / "good.webm", 60, gop=10)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mkv").write_text("<html>not a video</html>")
    return {
        "empty": (folder / "empty.mp4", "empty file"),
        "not a video": (folder / "text.mkv", "Invalid data found when processing input"),
        "truncated mp4 (no index)": (vf.truncated(good, folder / "cut.mp4"), "Invalid data found"),
        "truncated webm": (vf.truncated(webm, folder / "cut.webm"), "truncated: the stream ends at frame"),
        "corrupt webm": (vf.corrupted(webm, folder / "noise.webm"), "no frame could be decoded"),
        "no video stream": (vf.write_audio_only(folder / "sound.mkv"), "no video stream"),
        "no frames": (vf.write_frameless(folder / "none.avi"), "no frames"),
        "missing": (folder / "gone.mp4", "No such file or directory"),
    }


@pytest.mark.parametrize("kind", ["empty", "not a video", "truncated mp4 (no index)", "truncated webm",
                                  "corrupt webm", "no video stream", "no frames", "missing"])
def test_bad_video_files_are_unreadable_with_their_reason(tmp_path: Path, kind: str) -> None:
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(UnreadableImage) as caught:
        video = VideoFile(path, 3)
        video.read(range(video.num_frames - 16, video.num_frames))  # the end of the clip
    assert caught.value.path == str(path) and reason in caught.value.reason


def test_a_channel_count_a_video_cannot_give_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="4 channels requested from a video file"):
        VideoFile(vf.write_clip(tmp_path / "c.mp4", 4), 4)


def test_absurd_headers_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    huge = vf.avi_claiming(tmp_path / "huge.avi", width=16000, height=16000)
    long = vf.avi_claiming(tmp_path / "long.avi", frames=2_000_000_000)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(UnreadableImage, match=r"frames of 16000x16000 = 256000000 pixels, over the limit"):
        VideoFile(huge)
    with pytest.raises(UnreadableImage, match="2000000000 frames, over the limit of 1000000 frames"):
        VideoFile(long)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1 << 20  # nothing decoded (a 16000x16000 frame is 384 MB)
    # both limits are read at call time: a user (or a test) may change them
    small = vf.write_clip(tmp_path / "small.mp4", 30)
    monkeypatch.setattr(decode, "MAX_PIXELS", 64 * 48 - 1)
    with pytest.raises(UnreadableImage, match="frames of 64x48 = 3072 pixels, over the limit of 3071"):
        VideoFile(small)
    monkeypatch.setattr(decode, "MAX_PIXELS", 64 * 48)
    monkeypatch.setattr(video_decode, "MAX_FRAMES", 29)
    with pytest.raises(UnreadableImage, match="30 frames, over the limit of 29 frames"):
        VideoFile(small)
    with pytest.raises(UnreadableImage, match="30 frames, over the limit of 29 frames"):
        FrameFolder(vf.write_frame_folder(tmp_path / "frames", 30, 8, 8))


def test_a_forked_worker_never_frees_a_decoder_it_inherited(tmp_path: Path) -> None:
    # Decoders with threads, alive in this process (open, or held by an error's traceback), then freed in
    # a forked DataLoader worker: freeing one waits for threads only the parent has, and the worker hung
    # (a whole test session did, before the fork handler of video_decode).
    import gc

    from torch.utils.data import DataLoader, Dataset

    webm = vf.write_clip(tmp_path / "c.webm", 60, gop=10)
    held: list = []
    for bad in (vf.corrupted(webm, tmp_path / "noise.webm"), vf.truncated(webm, tmp_path / "cut.webm")):
        with pytest.raises(UnreadableImage) as caught:
            VideoFile(bad, 3, threads=0).read(range(44, 60))
        opened = VideoFile(bad, 3, threads=0)
        opened.read([0, 1])
        held += [caught.value, opened]

    class Frees(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> int:
            held.clear()
            gc.collect()
            return i

    loader = DataLoader(Frees(), num_workers=2, timeout=20, multiprocessing_context="fork")
    assert sorted(int(x) for x in loader) == [0, 1]
    assert len(held) == 4  # this process still has them

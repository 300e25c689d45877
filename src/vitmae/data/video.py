"""Clip sources on disk: a folder of video files or of frame folders, and a list of clips.

A sample is `(Video, class id)` (-1: unlabeled): the video opened and its header checked, nothing decoded
yet; the clip transform (`clips.py`) reads the frames its clips need. Each entry is a video file
(`.mp4 .webm .avi .mkv .mov`, decoded by PyAV) or a folder of frames (its images, in natural order of
their names: frame_2.jpg before frame_10.jpg).

- A folder is searched recursively with the image folders' walker (links followed, each real folder and
  file once, hidden entries skipped). Its video files are its clips; a folder without any has a clip in
  each folder that directly holds images (frames directly under the root belong to no clip and are left
  out, with a warning). A clip inside a first-level sub-folder has that sub-folder as its class
  (DIR/abseiling/x.mp4, DIR/abseiling/x/00001.jpg); one directly under the root is unlabeled. A folder
  with `train/` and `val/` sub-folders has a split in each, as image folders do.
- A list is a `.txt` file of `path label` lines, Kinetics-style (`path frames label` too, as lists of frame
  folders carry: the count is not needed, the folder's files give it; a line whose last word is not an
  integer is a path alone, unlabeled), or a `.csv` file of `path,label` rows read as image CSVs are
  (a header row, class names). Paths are relative to the list's folder; a missing one is skipped when
  read, as any unreadable clip.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from vitmae.data.files import CsvSource, FileSource, scan_images, utf8_text, warn_repeats
from vitmae.data.source import DataError, class_count
from vitmae.data.video_decode import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, Video, open_video

log = logging.getLogger(__name__)


class ClipFileSource(FileSource):
    """Clips on disk (video files or frame folders) with labels (-1: unlabeled): a file source whose
    samples are opened as videos, not decoded as images."""

    def __getitem__(self, index: int) -> tuple[Video, int]:
        return open_video(self.paths[index], self.in_chans), self.labels[index]


class ClipFolderSource(ClipFileSource):
    """The clips under `root`: its video files, or, if it has none, its frame folders (module docstring)."""

    def __init__(self, root: str | Path, in_chans: int = 3) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"clip folder not found: {root}")
        repeats: Counter[str] = Counter()
        clips = sorted(scan_images(root, repeats, VIDEO_EXTENSIONS))
        if not clips:
            frames = list(scan_images(root, repeats, FRAME_EXTENSIONS))
            clips = sorted({name.rpartition("/")[0] for name in frames} - {""})
            loose = sum("/" not in name for name in frames)
            if loose:
                log.warning("%s: %d images directly under the folder belong to no clip (a clip's frames are "
                            "a folder of their own), left out", root, loose)
        warn_repeats(root, repeats)
        if not clips:
            raise DataError(f"no clips under {root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) and no "
                            "folders of frames")
        folders = [clip.split("/", 1)[0] if "/" in clip else None for clip in clips]
        classes = sorted({folder for folder in folders if folder is not None}) or None
        class_id = {name: i for i, name in enumerate(classes or [])}
        labels = [class_id[folder] if folder is not None else -1 for folder in folders]
        super().__init__([str(root / clip) for clip in clips], labels, classes, in_chans)


class ClipListSource(ClipFileSource):
    """The clips a `.txt` (path label lines) or `.csv` (path,label rows) list names (module docstring)."""

    def __init__(self, list_path: str | Path, in_chans: int = 3) -> None:
        list_path = Path(list_path)
        if list_path.suffix.lower() == ".csv":
            rows = CsvSource(list_path, in_chans)  # its rows, read as any CSV list
            super().__init__(rows.paths, rows.labels, rows.classes, in_chans)
            return
        if not list_path.is_file():
            raise DataError(f"clip list not found: {list_path}")
        paths, labels, line_numbers = [], [], []
        for number, line in enumerate(utf8_text(list_path, list_path.read_bytes()).splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            words = line.rsplit(maxsplit=2)
            if len(words) == 3 and re.fullmatch(r"-?\d+", words[1]) and re.fullmatch(r"-?\d+", words[2]):
                path, label = words[0], int(words[2])  # path, frame count, label
            elif len(words) >= 2 and re.fullmatch(r"-?\d+", words[-1]):
                path, label = line.rsplit(maxsplit=1)[0], int(words[-1])
            else:
                path, label = line, -1
            paths.append(str(list_path.parent / path))
            labels.append(label)
            line_numbers.append(number)
        if not paths:
            raise DataError(f"no clips in {list_path}")
        class_count(labels, str(list_path), line_numbers)
        super().__init__(paths, labels, None, in_chans)

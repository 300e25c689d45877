"""Image files on disk: the folder walker, and the sources made of files (an image folder, a list of
files and folders, a CSV list of path,label). Each file is decoded when its sample is read."""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from vitmae.data.decode import IMAGE_EXTENSIONS, ImageLike, UnreadableImage, load_image
from vitmae.data.source import DataError, class_count

log = logging.getLogger(__name__)


def scan_images(root: Path, repeats: Counter[str] | None = None,
                extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Iterator[str]:
    """Image files (or files with other `extensions`: video clips) under root as '/'-separated relative
    paths; follows links, skips hidden entries.

    Each real folder is entered once and each real file yielded once (by device and inode): a link
    loop would otherwise repeat every image below it, and two loops multiply. Folders reached again
    are counted in `repeats` ('loop' when the link points at a folder it is in, else 'folder'),
    files reached again under 'file'.
    """
    repeats = Counter() if repeats is None else repeats
    top = os.stat(root)
    seen_folders, seen_files = {(top.st_dev, top.st_ino)}, set()
    stack = [("", ((top.st_dev, top.st_ino),))]
    while stack:
        relative, ancestors = stack.pop()
        try:
            with os.scandir(root / relative) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as err:
            log.warning("cannot list folder %s: %s", root / relative, err.strerror or err)
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                if entry.is_dir():  # follows a link to a folder
                    info = entry.stat()
                    identity = (info.st_dev, info.st_ino)
                    if identity in seen_folders:
                        repeats["loop" if identity in ancestors else "folder"] += 1
                    else:
                        seen_folders.add(identity)
                        folders.append((path, (*ancestors, identity)))
                    continue
                if not entry.name.lower().endswith(extensions):
                    continue
                # a plain file lives on its folder's device; only a link needs a stat of its target
                info = entry.stat() if entry.is_symlink() else None
                identity = (info.st_dev, info.st_ino) if info else (ancestors[-1][0], entry.inode())
            except OSError:  # a broken link: listed, and the loader reports it as unreadable
                yield path
                continue
            if identity in seen_files:
                repeats["file"] += 1
            else:
                seen_files.add(identity)
                yield path
        stack.extend(reversed(folders))


def warn_repeats(root: Path, repeats: Counter[str]) -> None:
    """One line for what `scan_images` counted in `repeats`, if anything."""
    if repeats:
        log.warning("%s: %d symbolic link loop(s) not followed; %d folder(s) and %d file(s) reached again "
                    "through links, scanned once", root, repeats["loop"], repeats["folder"], repeats["file"])


class FileSource:
    """Image files with labels (-1: unlabeled); decoded on access. The base of every source of files."""

    def __init__(self, paths: list[str], labels: list[int], classes: list[str] | None, in_chans: int) -> None:
        self.paths, self.labels, self.classes, self.in_chans = paths, labels, classes, in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[ImageLike, int]:
        return load_image(self.paths[index], self.in_chans), self.labels[index]

    def stored(self, index: int) -> tuple[bytes, int]:
        """The file's bytes, undecoded, and its label (for device-side augmentation, `device_augment`)."""
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                return f.read(), self.labels[index]
        except OSError as err:  # the reason load_image gives for the same file
            raise UnreadableImage(path, err.strerror or type(err).__name__) from err


class ImageFolderSource(FileSource):
    """Every image file under `root`, recursively, in sorted order (hidden files and folders skipped).

    With `labeled=True` the first-level sub-folder is the class, as in torchvision's ImageFolder.
    """

    def __init__(self, root: str | Path, labeled: bool = False, in_chans: int = 3) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        repeats: Counter[str] = Counter()
        files = sorted(scan_images(root, repeats))
        warn_repeats(root, repeats)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
        classes, labels = None, [-1] * len(files)
        if labeled:
            loose = [f for f in files if "/" not in f]
            if loose:
                raise DataError(f"{len(loose)} images directly under {root} (e.g. {loose[0]}) have no class folder")
            folder = [f.split("/", 1)[0] for f in files]
            classes = sorted(set(folder))
            class_id = {name: i for i, name in enumerate(classes)}
            labels = [class_id[name] for name in folder]
        super().__init__([str(root / f) for f in files], labels, classes, in_chans)


class ImageFilesSource(FileSource):
    """The image files named, each folder among them standing for every image under it (sorted,
    recursively), unlabeled. A named file that is missing stays: reading it skips it, as any unreadable
    image."""

    def __init__(self, names: Sequence[str | Path], in_chans: int = 3) -> None:
        paths = []
        for name in map(Path, names):
            paths += [str(name / f) for f in sorted(scan_images(name))] if name.is_dir() else [str(name)]
        super().__init__(paths, [-1] * len(paths), None, in_chans)


class CsvSource(FileSource):
    """Rows of `path,label`; paths relative to the CSV's folder; UTF-8 text.

    A first row whose label is not an integer and whose path does not exist is a header (`path,label`,
    `filename,class`, ...). Integer labels are class ids (see `source.class_count`); any other labels are
    names, numbered in sorted order. A row with an empty label, or -1, is unlabeled.
    """

    def __init__(self, csv_path: str | Path, in_chans: int = 3) -> None:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DataError(f"CSV file not found: {csv_path}")
        numbered = _csv_rows(csv_path)
        if numbered:
            first = numbered[0][1]
            label = first[1].strip() if len(first) > 1 else ""
            if not re.fullmatch(r"-?\d+", label) and not (csv_path.parent / first[0].strip()).exists():
                numbered = numbered[1:]
        if not numbered:
            raise DataError(f"no rows in {csv_path}")
        line_numbers = [line for line, _ in numbered]
        rows = [row for _, row in numbered]
        paths = [str(csv_path.parent / row[0].strip()) for row in rows]
        names = [row[1].strip() if len(row) > 1 else "" for row in rows]
        given = [n for n in names if n]
        classes = None
        if all(re.fullmatch(r"-?\d+", n) for n in given):
            labels = [int(n) if n else -1 for n in names]
            class_count(labels, f"{csv_path}", line_numbers)
        else:
            classes = sorted(set(given))
            class_id = {name: i for i, name in enumerate(classes)}
            labels = [class_id[n] if n else -1 for n in names]
        super().__init__(paths, labels, classes, in_chans)


def utf8_text(path: Path, data: bytes) -> str:
    """The text of a file's bytes in UTF-8 (a byte-order mark is allowed); DataError naming the first
    byte that is not, and its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} "
                        "(save it as UTF-8)") from None


def _csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the non-empty rows of a UTF-8 CSV file."""
    reader = csv.reader(io.StringIO(utf8_text(csv_path, csv_path.read_bytes()), newline=""))
    try:
        return [(reader.line_num, row) for row in reader if row and row[0].strip()]
    except csv.Error as err:
        raise DataError(f"{csv_path}, line {reader.line_num}: {err}") from None

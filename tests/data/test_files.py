"""The folder walker and the sources of image files: folders and CSV lists."""
from __future__ import annotations

import pytest

from vitmae.data import CsvSource, DataError, ImageFolderSource, open_source


def test_folder_scan_is_recursive_sorted_and_filtered(tmp_path, photo):
    files = ["cat/a.png", "cat/deep/b.JPG", "dog/c.webp", "dog/d.bmp", "dog/e.tif", "dog/f.gif"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        photo(12, 10).save(tmp_path / name)
    (tmp_path / "dog/readme.txt").write_text("not an image")
    (tmp_path / "dog/.hidden.png").write_bytes(b"macOS resource fork")
    (tmp_path / ".cache").mkdir()
    photo(12, 10).save(tmp_path / ".cache/thumb.png")

    unlabeled = ImageFolderSource(tmp_path)
    assert unlabeled.paths == [str(tmp_path / f) for f in files]
    assert unlabeled.classes is None and all(unlabeled[i][1] == -1 for i in range(len(files)))
    img, _ = unlabeled[1]
    assert img.mode == "RGB" and img.size == (12, 10)

    labeled = ImageFolderSource(tmp_path, labeled=True)
    assert labeled.classes == ["cat", "dog"]
    assert [labeled[i][1] for i in range(len(files))] == [0, 0, 1, 1, 1, 1]

    photo(12, 10).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="have no class folder"):
        ImageFolderSource(tmp_path, labeled=True)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found: .*nowhere"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no images"):
        ImageFolderSource(tmp_path)
    with pytest.raises(DataError, match="is not 'fashion-mnist', 'photos'"):
        open_source(str(tmp_path / "nowhere"))


def test_csv_source(tmp_path, photo):
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        photo(9, 9).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "list.csv").write_text("path,label\nimg/a.png,zebra\nimg/b.png,ant\nimg/c.png,zebra\n")
    source = open_source(str(tmp_path / "list.csv"))
    assert isinstance(source, CsvSource)
    assert source.classes == ["ant", "zebra"]
    assert [source[i][1] for i in range(3)] == [1, 0, 1]
    assert source.paths[0] == str(tmp_path / "img" / "a.png") and source[0][0].size == (9, 9)

    (tmp_path / "ids.csv").write_text("img/a.png,3\nimg/b.png,\nimg/c.png,0\n")
    ids = CsvSource(tmp_path / "ids.csv", in_chans=1)
    assert ids.classes is None and ids.labels == [3, -1, 0] and ids[0][0].mode == "L"
    with pytest.raises(DataError, match="CSV file not found"):
        CsvSource(tmp_path / "missing.csv")

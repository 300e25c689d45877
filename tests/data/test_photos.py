"""scikit-image's bundled photos as a source."""
from __future__ import annotations

from vitmae.data import PhotosSource


def test_photos():
    photos = PhotosSource()
    assert len(photos) > 3
    for i in range(len(photos)):
        img, label = photos[i]
        assert img.mode == "RGB" and min(img.size) >= 100 and label == -1
    assert any(p.endswith("astronaut.png") for p in photos.paths)
    assert PhotosSource(in_chans=1)[0][0].mode == "L"

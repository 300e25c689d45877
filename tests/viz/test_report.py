"""`vitmae report`: one self-contained HTML page per run."""
import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from vitmae.cli import main
from vitmae.viz import write_report
from vitmae.viz.report import read_series


class Page(HTMLParser):
    """The page's tags with their attributes, and the text of the <pre> and <table> elements by id."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: dict[str, str] = {}
        self._inside: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("pre", "table") and attrs.get("id"):
            self._inside = attrs["id"]
            self.text[self._inside] = ""

    def handle_endtag(self, tag):
        if tag in ("pre", "table"):
            self._inside = None

    def handle_data(self, data):
        if self._inside:
            self.text[self._inside] += data


def images_of(page: Page) -> dict[str, Image.Image]:
    images = {}
    for tag, attrs in page.tags:
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix), attrs["src"][:80]
            images[attrs["id"]] = Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix):])))
    return images


def test_report_of_a_real_run_is_self_contained(tiny_run, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    with open(run / "metrics.jsonl", "a") as f:  # an evaluation line, then half a line still being written
        f.write(json.dumps({"step": 8, "epoch": 0.002, "knn_top1": 41.5}) + "\n" + '{"step": 9, "lo')
    summary = json.loads((run / "metrics.json").read_text())  # evaluations as fine-tuning keeps them
    summary["history"] = [{"epoch": 1, "step": 4, "top1": 50.0, "top5": 90.0, "loss": 1.5},
                          {"epoch": 2, "step": 8, "top1": 60.0, "top5": 95.0, "loss": 1.2}]
    (run / "metrics.json").write_text(json.dumps(summary))
    series = read_series(run)
    assert {"loss", "lr", "img_s", "knn_top1", "val_top1", "val_top5", "val_loss"} <= set(series)
    assert series["val_top1"] == ([4, 8], [50.0, 60.0]) and series["loss"][0] == [2, 4, 6, 8]

    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out == f"wrote {run / 'report.html'}\n"
    page = Page((run / "report.html").read_text())
    images = images_of(page)
    assert {"plot-loss", "plot-lr", "plot-accuracy", "plot-throughput", "grid-epoch-000", "grid-final"} <= set(images)
    for image in images.values():
        assert image.format == "PNG" and image.width > 100
        image.verify()
    # Nothing is fetched: no scripts, stylesheets or frames, no address outside the page.
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe")]
    assert not [a for _, attrs in page.tags for k, a in attrs.items() if k in ("src", "href") and "://" in a]
    assert "data: fashion-mnist" in page.text["config"] and "max_steps: 8" in page.text["config"]
    assert "heldout_loss_end" in page.text["summary"] and "img_s" in page.text["summary"]


def test_report_without_evaluations_has_no_accuracy_plot(tiny_run, tmp_path):
    out = write_report(tiny_run, tmp_path / "elsewhere" / "r.html")
    images = images_of(Page(out.read_text()))
    assert "plot-loss" in images and "plot-accuracy" not in images


def test_report_of_a_missing_or_non_run_directory_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_report_of_a_run_without_grids_has_no_reconstructions_section(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    shutil.rmtree(run / "reconstructions")  # as a fine-tuning run: no pictures
    text = write_report(run).read_text()
    assert "Reconstructions" not in text and "<h2>Curves</h2>" in text
    assert "<h2>Reconstructions</h2>" in write_report(tiny_run, tmp_path / "r.html").read_text()


def test_grid_text_grows_with_the_panels():
    """Captions stay legible when a grid of large images is shown scaled down to half a page."""
    import numpy as np

    from vitmae.viz.reconstruction import panel_grid

    def header_height(size: int) -> int:
        column = np.full((1, size, size, 3), 255, np.uint8)
        grid = np.asarray(panel_grid([column] * 4, ["reconstruction"] * 4, title="t").convert("L"))
        rows = np.flatnonzero((grid[: grid.shape[0] - size] < 128).any(axis=1))  # dark text above the tiles
        return rows[-1] - rows[0]

    small, large = header_height(28), header_height(448)
    assert large > 2.5 * small

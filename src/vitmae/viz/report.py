"""`vitmae report RUN_DIR`: one self-contained HTML page for a run (every picture embedded as base64, no
external asset), readable from a file without a server: curves (a segmentation run's mIoU history among
them), a pre-training run's reconstructions, a segmentation run's predictions at each evaluation, summary
and config."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's state alone
from PIL import Image

from ..errors import ConfigError

MAX_GRIDS = 12  # grids of a kind shown, evenly spread over the run (first and last always), two a row
Series = dict[str, tuple[list[float], list[float]]]  # name -> (steps, values)

# Which series go on which plot: (element id, title, y label, does a key belong).
PLOTS = [
    ("plot-loss", "loss", "loss", lambda key: "loss" in key),
    ("plot-lr", "learning rate", "lr", lambda key: key == "lr"),
    ("plot-accuracy", "accuracy", "top-1 / top-5 (%)", lambda key: any(t in key for t in ("top1", "top5", "acc"))),
    ("plot-segmentation", "segmentation", "mIoU / mAcc / aAcc (%)", lambda key: key.endswith(("mIoU", "mAcc", "aAcc"))),
    ("plot-throughput", "throughput", "images / s", lambda key: key == "img_s"),
]

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; } td { padding: 2px 12px 2px 0; }
img { max-width: 100%; } .plot { width: 49%; }
figure { display: inline-block; width: 48%; margin: 0 1% 1em 0; vertical-align: top; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; }
"""


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report.html)."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report.html"
    text = report_html(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def report_html(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if not any((run_dir / name).is_file() for name in ("metrics.jsonl", "metrics.json", "config.yaml")):
        raise ConfigError(f"{run_dir} is not a run directory: no metrics.jsonl, metrics.json or config.yaml")
    series = read_series(run_dir)
    reconstructions = grid_figures(run_dir / "reconstructions", "grid")  # pre-training runs draw them
    predictions = grid_figures(run_dir / "predictions", "predictions")  # segmentation runs draw these
    sections = [
        f"<h1>{html.escape(run_dir.resolve().name)}</h1><p>{html.escape(str(run_dir.resolve()))}</p>",
        "<h2>Summary</h2>" + summary_table(run_dir / "metrics.json"),
        "<h2>Curves</h2>" + curves(series),
        *(["<h2>Reconstructions</h2>" + reconstructions] if reconstructions else []),
        *(["<h2>Predictions on validation images</h2>" + predictions] if predictions else []),
        "<h2>Config</h2>" + config_block(run_dir / "config.yaml"),
    ]
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>vitmae report: {html.escape(run_dir.resolve().name)}</title><style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(sections) + "\n</body></html>\n")


def read_series(run_dir: Path) -> Series:
    """Every numeric metric of the run against the step."""
    series: Series = {}
    for prefix, record in _records(run_dir):
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            continue
        for key, value in record.items():
            if key not in ("step", "epoch", "time_s") and _is_number(value):
                steps, values = series.setdefault(prefix + key, ([], []))
                steps.append(record["step"])
                values.append(value)
    return series


def _records(run_dir: Path) -> Iterator[tuple[str, Any]]:
    """(name prefix, record): the lines of metrics.jsonl (unreadable ones are passed over: a run being
    written may end in half a line), then the evaluations a finished run keeps in metrics.json:
    `history` (fine-tuning, on the validation set) as val_top1, ..., `knn_history` as knn_top1, ..."""
    log = run_dir / "metrics.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            yield "", json.loads(line)
        except ValueError:
            continue
    for key, entries in _summary(run_dir / "metrics.json").items():
        if key.endswith("history") and isinstance(entries, list):
            prefix = (key.removesuffix("history").rstrip("_") or "val") + "_"
            yield from ((prefix, entry) for entry in entries)


def curves(series: Series) -> str:
    parts = []
    for element_id, title, ylabel, belongs in PLOTS:
        chosen = {key: xy for key, xy in series.items() if belongs(key)}
        if chosen:
            parts.append(_img(_plot(chosen, title, ylabel), element_id, title, "plot"))
    return "\n".join(parts) or "<p>No metrics logged yet (metrics.jsonl is missing or empty).</p>"


def _plot(series: Series, title: str, ylabel: str) -> bytes:
    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    ax = fig.add_subplot()
    for key, (steps, values) in sorted(series.items()):
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def grid_figures(folder: Path, id_prefix: str) -> str:
    """The PNG grids of `folder` in the order they were drawn (by their PNG text `step` where they have one,
    else by name: epoch-000 ... epoch-NNN, final), captioned by their text `caption`, else their name."""
    grids = []
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        with Image.open(path) as image:
            text = getattr(image, "text", {})
        grids.append((int(text.get("step", 0)), path, text.get("caption", path.stem)))
    grids.sort(key=lambda grid: grid[0])  # stable: the names' order where no step is recorded
    if len(grids) > MAX_GRIDS:
        grids = [grids[round(i * (len(grids) - 1) / (MAX_GRIDS - 1))] for i in range(MAX_GRIDS)]
    figures = [f"<figure>{_img(path.read_bytes(), f'{id_prefix}-{path.stem}', caption)}"
               f"<figcaption>{html.escape(caption)}</figcaption></figure>" for _, path, caption in grids]
    return "\n".join(figures)


def _summary(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def summary_table(path: Path) -> str:
    """The run's numbers and words; a record of a few of them (a video run's `target`: what its loss compared
    the predictions with, and its masking) on one row."""
    summary = _summary(path)
    rows = [f"<tr><td>{html.escape(key)}</td><td>{html.escape(_format(value))}</td></tr>"
            for key, value in summary.items() if _is_number(value) or isinstance(value, str)]
    rows += [f"<tr><td>{html.escape(key)}</td><td>{html.escape(', '.join(f'{k} {_format(v)}' for k, v in value.items()))}"
             "</td></tr>" for key, value in summary.items()
             if key != "model" and isinstance(value, dict) and 0 < len(value) <= 8
             and all(_is_number(v) or isinstance(v, (str, bool)) or v is None for v in value.values())]
    if not rows:
        return "<p>No metrics.json (the run has not ended).</p>"
    return f"<table id=\"summary\">{''.join(rows)}</table>"


def config_block(path: Path) -> str:
    if not path.is_file():
        return "<p>No config.yaml in this run.</p>"
    return f"<pre id=\"config\">{html.escape(path.read_text(encoding='utf-8'))}</pre>"


def _img(png: bytes, element_id: str, alt: str, css_class: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<img id=\"{element_id}\" class=\"{css_class}\" alt=\"{html.escape(alt)}\" "
            f"src=\"data:image/png;base64,{data}\">")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)

"""Pictures for the README, from a pre-training run (default runs/demo, which `make demo` makes):

    .venv/bin/python scripts/readme_pictures.py [RUN_DIR] [--out docs/images]

- reconstructions.png: the run's final reconstruction grid (RUN_DIR/reconstructions/final.png);
- attention.png: what `vitmae attention` draws for the first example image;
- demo.png: `vitmae demo` with the run's checkpoint in headless Chromium, the first example uploaded.
Needs the dev extra (gradio, playwright) and Debian's chromium (`make setup` installs both).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

from browser import headless_page
from vitmae.demo import bundled_examples, serve
from vitmae.viz import attention_file, load_for_viewing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot_demo(run_dir: Path, image: str, out: Path) -> None:
    app, url = serve(run_dir, port=free_port())
    try:
        with headless_page(url, width=1300, height=820) as (page, _):
            page.set_input_files("#image input[type=file]", image)
            page.wait_for_selector("#pasted img", timeout=60_000)
            page.wait_for_timeout(500)  # let the four panels finish painting
            page.screenshot(path=str(out))
    finally:
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--out", default="docs/images", type=Path)
    args = parser.parse_args()
    final = args.run_dir / "reconstructions" / "final.png"
    if not final.is_file():
        sys.exit(f"{final} does not exist: finish the run first (`make demo` makes runs/demo)")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final, args.out / "reconstructions.png")
    model, _, _ = load_for_viewing(args.run_dir)
    example = bundled_examples(model.config.in_chans)[0]  # a Fashion-MNIST test image for 1-channel runs
    attention_file(args.run_dir, example, args.out / "attention.png")
    screenshot_demo(args.run_dir, example, args.out / "demo.png")
    for name in ("reconstructions.png", "attention.png", "demo.png"):
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

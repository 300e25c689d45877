"""The Gradio demo (`pip install vitmae[demo]`): `create_app(model, mean, std, examples)` builds the page,
`serve(checkpoint, port)` loads a checkpoint and serves it on localhost."""
from .app import bundled_examples, create_app, headless_page, launch, predict, serve, toggle_patch

__all__ = ["bundled_examples", "create_app", "headless_page", "launch", "predict", "serve", "toggle_patch"]

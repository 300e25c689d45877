"""The Gradio demo (`pip install vitmae[demo]`): `create_app(model, mean, std, examples)` builds the page of a
masked autoencoder, `serve(checkpoint, port)` loads a checkpoint and serves it on localhost;
`create_segmentation_app(run, examples)` and `serve_segmentation(run, port)` do the same for a segmentation
run (`segment_upload`: what its page shows of an image), `create_detection_app(run, examples)` and
`serve_detection(run, port)` for a detection run (`detect_upload`: what its page shows of an image)."""
from .app import (bundled_examples, create_app, create_detection_app, create_segmentation_app, detect_upload,
                  headless_page, launch, predict, segment_upload, serve, serve_detection, serve_segmentation,
                  toggle_patch)

__all__ = ["bundled_examples", "create_app", "create_detection_app", "create_segmentation_app", "detect_upload",
           "headless_page", "launch", "predict", "segment_upload", "serve", "serve_detection", "serve_segmentation",
           "toggle_patch"]

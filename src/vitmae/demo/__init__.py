"""The Gradio demo (`pip install vitmae[demo]`): `create_app(model, mean, std, examples)` builds the page of a
masked autoencoder (`reconstruct_upload`: what it shows of an image), `serve(checkpoint, port)` loads a
checkpoint and serves it on localhost; `create_segmentation_app` and `serve_segmentation` do the same for a
segmentation run (`segment_upload`: what its page shows of an image), `create_detection_app` and
`serve_detection` for a detection run (`detect_upload`), each given the family's inference (`vitmae demo`
asks the run's family: families.dense.segment.serve, .detect.serve)."""
from .app import (bundled_examples, create_app, create_detection_app, create_segmentation_app, detect_upload,
                  launch, reconstruct_upload, run_examples, segment_upload, serve, serve_detection,
                  serve_segmentation, toggle_patch)

__all__ = ["bundled_examples", "create_app", "create_detection_app", "create_segmentation_app", "detect_upload",
           "launch", "reconstruct_upload", "run_examples", "segment_upload", "serve", "serve_detection",
           "serve_segmentation", "toggle_patch"]

"""Pictures of what a model sees: reconstructions (of clips too: `viz.video`), attention maps, dense predictions (mask overlays, grids of
true and predicted masks, drawn detections; `viz.dense`), and the HTML report of a run."""
from .attention import attention_file, attention_grid, attention_probs, cls_attention
from .reconstruction import (Reconstruction, image_tensor, load_for_viewing, load_images, load_mask,
                             mask_from_picture, normalization_of, reconstruct, reconstruct_files,
                             reconstruct_image_files, reconstruct_masked, reconstruction_grid, reconstruction_panels,
                             save_reconstruction_grid)
from .video import load_clips, reconstruct_clip_files
from .report import report_html, write_report

__all__ = ["Reconstruction", "attention_file", "attention_grid", "attention_probs", "cls_attention",
           "image_tensor", "load_for_viewing", "load_images", "load_mask", "mask_from_picture",
           "load_clips", "normalization_of", "reconstruct", "reconstruct_clip_files", "reconstruct_files",
           "reconstruct_image_files", "reconstruct_masked", "reconstruction_grid",
           "reconstruction_panels", "report_html", "save_reconstruction_grid", "write_report"]

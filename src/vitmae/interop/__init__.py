"""Checkpoint interop: load official, Hugging Face, timm and our own checkpoints into our models, and
export them to any of these formats.

    model = load_pretrained("mae_pretrain_vit_base.pth")      # encoder only: warns, decoder fresh
    model = load_pretrained("hf-dir/", img_size=448)          # position tables resized
    export(model, "out-dir/", "hf")                           # loads in every transformers version

The modules, from the bottom: `safe_load` (pickles without code, CheckpointError), `hub` (the local
Hugging Face cache), `keymaps` (key names of every layout), `checkpoint` (what a reader returns),
`architecture` (a checkpoint's ModelConfig), one module per format (`vitmae_format`, `official`, `timm`,
`hf`: each reads and writes its files), `formats` (which reader a path needs), `loading`, `export` and
`describe`. This package only gathers their public names (docs/architecture.md, "Checkpoint interop").
"""
from .architecture import CONVENTION_EPS
from .checkpoint import FORMATS, Checkpoint
from .describe import describe
from .export import CLASSIFIER_FORMATS, convert, export, export_classifier
from .formats import detect_format, read_checkpoint
from .hf import InexactExportWarning
from .loading import MissingDecoderWarning, is_fine_tuned, load_classifier, load_encoder, load_pretrained
from .safe_load import CheckpointError, UnsafeCheckpointError, load_torch_file
from .timm import timm_args, timm_create_kwargs
from .vitmae_format import load_vitmae, resolve_checkpoint, save_vitmae

__all__ = ["CLASSIFIER_FORMATS", "CONVENTION_EPS", "Checkpoint", "CheckpointError", "FORMATS",
           "InexactExportWarning", "MissingDecoderWarning", "UnsafeCheckpointError", "convert", "describe", "detect_format", "export",
           "export_classifier", "is_fine_tuned", "load_classifier", "load_encoder", "load_pretrained",
           "load_torch_file", "load_vitmae", "read_checkpoint", "resolve_checkpoint", "save_vitmae",
           "timm_args", "timm_create_kwargs"]

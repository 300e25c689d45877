"""vitmae: Masked Autoencoder pre-training of Vision Transformers, and transfer of the encoder.

    import vitmae
    model = vitmae.create_model("mae_vit_base_patch16")          # or load_pretrained("mae_pretrain_vit_base.pth")
    out = model(images)                                          # MAEOutput(loss, pred, mask, ids_restore)
    features = model.encode(images)                              # (N, 1 + L, D), deterministic
    maps = model.encoder.forward_intermediates(images, indices=4)  # the last 4 blocks as (N, D, H/p, W/p)
    vitmae.export(model, "hf-model/", "hf")                      # or "timm", "official", "vitmae"
    classifier = vitmae.load_classifier("runs/pretrain", num_classes=10)  # the encoder with a new head

Tasks, from Python as from the command line: `vitmae.tasks.TASKS["finetune"].run(FinetuneOptions(...))`.
"""
from .interop import export, load_classifier, load_pretrained
from .model import PRESETS, MAEOutput, MaskedAutoencoder, ModelConfig, ViTClassifier, ViTEncoder, create_model

__version__ = "0.1.0"
__all__ = ["PRESETS", "MAEOutput", "MaskedAutoencoder", "ModelConfig", "ViTClassifier", "ViTEncoder",
           "create_model", "export", "load_classifier", "load_pretrained"]

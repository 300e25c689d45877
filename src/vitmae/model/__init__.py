from .mae import MAEOutput, MaskedAutoencoder, create_model
from .masking import Masking, make_noise, mask_from_noise
from .vit import Block, ViTEncoder, sincos_pos_embed

__all__ = ["Block", "MAEOutput", "MaskedAutoencoder", "Masking", "ViTEncoder", "create_model",
           "make_noise", "mask_from_noise", "sincos_pos_embed"]

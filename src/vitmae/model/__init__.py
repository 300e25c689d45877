from .classifier import POOLS, ViTClassifier, from_pretrained_encoder, pool_features
from .config import POS_EMBED_RESIZE, PRESETS, ModelConfig, model_config, to_2tuple
from .mae import MAEDecoder, MAEOutput, MaskedAutoencoder, create_model
from .masking import STRATEGIES, Masking, make_noise, mask_from_noise
from .grid import Patching, sincos_pos_embed
from .flat_names import flat_named_parameters, flat_state_dict, load_flat_state_dict
from .vit import Block, ViTEncoder

__all__ = ["Block", "MAEDecoder", "MAEOutput", "MaskedAutoencoder", "Masking", "ModelConfig",
           "POOLS", "Patching", "POS_EMBED_RESIZE", "PRESETS", "STRATEGIES", "ViTClassifier", "ViTEncoder", "create_model",
           "flat_named_parameters", "flat_state_dict", "from_pretrained_encoder", "load_flat_state_dict",
           "make_noise", "mask_from_noise", "model_config", "pool_features", "sincos_pos_embed", "to_2tuple"]

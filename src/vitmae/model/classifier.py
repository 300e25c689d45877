"""The fine-tuning / probing model: a ViT encoder, a pooling step and a linear head.

Parameter names are timm's `VisionTransformer` (and the official `models_vit.py`), so a state dict moves
between them as it is:
- `global_pool="avg"` (the official fine-tuning default; `pool="mean"` in vitmae's options): mean of the
  patch tokens, then `fc_norm`, then `head`; there is no final `norm` (timm: `global_pool='avg',
  fc_norm=True`);
- `global_pool="token"` (`pool="cls"`): the final `norm` on every token, then `head` on the cls token, no
  `fc_norm` (timm: `global_pool='token'`; this is also what Hugging Face's `ViTForImageClassification`
  computes).

The position table is learned, as in official fine-tuning (initialised from the checkpoint's table);
VideoMAE's fixed table stays fixed, as in VideoMAE's fine-tuning.

A video classifier is VideoMAE's: average pooling is the mean of all patch tokens (there is no cls token),
then `fc_norm` and `head`; token pooling (transformers' `use_mean_pooling=False`) reads token 0 after the
final norm, which without a cls token is the first patch token, as transformers does.
"""
from __future__ import annotations

from torch import Tensor, nn

from .config import ModelConfig
from .flat_names import flat_named_parameters
from .vit import ViTEncoder, param_groups, vit_layer_id

# The pooling of image features, in vitmae's options (cls | mean), and timm's name for each.
POOLS = ("cls", "mean")
GLOBAL_POOL = {"cls": "token", "mean": "avg"}
GLOBAL_POOLS = tuple(GLOBAL_POOL.values())
HEAD_INIT_STD = 2e-5  # official main_finetune.py: trunc_normal_(model.head.weight, std=2e-5)


class ViTClassifier(nn.Module):
    flat_components = ("encoder",)  # files name its tensors as timm's VisionTransformer: no prefix

    def __init__(self, config: ModelConfig, num_classes: int, global_pool: str = "avg",
                 drop_path_rate: float = 0.0):
        super().__init__()
        global_pool = GLOBAL_POOL.get(global_pool, global_pool)
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {POOLS + GLOBAL_POOLS}, not {global_pool!r}")
        self.config, self.num_classes, self.global_pool = config, num_classes, global_pool
        self.drop_path_rate = drop_path_rate
        # The MAE initialisation, so that "from scratch" differs from "from MAE" by the weights only.
        self.encoder = ViTEncoder(config, drop_path_rate).learn_pos_embed()
        if global_pool == "avg":
            self.encoder.norm = nn.Identity()
            eps = config.norm_eps if config.fc_norm_eps is None else config.fc_norm_eps
            self.fc_norm = nn.LayerNorm(config.embed_dim, eps=eps)
        else:
            self.fc_norm = nn.Identity()
        self.head = nn.Linear(config.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_head()

    def init_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=HEAD_INIT_STD)
            nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of the encoder's blocks in backward."""
        self.encoder.set_grad_checkpointing(enable)

    # -- forward ---------------------------------------------------------------------------------------
    def forward_features(self, images: Tensor) -> Tensor:
        """All tokens (N, P + L, D), after the final norm when there is one (timm's forward_features)."""
        return self.encoder.encode(images)

    encode = forward_features

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        prefix = self.encoder.num_prefix_tokens
        x = tokens[:, prefix:].mean(dim=1) if self.global_pool == "avg" else tokens[:, 0]
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    # -- optimisation ----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Layer ids run 0 (embeddings) .. depth + 1 (norms and head)."""
        return len(self.encoder.blocks) + 1

    def layer_id(self, name: str) -> int:
        """Official `get_layer_id_for_vit` (on the flat names): patch_embed, cls_token, pos_embed -> 0;
        block i -> i + 1; the rest (fc_norm, norm, head) -> depth + 1. The lr scale is
        layer_decay ** (depth + 1 - id)."""
        return vit_layer_id(name, self.num_layers)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", *self.encoder.stored_tables()}

    def param_groups(self, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """AdamW groups of the official fine-tuning (`param_groups_lrd`): no decay on 1-D parameters,
        biases, the cls token and the position table; lr scaled per layer."""
        return param_groups(self, weight_decay, self.layer_id, layer_decay, self.num_layers,
                            no_decay=self.no_weight_decay())


def from_pretrained_encoder(encoder: ViTEncoder | nn.Module, num_classes: int, global_pool: str = "avg",
                            drop_path_rate: float = 0.0) -> ViTClassifier:
    """A classifier whose encoder is `encoder`'s (a ViTEncoder, or any model holding one: a
    `load_pretrained` result, another classifier).

    As official fine-tuning: with `global_pool="avg"` the pre-trained final `norm` is not used and
    `fc_norm` starts at (1, 0); the head starts at trunc_normal(std 2e-5); the position table is copied
    and becomes learned."""
    encoder = getattr(encoder, "encoder", encoder)
    config = encoder.config
    if tuple(encoder.grid_size) != tuple(config.grid_size):
        raise ValueError("the encoder's patch grid does not match its config")
    model = ViTClassifier(config, num_classes, global_pool, drop_path_rate)
    state = encoder.state_dict()
    if model.global_pool == "avg":
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    allowed = set()
    if model.global_pool == "token" and not any(k.startswith("norm.") for k in state):
        allowed |= {"norm.weight", "norm.bias"}  # a fine-tuned avg-pool encoder has no final norm: fresh
    if unexpected or set(missing) - allowed:
        raise ValueError(f"encoder weights do not fit the classifier: missing {sorted(set(missing) - allowed)}, "
                         f"unexpected {sorted(unexpected)}")
    return model


def pool_features(tokens: Tensor, pool: str, num_prefix_tokens: int = 1) -> Tensor:
    """(N, D) features from encoder tokens (N, P + L, D), P the encoder's prefix (cls) tokens: token 0 (the
    cls token; without one, VideoMAE's, the first patch token, as transformers reads it) or the mean patch
    token."""
    if pool == "cls":
        return tokens[:, 0]
    if pool == "mean":
        return tokens[:, num_prefix_tokens:].mean(dim=1)
    raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")


__all__ = ["GLOBAL_POOL", "GLOBAL_POOLS", "POOLS", "ViTClassifier", "flat_named_parameters",
           "from_pretrained_encoder", "pool_features"]

"""transformers' VideoMAE models with random weights, clips in both layouts, masks, and the official VideoMAE
key layout spelled out from REFERENCE.md (not from vitmae's key tables, which the tests check)."""
from __future__ import annotations

import torch

from vitmae.model import MaskedAutoencoder

from .conftest import assert_close_rel

# Small configs with the hub's eps 1e-12 and every field varied somewhere: tubelet, frames, size (one not
# square), channels 1, 2 and 3, the target normalised or not, query/value biases or none, mean pooling.
VIDEO_CONFIGS = {
    "rgb-normpix": dict(image_size=16, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2,
                        norm_pix_loss=True, use_mean_pooling=False),
    "rgb-pixels-tubelet4-meanpool": dict(image_size=32, patch_size=16, num_channels=3, num_frames=8, tubelet_size=4,
                                         norm_pix_loss=False, use_mean_pooling=True),
    "gray-tubelet1-wide": dict(image_size=[16, 24], patch_size=8, num_channels=1, num_frames=3, tubelet_size=1,
                               norm_pix_loss=True, use_mean_pooling=False, qv_bias=False),
    "two-channels-deeper-decoder": dict(image_size=24, patch_size=8, num_channels=2, num_frames=6, tubelet_size=3,
                                        norm_pix_loss=True, use_mean_pooling=False, num_hidden_layers=3,
                                        decoder_num_hidden_layers=3, decoder_intermediate_size=40),
}


def hf_videomae(kind: str = "VideoMAEForPreTraining", seed: int = 0, **kwargs):
    """A transformers VideoMAE model with random weights: every parameter (LayerNorms and biases too) moved
    off its initial value, so that a wrong mapping shows."""
    import transformers

    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                decoder_hidden_size=16, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
                decoder_intermediate_size=32, layer_norm_eps=1e-12, num_labels=5)
    torch.manual_seed(seed)
    model = getattr(transformers, kind)(transformers.VideoMAEConfig(**{**base, **kwargs})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def hf_clips(hf, n: int = 2, seed: int = 1) -> torch.Tensor:
    """(B, T, C, H, W), transformers' layout."""
    c = hf.config
    h, w = (c.image_size, c.image_size) if isinstance(c.image_size, int) else c.image_size
    return torch.randn(n, c.num_frames, c.num_channels, h, w, generator=torch.Generator().manual_seed(seed))


def tube_mask(hf, n: int = 2, ratio: float = 0.5, seed: int = 2) -> torch.Tensor:
    """VideoMAE's tube mask as `bool_masked_pos`: int(ratio * S) of the S positions of a slice removed, the
    same in every slice."""
    c = hf.config
    h, w = (c.image_size, c.image_size) if isinstance(c.image_size, int) else c.image_size
    per_slice, slices = (h // c.patch_size) * (w // c.patch_size), c.num_frames // c.tubelet_size
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(per_slice, generator=g) < int(ratio * per_slice) for _ in range(n)]
    return torch.stack(rows).repeat(1, slices)


def assert_same_pretraining(hf, ours: MaskedAutoencoder, bool_masked_pos: torch.Tensor, **forward) -> None:
    """Loss and the masked tokens' predictions of `ours` (called with `forward`) equal transformers' on the
    same clips and mask."""
    x = hf_clips(hf)
    with torch.no_grad():
        theirs = hf(pixel_values=x, bool_masked_pos=bool_masked_pos)
        out = ours.eval()(x.transpose(1, 2), **forward)
    assert torch.equal(out.mask.bool(), bool_masked_pos)
    assert_close_rel(out.loss, theirs.loss)
    assert_close_rel(out.pred[bool_masked_pos].reshape(theirs.logits.shape), theirs.logits)


def official_state(hf, fine_tuned: bool = False) -> dict[str, torch.Tensor]:
    """transformers' weights in the official VideoMAE names (REFERENCE.md, "Official -> transformers keys"):
    pre-training files name the halves `encoder.` / `decoder.`, fine-tuned ones have the encoder at the top
    with `fc_norm` and `head`."""
    inner = [("layernorm_before", "norm1"), ("layernorm_after", "norm2"), ("attention.output.dense", "attn.proj"),
             ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"),
             ("attention.attention.query.bias", "attn.q_bias"), ("attention.attention.value.bias", "attn.v_bias")]
    encoder = "" if fine_tuned else "encoder."
    out, qkv = {}, {}
    for key, value in hf.state_dict().items():
        key = key.replace("videomae.embeddings.patch_embeddings.projection", encoder + "patch_embed.proj")
        key = key.replace("videomae.encoder.layer.", encoder + "blocks.").replace("videomae.layernorm", encoder + "norm")
        key = key.replace("decoder.decoder_layers.", "decoder.blocks.").replace("classifier.", "head.")
        for theirs, official in inner:
            key = key.replace(theirs, official)
        for part in ("query", "key", "value"):
            if f"attention.attention.{part}.weight" in key:
                qkv.setdefault(key.split(f"attention.attention.{part}")[0] + "attn.qkv.weight", {})[part] = value
                break
        else:
            out[key] = value.clone()
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]])  # rows: q, k, v
    return out

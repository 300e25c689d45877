"""Opt-in FP8 training (`--fp8`): the transformer blocks' linear layers compute in float8 through torchao.

torchao's `Float8Linear` keeps the weights, optimizer state and checkpoints as they are (the same
parameters, names and dtypes); only the matrix products cast their inputs, weights and output gradients
to float8 with a dynamic per-tensor scale (e4m3 forward, e5m2 for gradients). On GPUs with FP8 tensor
cores (H100 and later) that roughly doubles the matrix products' throughput; elsewhere torchao emulates
it (slower; useful to check the loss curve). The patch embedding, the decoder's embedding and
prediction and classifier heads stay in the run's precision: they are small and sensitive.
"""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError

# FP8 matrix products need both dimensions divisible by 16.
FP8_ALIGNMENT = 16


def _in_a_block(module: nn.Module, name: str) -> bool:
    blocks = ("blocks", "decoder_blocks")  # of the encoder and the decoder, wherever they are held
    return (isinstance(module, nn.Linear) and any(part in blocks for part in name.split("."))
            and module.in_features % FP8_ALIGNMENT == 0 and module.out_features % FP8_ALIGNMENT == 0)


def convert_to_fp8(model: nn.Module) -> int:
    """Swap the linear layers of the encoder's and decoder's blocks for torchao's Float8Linear, in place;
    returns how many were swapped."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        raise ConfigError("--fp8 needs torchao: pip install 'vitmae[fp8]'") from None
    # The weight gradient's product runs over the token count (batch x tokens), which a batch with
    # skipped images or an odd size does not keep divisible by 16: let torchao pad it.
    convert_to_float8_training(model, module_filter_fn=_in_a_block, config=Float8LinearConfig(pad_inner_dim=True))
    swapped = sum(type(m).__name__ == "Float8Linear" for m in model.modules())
    if swapped == 0:
        raise ConfigError("--fp8: no linear layer of this model has dimensions divisible by 16")
    return swapped

"""What every model's activation checkpointing must keep: the gradients, with less kept for backward."""
from collections.abc import Callable

import torch
from torch import Tensor, nn


def gradients(model: nn.Module, loss_of: Callable[[nn.Module], Tensor], checkpointing: bool
              ) -> tuple[dict[str, Tensor], int]:
    """The parameters' gradients of `loss_of(model)` and the number of values the forward kept for
    backward, from the same random state (dropout, drop path)."""
    model.set_grad_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    kept: list[int] = []

    def pack(t: Tensor) -> Tensor:
        kept.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(model)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(kept)


def assert_checkpointing_keeps_the_gradients(model: nn.Module, loss_of: Callable[[nn.Module], Tensor]) -> None:
    plain, kept_plain = gradients(model, loss_of, False)
    checkpointed, kept_checkpointed = gradients(model, loss_of, True)
    assert plain and plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6, rtol=0), name
    assert kept_checkpointed < kept_plain  # the blocks' activations are recomputed, not kept

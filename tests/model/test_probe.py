"""The linear probe folded into one classifier computes what encoder + probe compute."""
import torch

from vitmae.model import create_model
from vitmae.model.probe import LinearProbe, probe_to_classifier

TINY_ARCH = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def test_probe_folding_is_exact():
    torch.manual_seed(0)
    encoder = create_model("mae_vit_micro_patch4_28", **TINY_ARCH).eval()
    probe = LinearProbe(32, 10, encoder.config)
    probe.train()
    with torch.no_grad():
        probe(torch.randn(64, 32) * 3 + 1)  # gives BatchNorm running statistics
        probe.head.weight.normal_()
    probe.eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = probe(encoder.encode(x)[:, 0])
        assert torch.allclose(probe_to_classifier(encoder, probe)(x), expected, atol=1e-5)

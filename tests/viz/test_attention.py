"""Attention maps of the cls token and `vitmae attention`."""
import pytest
import torch
from PIL import Image

from tests.viz.conftest import tiny_model
from vitmae.cli import main
from vitmae.config import ConfigError
from vitmae.viz import attention_grid, attention_probs, cls_attention

MEAN, STD = (0.2860,), (0.3530,)


def test_probabilities_have_one_row_per_token_and_sum_to_one():
    model = tiny_model()
    images = torch.randn(3, 1, 28, 28)
    for layer in (0, 1, -1):
        probs = attention_probs(model, images, layer)
        assert probs.shape == (3, 2, 50, 50)
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(3, 2, 50))
    maps = cls_attention(model, images)
    assert maps.shape == (3, 2, 7, 7)
    assert (maps.flatten(2).sum(-1) < 1).all()  # the cls token's attention to itself is left out
    assert not torch.allclose(attention_probs(model, images, 0), attention_probs(model, images, 1))


def test_probabilities_are_those_of_the_tokens_entering_the_block():
    """The same block input the encoder's own forward pass gives that block (caught with a hook)."""
    model = tiny_model()
    images = torch.randn(2, 1, 28, 28)
    seen = {}
    hook = model.encoder.blocks[1].register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    model.encode(images)
    hook.remove()
    block = model.encoder.blocks[1]
    torch.testing.assert_close(attention_probs(model, images, -1), block.attn.attention_probs(block.norm1(seen["x"])))


def test_a_layer_that_does_not_exist_is_a_user_error():
    with pytest.raises(ConfigError, match="layer 2 does not exist: the encoder has 2 blocks"):
        attention_probs(tiny_model(), torch.randn(1, 1, 28, 28), 2)


def test_grid_has_the_image_one_column_per_head_and_the_mean():
    model = tiny_model(num_heads=4)
    images = torch.randn(2, 1, 28, 28)
    grid = attention_grid(images, cls_attention(model, images), MEAN, STD)
    assert grid.width >= 6 * 140 and grid.height >= 2 * 140


def test_cli_attention_writes_a_png(tiny_run, fashion_pngs, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["attention", "--checkpoint", str(tiny_run), "--layer", "0", str(fashion_pngs[0]),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    picture = Image.open(out)
    picture.verify()
    assert picture.format == "PNG" and picture.width >= 4 * 140  # image, 2 heads, mean
    assert main(["attention", "--checkpoint", str(tiny_run), "--layer", "5", str(fashion_pngs[0]),
                 "--out", str(out)]) == 2
    assert "layer 5 does not exist" in capsys.readouterr().err

"""Reconstruction pictures, user masks and `vitmae reconstruct`."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.viz.conftest import png_of, tiny_model
from vitmae.cli import main
from vitmae.config import ConfigError
from vitmae.viz import (load_images, load_mask, mask_from_picture, normalization_of, reconstruct_masked,
                        reconstruction_grid, reconstruction_panels)

MEAN, STD = (0.2860,), (0.3530,)


def patch_mask(rec) -> torch.Tensor:
    """(N, L) removed patches of a Reconstruction, read back from its pixel mask (patch 4)."""
    return rec.mask[:, 0, ::4, ::4].flatten(1)


def test_user_mask_is_used_exactly_whatever_its_size():
    model = tiny_model()
    images = torch.randn(2, 1, 28, 28)
    generator = torch.Generator().manual_seed(1)
    for removed in (1, 12, 24, 37, 48):  # float rounding of removed / 49 must not shift a patch
        mask = torch.zeros(49)
        mask[torch.randperm(49, generator=generator)[:removed]] = 1
        rec = reconstruct_masked(model, images, mask=mask)
        assert torch.equal(patch_mask(rec), mask.expand(2, -1))


def test_user_mask_must_remove_some_and_keep_some():
    model = tiny_model()
    for mask in (torch.zeros(49), torch.ones(49)):
        with pytest.raises(ConfigError, match="must remove some and keep some"):
            reconstruct_masked(model, torch.randn(1, 1, 28, 28), mask=mask)


@pytest.mark.parametrize("masking", ["random", "block", "grid"])
def test_strategies_are_seeded_and_keep_the_ratio(masking):
    model = tiny_model()
    images = torch.randn(3, 1, 28, 28)
    first = reconstruct_masked(model, images, 0.75, masking, seed=5)
    again = reconstruct_masked(model, images, 0.75, masking, seed=5)
    other = reconstruct_masked(model, images, 0.75, masking, seed=6)
    assert torch.equal(first.mask, again.mask) and not torch.equal(first.mask, other.mask)
    assert (patch_mask(first).sum(dim=1) == 49 - int(49 * 0.25)).all()


def test_mask_ratio_out_of_range_is_a_user_error():
    with pytest.raises(ConfigError, match="mask ratio"):
        reconstruct_masked(tiny_model(), torch.randn(1, 1, 28, 28), mask_ratio=1.0)


def test_norm_pix_prediction_is_denormalised_with_the_true_patch_statistics():
    """A norm-pix model that predicts its targets perfectly must reconstruct the image itself."""
    model = tiny_model(norm_pix_loss=True)
    images = torch.rand(2, 1, 28, 28)
    model.forward_decoder = lambda *args: model.target(images)
    rec = reconstruct_masked(model, images, 0.75)
    assert rec.denormalised and rec.loss == pytest.approx(0.0, abs=1e-8)
    torch.testing.assert_close(rec.reconstruction, images, atol=1e-3, rtol=0)
    torch.testing.assert_close(rec.pasted, images, atol=1e-3, rtol=0)


def test_panels_gray_out_removed_patches_and_mark_denormalisation():
    model = tiny_model(norm_pix_loss=True)
    rec = reconstruct_masked(model, torch.randn(2, 1, 28, 28), 0.5)
    headers, columns = reconstruction_panels(rec, MEAN, STD)
    assert headers[1] == f"masked {float(rec.mask.mean()):.0%}" and headers[2].endswith("*")
    removed = rec.mask.permute(0, 2, 3, 1).numpy() > 0
    assert (columns[1][removed] == 128).all()
    np.testing.assert_array_equal(columns[1][~removed], columns[0][~removed])
    plain = reconstruct_masked(tiny_model(norm_pix_loss=False), torch.randn(2, 1, 28, 28), 0.5)
    assert not reconstruction_panels(plain, MEAN, STD)[0][2].endswith("*")
    # The de-normalisation note below the grid makes it taller.
    assert reconstruction_grid(rec, MEAN, STD).height > reconstruction_grid(plain, MEAN, STD).height


def test_small_images_are_enlarged_to_a_readable_size():
    rec = reconstruct_masked(tiny_model(), torch.randn(3, 1, 28, 28), 0.75)
    grid = reconstruction_grid(rec, MEAN, STD)
    assert grid.width >= 4 * 140 and grid.height >= 3 * 140  # 28 px panels drawn at 5x


def test_mask_picture_at_any_size_takes_each_patch_majority(tmp_path):
    config = tiny_model().config
    cells = np.zeros((7, 7), np.uint8)
    cells[1:3, 2:6] = 255
    cells[6, 0] = 255
    expected = torch.from_numpy(cells.flatten() > 0).float()
    # The same mask drawn on the patch grid, at the input size and 10x larger.
    for scale in (1, 4, 40):
        path = png_of(cells.repeat(scale, 0).repeat(scale, 1), tmp_path / f"mask-{scale}.png")
        assert torch.equal(load_mask(path, config), expected), scale
    # Majority: a patch three quarters painted is removed, one quarter painted is kept.
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0:4, 0:3] = 255
    pixels[0:4, 4:5] = 255
    mask = mask_from_picture(Image.fromarray(pixels), config)
    assert mask[0] == 1 and mask[1] == 0 and mask.sum() == 1


def test_mask_from_patch_indices_text_or_json(tmp_path):
    config = tiny_model().config
    (tmp_path / "mask.txt").write_text("0 1, 2\n48\n")
    (tmp_path / "mask.json").write_text(json.dumps([0, 1, 2, 48]))
    for name in ("mask.txt", "mask.json"):
        mask = load_mask(tmp_path / name, config)
        assert mask.nonzero().flatten().tolist() == [0, 1, 2, 48]


@pytest.mark.parametrize("content, message", [("1 2 x", "patch indices"), ("[1, 2.5]", "patch indices"),
                                              ("[0, 49]", "outside 0..48"), ("-1", "outside 0..48")])
def test_bad_mask_files_are_user_errors(tmp_path, content, message):
    (tmp_path / "mask.txt").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_mask(tmp_path / "mask.txt", tiny_model().config)


def test_unreadable_mask_picture_and_missing_files(tmp_path):
    config = tiny_model().config
    (tmp_path / "mask.png").write_text("not a png")
    with pytest.raises(ConfigError, match="cannot read mask picture"):
        load_mask(tmp_path / "mask.png", config)
    with pytest.raises(FileNotFoundError):
        load_mask(tmp_path / "none.png", config)
    with pytest.raises(FileNotFoundError):
        load_images([tmp_path / "none.png"], tiny_model(), MEAN, STD)


def test_cli_reconstruct_with_a_user_mask(run_cli, tiny_run, fashion_pngs, tmp_path):
    mask = np.zeros((28, 28), np.uint8)
    mask[:, :16] = 255  # the left 4 of 7 patch columns
    out = tmp_path / "grid.png"
    result = run_cli("reconstruct", "--checkpoint", tiny_run / "checkpoints", "--mask",
                     png_of(mask, tmp_path / "m.png"), "--out", out, *fashion_pngs)
    assert result.stdout.strip() == f"wrote {out}"
    grid = Image.open(out)
    assert grid.format == "PNG" and grid.width >= 4 * 140 and grid.height >= 3 * 140


def test_cli_reconstruct_strategies(tiny_run, fashion_pngs, tmp_path, capsys):
    for masking in ("random", "block", "grid"):
        out = tmp_path / f"{masking}.png"
        assert main(["reconstruct", "--checkpoint", str(tiny_run), "--masking", masking, "--seed", "3",
                     "--mask-ratio", "0.6", "--out", str(out), *map(str, fashion_pngs[:2])]) == 0
        assert capsys.readouterr().out == f"wrote {out}\n" and Image.open(out).format == "PNG"


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{run}", "{tmp}/missing.png"], "image {tmp}/missing.png does not exist"),
    (["--checkpoint", "{tmp}/no-such-run", "{img}"], "no-such-run"),
    (["--checkpoint", "{run}", "--mask", "{tmp}/bad.txt", "{img}"], "patch indices"),
    (["--checkpoint", "{run}", "--mask", "{tmp}/none.png", "{img}"], "mask file {tmp}/none.png does not exist"),
    (["--checkpoint", "{run}", "--mask-ratio", "1.5", "{img}"], "--mask-ratio must be below 1"),
])
def test_cli_reconstruct_user_errors_are_one_line_exit_2(tiny_run, fashion_pngs, tmp_path, capsys, args, message):
    (tmp_path / "bad.txt").write_text("three four")
    values = {"run": str(tiny_run), "tmp": str(tmp_path), "img": str(fashion_pngs[0])}
    assert main(["reconstruct", *[a.format(**values) for a in args], "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitmae reconstruct: error: ")
    assert message.format(**values) in err


def test_normalisation_follows_the_run_the_checkpoint_came_from(tiny_run, tmp_path):
    step = (tiny_run / "checkpoints" / "latest").read_text().strip()
    inside = [tiny_run, tiny_run / "checkpoints", tiny_run / "checkpoints" / step,
              tiny_run / "checkpoints" / step / "model.safetensors"]
    for path in inside:
        assert normalization_of(path, 1) == (MEAN, STD), path  # the run trained on fashion-mnist
    assert normalization_of(tmp_path / "hf-export", 3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_denorm_visible_depends_on_the_visible_pixels_only():
    """--denorm visible: changing the pixels of removed patches leaves the picture unchanged (what the
    model alone gives); --denorm true uses those pixels' statistics, so the picture changes."""
    model = tiny_model(norm_pix_loss=True)
    images = torch.rand(2, 1, 28, 28)
    mask = torch.zeros(49)
    mask[[0, 1, 7, 8, 24, 30, 48]] = 1  # a 2x2 block in a corner, a lone patch, the last one
    altered = images.clone()
    removed = mask.bool().view(7, 7).repeat_interleave(4, 0).repeat_interleave(4, 1)
    altered[:, :, removed] = torch.rand(2, 1, int(removed.sum())) * 5 - 2  # other values, other statistics
    for denorm, same in (("visible", True), ("true", False)):
        a = reconstruct_masked(model, images, mask=mask, denorm=denorm)
        b = reconstruct_masked(model, altered, mask=mask, denorm=denorm)
        for field in ("reconstruction", "pasted"):
            assert torch.equal(getattr(a, field), getattr(b, field)) is same, (denorm, field)
    # A lone removed patch takes the mean statistics of its visible neighbours.
    from vitmae.viz.reconstruction import patch_statistics

    patches = model.patchify(images)
    mean, std = patch_statistics(patches, mask.expand(2, -1), (7, 7), "visible")
    neighbours = [16, 17, 18, 23, 25, 31, 32]  # around patch 24; 30 is removed too
    torch.testing.assert_close(mean[:, 24, 0], patches[:, neighbours].mean(dim=-1).mean(dim=1))
    torch.testing.assert_close(mean[:, 5, 0], patches[:, 5].mean(dim=-1))  # visible: its own
    with pytest.raises(ConfigError, match="unknown denorm"):
        reconstruct_masked(model, images, denorm="oracle")


def test_cli_reconstruct_denorm_flag(tiny_run, fashion_pngs, tmp_path, capsys):
    out = tmp_path / "honest.png"
    assert main(["reconstruct", "--checkpoint", str(tiny_run), "--denorm", "visible", "--out", str(out),
                 str(fashion_pngs[0])]) == 0
    assert Image.open(out).format == "PNG"
    assert main(["reconstruct", "--checkpoint", str(tiny_run), "--denorm", "oracle", "--out", str(out),
                 str(fashion_pngs[0])]) == 2
    assert "unknown --denorm 'oracle'; choose from: true, visible" in capsys.readouterr().err

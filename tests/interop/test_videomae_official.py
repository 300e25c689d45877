"""Official VideoMAE `.pth` files: pre-training ones (`encoder.*`, `decoder.*`, fused qkv with q_bias and
v_bias) and fine-tuned ones, under `model` or `module`, read with the numbers of the same weights in
transformers; what they do not record comes from VideoMAE's convention and is said; our official export
is that layout."""
from __future__ import annotations

import pytest
import torch

from vitmae.interop import CheckpointError, describe, export, load_classifier, load_pretrained
from vitmae.model.flat_names import flat_state_dict

from .conftest import assert_close_rel
from .videomae_helpers import assert_same_pretraining, hf_clips, hf_videomae, official_state, tube_mask

pytest.importorskip("transformers")

# What an official file does not record, given as transformers' values so the numbers can be compared.
SMALL = dict(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
UNRECORDED = dict(num_heads=2, decoder_num_heads=2, norm_eps=1e-12, decoder_norm_eps=1e-5, fc_norm_eps=1e-5,
                  num_frames=4, img_size=16)


@pytest.mark.parametrize("wrapper", ["model", "module"])
def test_an_official_pretraining_file_loads_with_transformers_numbers(tmp_path, wrapper):
    hf = hf_videomae(**SMALL)
    torch.save({wrapper: official_state(hf), "epoch": 799}, tmp_path / "checkpoint.pth")
    ours = load_pretrained(tmp_path / "checkpoint.pth", **UNRECORDED)
    mask = tube_mask(hf)
    assert_same_pretraining(hf, ours, mask, mask=mask)


def test_what_an_official_file_does_not_record_is_videomaes_and_said(tmp_path):
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False, decoder_hidden_size=192,
                     decoder_num_attention_heads=3, decoder_intermediate_size=768)
    torch.save({"model": official_state(hf)}, tmp_path / "checkpoint.pth")
    info = describe(tmp_path / "checkpoint.pth", num_heads=2)
    assumed = info["assumed"]
    assert info["format"] == "official" and info["layout"] == "videomae_official"
    assert info["architecture"]["num_frames"] == 16 and info["architecture"]["img_size"] == [224, 224]
    assert {"num_frames", "img_size", "mask_ratio", "pixel_target", "norm_eps", "decoder_num_heads"} <= set(assumed)
    assert info["architecture"]["decoder_num_heads"] == 3 and info["architecture"]["mask_ratio"] == 0.9
    assert info["architecture"]["tubelet_size"] == 2 and not info["architecture"]["k_bias"]
    with pytest.raises(CheckpointError, match="does not record num_heads.*--num-heads"):
        load_pretrained(tmp_path / "checkpoint.pth")


def test_an_official_fine_tuned_file_is_a_classifier_with_transformers_logits(tmp_path):
    for mean_pooling in (True, False):
        hf = hf_videomae("VideoMAEForVideoClassification", **{**SMALL, "use_mean_pooling": mean_pooling})
        state = official_state(hf, fine_tuned=True)
        assert ("fc_norm.weight" in state) == mean_pooling and "head.weight" in state
        torch.save({"module": state}, tmp_path / "finetuned.pth")
        ours = load_classifier(tmp_path / "finetuned.pth", **UNRECORDED)
        assert ours.global_pool == ("avg" if mean_pooling else "token")
        x = hf_clips(hf)
        with torch.no_grad():
            assert_close_rel(ours(x.transpose(1, 2)), hf(pixel_values=x).logits)


def test_our_official_export_is_the_official_layout_and_reads_back(tmp_path):
    hf = hf_videomae(**SMALL)
    torch.save({"model": official_state(hf)}, tmp_path / "in.pth")
    ours = load_pretrained(tmp_path / "in.pth", **UNRECORDED)
    export(ours, tmp_path / "out.pth", "official")
    written = torch.load(tmp_path / "out.pth", weights_only=True)
    expected = official_state(hf)
    assert written["model"].keys() == expected.keys()
    assert all(torch.equal(written["model"][k], v) for k, v in expected.items())
    again = load_pretrained(tmp_path / "out.pth")  # the record says what the weights cannot
    assert again.config == ours.config
    assert all(torch.equal(a, b) for a, b in zip(flat_state_dict(again).values(), flat_state_dict(ours).values()))


def test_a_video_file_with_a_learned_table_over_all_tokens_is_refused(tmp_path):
    hf = hf_videomae("VideoMAEForVideoClassification", **SMALL)
    state = {**official_state(hf, fine_tuned=True), "pos_embed": torch.zeros(1, 8, 32)}
    torch.save({"model": state}, tmp_path / "f.pth")
    with pytest.raises(CheckpointError, match="stored pos_embed .* not supported"):
        load_classifier(tmp_path / "f.pth", **UNRECORDED)

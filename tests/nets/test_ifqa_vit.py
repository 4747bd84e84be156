import json

import numpy as np
import pytest
import torch

from ifqa_loss.nets.ifqa_vit import IFQAViT

from reference import FIXTURES, pattern_input


def test_state_dict_matches_published_names_and_shapes():
    published = json.loads((FIXTURES / "ifqa_vit_keys.json").read_text())["tensors"]
    with torch.device("meta"):  # ViT-H: names and shapes only, no 2.6 GB allocation
        ours = IFQAViT().state_dict()
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(k, s) for k, s in published]
    assert sum(v.numel() for v in ours.values()) == 656_873_412


@torch.no_grad()
def test_pattern_map_equals_official(ifqa_vit_net):
    out = ifqa_vit_net(pattern_input(224))
    assert out.shape == (1, 1, 224, 224)
    ref = np.load(FIXTURES / "ifqa_vit_pattern_map.npy")
    assert np.abs(out[0, 0].numpy() - ref).max() <= 1e-4


def _tiny() -> IFQAViT:
    return IFQAViT(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=4,
                   decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2).eval()


@torch.no_grad()
def test_tiny_variant_maps_each_patch_to_its_own_pixels():
    torch.manual_seed(0)
    net = _tiny()
    x = torch.rand(2, 3, 28, 28) * 2 - 1
    logits = net.logits(x)
    assert logits.shape == (2, 1, 28, 28)
    # Patch (row 1, col 2) of the 4x4 grid occupies pixels [7:14, 14:21]; its head output
    # (drop the cls token) is laid out row-major inside the patch.
    seq = net.decoder_pred(_decoder_tokens(net, x))[:, 1:]
    torch.testing.assert_close(logits[:, 0, 7:14, 14:21].reshape(2, 49), seq[:, 1 * 4 + 2])


def _decoder_tokens(net, x):
    h = torch.cat([(net.cls_token + net.pos_embed[:, :1]).expand(len(x), -1, -1),
                   net.patch_embed(x) + net.pos_embed[:, 1:]], dim=1)
    for b in net.blocks:
        h = b(h)
    h = net.decoder_embed(net.norm(h)) + net.decoder_pos_embed
    for b in net.decoder_blocks:
        h = b(h)
    return net.decoder_norm(h)


def test_wrong_input_size_is_refused_with_the_expected_size():
    with pytest.raises(ValueError, match="28x28"):
        _tiny()(torch.zeros(1, 3, 35, 35))

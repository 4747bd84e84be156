import json

import numpy as np
import torch

from ifqa_loss.nets.ifqa_unet import IFQADiscriminator

from reference import FIXTURES, pattern_input, read_rgb


def test_state_dict_matches_published_names_and_shapes():
    published = json.loads((FIXTURES / "ifqa_cnn_keys.json").read_text())["tensors"]
    ours = IFQADiscriminator().state_dict()
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(k, s) for k, s in published]
    assert sum(v.numel() for v in ours.values()) == 105_172_833


def _reference_net(state_dict) -> IFQADiscriminator:
    net = IFQADiscriminator().eval()
    net.load_state_dict(state_dict, strict=True)
    return net


@torch.no_grad()
def test_pattern_map_equals_official(ifqa_state_dict):
    out = _reference_net(ifqa_state_dict)(pattern_input(256))
    assert out.shape == (1, 1, 256, 256)
    ref = np.load(FIXTURES / "ifqa_cnn_pattern_map.npy")
    assert np.abs(out[0, 0].numpy() - ref).max() <= 1e-4


@torch.no_grad()
def test_face_map_equals_official(ifqa_state_dict, expected):
    out = _reference_net(ifqa_state_dict)(read_rgb("face256.png") * 2 - 1)
    ref = np.load(FIXTURES / "ifqa_cnn_face_map.npy")
    assert np.abs(out[0, 0].numpy() - ref).max() <= 1e-4
    assert abs(out.mean().item() - expected["ifqa_cnn_face_score"]) <= 1e-5


@torch.no_grad()
def test_logits_are_the_pre_sigmoid_map():
    torch.manual_seed(0)
    net = IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(torch.sigmoid(net.logits(x)), net(x))

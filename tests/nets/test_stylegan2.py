import json

import numpy as np
import pytest
import torch

from ifqa_loss.nets.stylegan2 import StyleGAN2Generator

from reference import FIXTURES, reference_state_dict


@pytest.fixture(scope="module")
def prior():
    net = StyleGAN2Generator(512, 512, 8, channel_multiplier=2).eval()
    net.load_state_dict(reference_state_dict("stylegan2_clean_512_cm2_keys.json"), strict=True)
    return net


def test_state_dict_matches_gfpgan_clean_generator():
    published = json.loads((FIXTURES / "stylegan2_clean_512_cm2_keys.json").read_text())
    with torch.device("meta"):
        ours = StyleGAN2Generator(512, 512, 8, channel_multiplier=2).state_dict()
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(k, s) for k, s in published["tensors"]]
    assert sum(1 for k in ours if k.startswith("noises.")) == 15


@torch.no_grad()
def test_wplus_latent_with_stored_noise_matches_reference_image(prior):
    latent = torch.from_numpy(np.load(FIXTURES / "stylegan2_wplus_latent.npy"))
    image, features = prior(latent, input_is_latent=True, randomize_noise=False, return_features=True)
    assert np.abs(image[0].numpy() - np.load(FIXTURES / "stylegan2_wplus_image.npy")).max() <= 1e-3
    assert features.shape == (1, 64, 512, 512)


@torch.no_grad()
def test_features_without_the_rgb_branch_are_the_same_values():
    net = StyleGAN2Generator(32, 16, 2, narrow=1 / 16).eval()
    latent = torch.randn(2, net.num_latent, 16)
    _, features = net(latent, input_is_latent=True, randomize_noise=False, return_features=True)
    image, only = net(latent, input_is_latent=True, randomize_noise=False, return_features=True, return_image=False)
    assert image is None
    assert torch.equal(only, features)


@torch.no_grad()
def test_z_through_style_mlp_matches_reference_image(prior):
    z = torch.from_numpy(np.load(FIXTURES / "stylegan2_z.npy"))
    image, features = prior(z, randomize_noise=False)
    assert features is None
    assert np.abs(image[0].numpy() - np.load(FIXTURES / "stylegan2_z_image.npy")).max() <= 1e-3


@torch.no_grad()
def test_randomized_noise_changes_the_image_and_stored_noise_does_not():
    torch.manual_seed(0)
    g = StyleGAN2Generator(32, 16, 2, channel_multiplier=1, narrow=0.05).eval()
    g.style_convs[0].weight.fill_(1.0)  # a visible noise strength (initialised at 0)
    w = torch.randn(1, 16)
    a, _ = g(w, randomize_noise=False)
    b, _ = g(w, randomize_noise=False)
    c, _ = g(w, randomize_noise=True)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_wrong_style_shape_is_refused():
    g = StyleGAN2Generator(32, 16, 2, channel_multiplier=1, narrow=0.05)
    with pytest.raises(ValueError, match=r"\(N,8,16\)"):
        g(torch.zeros(1, 5, 16))

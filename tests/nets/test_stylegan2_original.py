"""GFP-GAN's original StyleGAN2 layout: same keys as basicsr's class, same function (CPU, deterministic weights)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ifqa_loss.nets.stylegan2_original import StyleGAN2GeneratorOriginal


def _pure_fused_leaky_relu(input, bias, negative_slope=0.2, scale=2**0.5):
    # basicsr 1.4.2's fused_leaky_relu needs its compiled CUDA extension, absent on this CPU-only
    # machine (it has no CPU fallback, unlike upfirdn2d which basicsr runs natively on CPU).
    # This is the op's documented arithmetic (rosinality's CPU path).
    return F.leaky_relu(input + bias.view(1, -1, *([1] * (input.ndim - 2))), negative_slope) * scale


@pytest.fixture
def basicsr_arch(monkeypatch):
    from ifqa_loss.integrations.compat import install_functional_tensor_alias

    install_functional_tensor_alias()
    import basicsr.archs.stylegan2_arch as arch
    import basicsr.ops.fused_act.fused_act as fused_act

    assert not hasattr(fused_act, "fused_act_ext"), "compiled op present: test it instead of substituting"
    monkeypatch.setattr(arch, "fused_leaky_relu", _pure_fused_leaky_relu)  # EqualLinear (style MLP)
    monkeypatch.setattr(fused_act, "fused_leaky_relu", _pure_fused_leaky_relu)  # FusedLeakyReLU (style convs)
    return arch


def _fill(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights of realistic scale (tests/fixtures/REFERENCE.md's fill rule) for the given keys."""
    rs = np.random.RandomState(seed)
    out = {}
    for name, t in state.items():
        z = rs.standard_normal(t.numel()).astype(np.float32).reshape(tuple(t.shape))
        out[name] = torch.from_numpy(z * np.float32(np.sqrt(1 / np.prod(t.shape[1:]))) if t.ndim >= 2 else 0.1 * z)
    return out


def test_state_dict_equals_basicsr_for_the_published_cmul1_512_config(basicsr_arch):
    # StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth: out_size 512, 512-d styles, 8 MLP layers, multiplier 1.
    with torch.device("meta"):
        theirs = basicsr_arch.StyleGAN2Generator(512, 512, 8, channel_multiplier=1).state_dict()
        ours = StyleGAN2GeneratorOriginal(512, 512, 8, channel_multiplier=1).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]
    assert len(ours) == 139 and sum(k.startswith("noises.") for k in ours) == 15
    assert ours["style_convs.13.activate.bias"].shape == (32,)  # last scale is 32 wide: the GFIQA paper's f_G


@torch.no_grad()
@pytest.mark.parametrize(("latent_kind", "dtype", "atol"),
                         [("z", torch.float64, 1e-12), ("wplus", torch.float64, 1e-12), ("wplus", torch.float32, 1e-6)])
def test_same_function_as_basicsr(basicsr_arch, latent_kind, dtype, atol):
    config = dict(out_size=64, num_style_feat=64, num_mlp=3, channel_multiplier=1, narrow=0.125)
    torch.manual_seed(0)
    theirs = basicsr_arch.StyleGAN2Generator(**config).eval()
    ours = StyleGAN2GeneratorOriginal(**config).eval()
    state = _fill(theirs.state_dict())
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    theirs.to(dtype), ours.to(dtype)  # fp64: any difference in the computation shows above rounding
    g = torch.Generator().manual_seed(1)
    if latent_kind == "z":  # through the equalised style MLP, one code repeated
        styles = torch.randn(2, 64, generator=g, dtype=dtype)
        expected, _ = theirs([styles], randomize_noise=False)
        actual, features = ours(styles, randomize_noise=False, return_features=True)
    else:  # W+ fed directly (how GFIQA drives the prior)
        styles = torch.randn(2, ours.num_latent, 64, generator=g, dtype=dtype)
        expected, _ = theirs([styles], input_is_latent=True, randomize_noise=False)
        actual, features = ours(styles, input_is_latent=True, randomize_noise=False, return_features=True)
    assert features.shape == (2, ours.channels[64], 64, 64)
    assert expected.abs().max() > 0.1  # a real signal, not all zeros
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


def test_gradients_reach_the_latents():
    g = StyleGAN2GeneratorOriginal(16, 16, 1, narrow=1 / 32).eval()
    w = torch.randn(1, g.num_latent, 16, requires_grad=True)
    image, _ = g(w, input_is_latent=True, randomize_noise=False)
    image.square().sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0

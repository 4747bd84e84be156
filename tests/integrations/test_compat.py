"""The guarded environment fixes for basicsr 1.4.2 / GFP-GAN on current torch, torchvision and OpenCV."""
import numpy as np
import pytest
import torch

from ifqa_loss.integrations import compat

compat.install_functional_tensor_alias()


def test_jpeg_degradation_runs_after_the_fix():
    from basicsr.data import degradations

    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    original = getattr(degradations.add_jpg_compression, "__wrapped__", degradations.add_jpg_compression)
    if compat.jpeg_quality_needs_int():  # current OpenCV: basicsr's float quality is refused until fixed
        with pytest.raises(Exception, match="params"):
            original(image, 75.5)
    assert compat.fix_jpeg_quality(degradations) == compat.jpeg_quality_needs_int()
    out = degradations.random_add_jpg_compression(image, (60, 100))
    assert out.shape == image.shape and out.dtype == np.float32


def test_stylegan2_discriminator_and_its_r1_penalty_run_on_cpu():
    from basicsr.archs.stylegan2_arch import StyleGAN2Discriminator
    from basicsr.losses.gan_loss import r1_penalty

    replaced = compat.install_native_ops()
    import basicsr.ops.fused_act.fused_act as fused_act

    assert ("fused_leaky_relu" in replaced) == (not hasattr(fused_act, "fused_act_ext"))
    torch.manual_seed(0)
    net_d = StyleGAN2Discriminator(out_size=32, channel_multiplier=1, narrow=0.0625)
    real = torch.randn(2, 3, 32, 32, requires_grad=True)
    penalty = r1_penalty(net_d(real), real)  # double backward through the substituted ops
    penalty.backward()
    assert torch.isfinite(penalty)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net_d.parameters())


def test_substitute_leaky_relu_matches_the_kernels_definition():
    x, bias = torch.randn(2, 4, 3, 3), torch.randn(4)
    expected = torch.nn.functional.leaky_relu(x + bias[None, :, None, None], 0.2) * 2 ** 0.5
    torch.testing.assert_close(compat.fused_leaky_relu(x, bias), expected)


def test_resume_state_loads_on_a_cpu_only_setup(tmp_path):
    path = tmp_path / "3.state"
    torch.save({"epoch": 0, "iter": 3, "optimizers": [{"state": {0: {"exp_avg": torch.ones(2)}}}], "schedulers": []},
               path)
    opt = {"name": "x", "num_gpu": 0, "path": {"resume_state": str(path)}}
    state = compat.load_resume_state(opt)
    assert state["iter"] == 3 and state["optimizers"][0]["state"][0]["exp_avg"].device.type == "cpu"

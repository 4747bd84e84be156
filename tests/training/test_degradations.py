import dataclasses
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ifqa_loss.training.degradations import (
    Degradation,
    DegradationConfig,
    apply_degradations,
    degrade,
    motion_kernels,
    sample_degradation_params,
)

from reference import read_rgb

# Every step off: the pipeline must then be the identity.
OFF = DegradationConfig(
    blur_prob=0, downsample_prob=0, noise_prob=0, jpeg_prob=0, color_shift_prob=0, photometric_prob=0, gray_prob=0
)


def _face(size=64):
    return F.interpolate(read_rgb("face256.png"), size=(size, size), mode="area")


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_output_other_seed_other_output():
    x = _face().expand(3, -1, -1, -1).contiguous()
    a, b = degrade(x, generator=_seeded(5)), degrade(x, generator=_seeded(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, degrade(x, generator=_seeded(6)))
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1


def test_images_in_a_batch_get_independent_parameters():
    x = _face().expand(2, -1, -1, -1).contiguous()
    out = degrade(x, generator=_seeded(0))
    assert not torch.equal(out[0], out[1])


def test_all_steps_off_is_identity():
    x = _face()
    assert torch.equal(degrade(x, OFF, generator=_seeded(0)), x)


def test_gaussian_blur_removes_detail_more_with_larger_sigma():
    x = _face()
    detail = lambda y: (y[..., 1:] - y[..., :-1]).abs().mean().item()  # noqa: E731
    weak = dataclasses.replace(OFF, blur_prob=1, blur_sigma=(1, 1), reference_size=None, blur_kernel_size=21)
    strong = dataclasses.replace(weak, blur_sigma=(4, 4))
    assert detail(degrade(x, strong, generator=_seeded(0))) < detail(degrade(x, weak, generator=_seeded(0))) < detail(x)


def test_motion_kernel_is_a_line_at_the_angle():
    horizontal, vertical = motion_kernels(torch.tensor([7.0, 7.0]), torch.tensor([0.0, torch.pi / 2]), 9)
    assert torch.allclose(horizontal.sum(), torch.tensor(1.0, dtype=horizontal.dtype))
    assert horizontal[4, 1:8].sum() > 0.99  # all mass on the middle row
    assert torch.allclose(vertical, horizontal.T, atol=1e-6)


def test_downsampling_equals_down_then_up_resize():
    x = _face()
    cfg = dataclasses.replace(OFF, downsample_prob=1, downsample_range=(4, 4))
    low = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    expected = F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(degrade(x, cfg, generator=_seeded(0)), expected.clamp(0, 1), atol=1e-6)


def test_jpeg_is_the_real_codec_at_the_drawn_quality():
    x = _face()
    cfg = dataclasses.replace(OFF, jpeg_prob=1, jpeg_range=(30, 30))
    buffer = io.BytesIO()
    Image.fromarray((x[0] * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=30)
    expected = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).float() / 255
    assert torch.equal(degrade(x, cfg, generator=_seeded(0))[0], expected)


def test_gaussian_noise_has_the_drawn_sigma():
    x = torch.full((1, 3, 128, 128), 0.5)
    cfg = dataclasses.replace(OFF, noise_prob=1, noise_range=(10, 10))
    residual = degrade(x, cfg, generator=_seeded(0)) - x
    assert abs(residual.std().item() * 255 - 10) < 0.3


def test_poisson_noise_grows_with_brightness():
    x = torch.cat([torch.full((1, 3, 64, 64), 0.1), torch.full((1, 3, 64, 64), 0.9)])
    cfg = dataclasses.replace(OFF, noise_prob=1, poisson_prob=1, poisson_scale=(1, 1))
    residual = degrade(x, cfg, generator=_seeded(0)) - x
    assert residual[1].std() > 2 * residual[0].std() > 0


def test_colour_shift_and_grey():
    x = _face()
    shifted = degrade(x, dataclasses.replace(OFF, color_shift_prob=1), generator=_seeded(0))
    per_channel = (shifted - x).mean((0, 2, 3))
    assert per_channel.abs().max() > 1 / 255 and not torch.allclose(per_channel[0], per_channel[1])
    grey = degrade(x, dataclasses.replace(OFF, gray_prob=1), generator=_seeded(0))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_params_then_apply_equals_degrade():
    x = _face().expand(2, -1, -1, -1).contiguous()
    params = sample_degradation_params(2, generator=_seeded(3))
    assert torch.equal(apply_degradations(x, params), degrade(x, generator=_seeded(3)))


def test_dtype_follows_input():
    out = degrade(_face().double(), generator=_seeded(0))
    assert out.dtype == torch.float64


def test_differentiable_jpeg_backend_passes_gradients():
    x = _face(48).requires_grad_(True)  # 48 is not a multiple of 16: the backend pads
    cfg = dataclasses.replace(OFF, jpeg_prob=1, jpeg_range=(40, 40), jpeg_backend="differentiable")
    out = degrade(x, cfg, generator=_seeded(0))
    out.sum().backward()
    assert out.shape == x.shape and x.grad.abs().sum() > 0
    assert (out - x).abs().mean() > 1e-3  # it did compress


def test_module_draws_fresh_parameters_each_call_but_is_reproducible():
    x = _face()
    first, second = Degradation(seed=1), Degradation(seed=1)
    a1, a2 = first(x), first(x)
    assert not torch.equal(a1, a2)
    assert torch.equal(a1, second(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blur_prob": 1.5}, "blur_prob"),
        ({"jpeg_range": (10, 120)}, "jpeg_range"),
        ({"downsample_range": (4, 2)}, "downsample_range"),
        ({"jpeg_backend": "pil"}, "jpeg_backend"),
    ],
)
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DegradationConfig(**kwargs)


def test_bad_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        degrade(torch.rand(3, 32, 32))

"""PSNR/SSIM conventions equal basicsr's own functions on the same 8-bit images (RGB and Y, crop borders)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ifqa_loss.ablation.fidelity import psnr, ssim


@pytest.fixture(scope="module")
def basicsr_metrics():
    from ifqa_loss.integrations.compat import install_functional_tensor_alias

    install_functional_tensor_alias()  # basicsr 1.4.2 imports a torchvision module renamed since
    pytest.importorskip("basicsr")
    from basicsr.metrics import calculate_psnr, calculate_ssim

    return calculate_psnr, calculate_ssim


@pytest.mark.parametrize("color", ["rgb", "y"])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_and_ssim_equal_basicsr(basicsr_metrics, color, crop_border):
    calculate_psnr, calculate_ssim = basicsr_metrics
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 40, 36, 3)).astype(np.uint8)  # (N,H,W,C) RGB
    restored = np.clip(gt.astype(int) + rng.integers(-25, 26, gt.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(restored).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(gt).permute(0, 3, 1, 2).float() / 255
    ours_psnr = psnr(x, y, color=color, crop_border=crop_border).numpy()
    ours_ssim = ssim(x, y, color=color, crop_border=crop_border).numpy()
    y_channel = color == "y"
    # basicsr reads images with cv2: BGR order, 0..255
    ref_psnr = [calculate_psnr(r[..., ::-1], g[..., ::-1], crop_border, test_y_channel=y_channel)
                for r, g in zip(restored, gt, strict=True)]
    ref_ssim = [calculate_ssim(r[..., ::-1], g[..., ::-1], crop_border, test_y_channel=y_channel)
                for r, g in zip(restored, gt, strict=True)]
    np.testing.assert_allclose(ours_psnr, ref_psnr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours_ssim, ref_ssim, rtol=0, atol=1e-9)


def test_y_and_rgb_differ_and_identical_images_give_inf_psnr():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z = (x + 0.05).clamp(0, 1)
    assert psnr(x, z, color="y").item() != psnr(x, z, color="rgb").item()
    assert psnr(x, x).item() == float("inf") and ssim(x, x).item() == pytest.approx(1.0)

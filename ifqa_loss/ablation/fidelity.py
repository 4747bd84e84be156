"""PSNR and SSIM with basicsr's conventions (what GFP-GAN / CodeFormer papers report), per image.

``color="rgb"``: over the three channels; ``color="y"``: on BT.601 luma (basicsr's
``test_y_channel``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)``, R,G,B in [0,1], computed in
float32 like basicsr's ``to_y_channel``). ``crop_border`` pixels are dropped at each edge first.
PSNR: ``10 log10(255² / MSE)`` on the 0..255 scale, ``inf`` for identical images. SSIM: Wang et al.
with an 11x11 Gaussian window (sigma 1.5) in "valid" mode, ``C1 = (0.01·255)²``, ``C2 = (0.03·255)²``,
averaged over the map and over channels. Equal to ``basicsr.metrics.calculate_psnr`` /
``calculate_ssim`` on the same 8-bit images (a test checks it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "to_y"]


def _to_255(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> 0..255 float64, exact integers for 8-bit images (as a uint8 file read by cv2)."""
    y = x.double() * 255.0
    rounded = y.round()
    return torch.where((y - rounded).abs() < 1e-3, rounded, y)


def to_y(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) BT.601 luma on the 0..255 scale, rounded like basicsr's float32 path."""
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    rgb = (_to_255(x) / 255.0).float().double()  # uint8 / 255 in float32
    y = ((rgb * weights).sum(1, keepdim=True) + 16.0) / 255.0  # np.dot promotes to float64; stored as float32
    return (y.float() * 255.0).double()


def _prepare(x: torch.Tensor, color: str, crop_border: int) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N,3,H,W) RGB images, got {tuple(x.shape)}")
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    if color == "y":
        return to_y(x).double()
    if color != "rgb":
        raise ValueError(f"color must be 'rgb' or 'y', got {color!r}")
    return _to_255(x)


def psnr(x: torch.Tensor, y: torch.Tensor, *, color: str = "rgb", crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR in dB of (N,3,H,W) images in [0,1] -> (N,) float64.

    Example:
        >>> a = torch.zeros(1, 3, 8, 8); b = a + 1 / 255
        >>> round(psnr(a, b).item(), 4)
        48.1308
    """
    a, b = _prepare(x, color, crop_border), _prepare(y, color, crop_border)
    mse = (a - b).pow(2).mean((1, 2, 3))
    return torch.where(mse == 0, torch.full_like(mse, math.inf), 10 * torch.log10(255.0**2 / mse))


def _gaussian_window(device) -> torch.Tensor:
    g = torch.exp(-((torch.arange(11, dtype=torch.float64, device=device) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, *, color: str = "rgb", crop_border: int = 0) -> torch.Tensor:
    """Per-image SSIM of (N,3,H,W) images in [0,1] (at least 11x11 after the crop) -> (N,) float64.

    Example:
        >>> a = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(a, a).tolist()
        [1.0, 1.0]
    """
    a, b = _prepare(x, color, crop_border), _prepare(y, color, crop_border)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after crop_border, got {tuple(a.shape[-2:])}")
    n, c = a.shape[:2]
    window = _gaussian_window(a.device)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t.reshape(n * c, 1, *t.shape[-2:]), window).reshape(n, c, *[s - 10 for s in t.shape[-2:]])

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    s11, s22, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return ssim_map.mean((2, 3)).mean(1)

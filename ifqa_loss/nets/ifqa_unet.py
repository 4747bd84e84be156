"""IFQA (WACV 2023) per-pixel U-Net discriminator.

Re-implementation of the network published as ``model.py::Discriminator`` in the
official IFQA repository. Parameter names and shapes match ``IFQA_Metric.pth``
(``{'D': state_dict}``, 122 tensors, 105,172,833 parameters) so the published
checkpoint loads with ``strict=True``.

Input: (N,3,256,256) RGB in [-1,1]. Output: (N,1,256,256) realness map in [0,1].
The network is fully convolutional: other sizes divisible by 32 also run, but the
published weights were trained at 256.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class _ResidualLayers(nn.Module):
    """The layers both block kinds share (names as in the checkpoint)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(in_channels, affine=True)
        self.norm2 = nn.InstanceNorm2d(in_channels, affine=True)
        # A learned 1x1 projection only where the width changes (checkpoint has no such key otherwise).
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None


class DownResBlock(_ResidualLayers):
    """Pre-activation residual block (InstanceNorm, LeakyReLU 0.2), optional 2x avg-pool.

    ``(N,C_in,H,W) -> (N,C_out,H',W')`` with ``H' = H/2`` when ``downsample``.
    The sum of shortcut and residual is scaled by 1/sqrt(2) to keep unit variance.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__(in_channels, out_channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.conv1x1 is None else self.conv1x1(x)
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        if self.downsample:
            shortcut = F.avg_pool2d(shortcut, 2)
            h = F.avg_pool2d(h, 2)
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (shortcut + h) * _INV_SQRT2


class UpResBlock(_ResidualLayers):
    """Residual block with 2x nearest-neighbour upsampling: ``(N,C_in,H,W) -> (N,C_out,2H,2W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.conv1x1 is not None:
            shortcut = self.conv1x1(shortcut)
        h = F.leaky_relu(self.norm1(x), 0.2)
        h = self.conv1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (h + shortcut) * _INV_SQRT2


class IFQADiscriminator(nn.Module):
    """The IFQA per-pixel discriminator (U-Net with multiplicative skip connections).

    Args:
        widths: encoder widths from the first to the bottleneck stage. The published
            model uses ``(64, 128, 256, 512, 1024)``; tests build narrower variants.
        num_bottleneck: residual blocks at the 8x8 bottleneck (published: 4).
        input_size: the side the weights were trained at (published: 256; ``train-ifqa --size``
            stores its own). Metrics resize images to it; the network itself takes any multiple of 32.

    ``forward``: (N,3,H,W) in [-1,1] -> (N,1,H,W) in [0,1]; ``logits`` gives the
    pre-sigmoid values (used by the non-saturating loss).
    """

    def __init__(
        self, widths: tuple[int, ...] = (64, 128, 256, 512, 1024), num_bottleneck: int = 4, input_size: int = 256
    ):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"IFQADiscriminator needs 5 encoder widths, got {widths}")
        if input_size % 32:
            raise ValueError(f"IFQADiscriminator input_size must be a multiple of 32, got {input_size}")
        self.input_size = input_size
        # Stored with trained weights (a non-default input_size only when trained at another size).
        self.config = {"widths": tuple(widths), "num_bottleneck": num_bottleneck}
        if input_size != 256:
            self.config["input_size"] = input_size
        w1, w2, w3, w4, w5 = widths
        # Names follow the output resolution at a 256 input, as in the published checkpoint.
        self.encoder128 = DownResBlock(3, w1, downsample=True)
        self.encoder64 = DownResBlock(w1, w2, downsample=True)
        self.encoder32 = DownResBlock(w2, w3, downsample=True)
        self.encoder16 = DownResBlock(w3, w4, downsample=True)
        self.encoder8 = DownResBlock(w4, w5, downsample=True)
        self.btn = nn.Sequential(*[DownResBlock(w5, w5, downsample=False) for _ in range(num_bottleneck)])
        self.decoder16 = UpResBlock(w5, w4)
        self.decoder32 = UpResBlock(w4, w3)
        self.decoder64 = UpResBlock(w3, w2)
        self.decoder128 = UpResBlock(w2, w1)
        # Sequential index 0 keeps the checkpoint name ``decoder256.0.*``.
        self.decoder256 = nn.Sequential(UpResBlock(w1, 1), nn.Sigmoid())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,1,H,W) pre-sigmoid realness."""
        e128 = self.encoder128(x)
        e64 = self.encoder64(e128)
        e32 = self.encoder32(e64)
        e16 = self.encoder16(e32)
        d = self.decoder16(self.btn(self.encoder8(e16)))
        # Skip fusion of the published model: d * e + e == (d + 1) * e.
        d = self.decoder32(torch.addcmul(e16, d, e16))
        d = self.decoder64(torch.addcmul(e32, d, e32))
        d = self.decoder128(torch.addcmul(e64, d, e64))
        return self.decoder256[0](torch.addcmul(e128, d, e128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,1,H,W) realness map in [0,1]."""
        return torch.sigmoid(self.logits(x))

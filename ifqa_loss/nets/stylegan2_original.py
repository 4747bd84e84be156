"""StyleGAN2 generator in GFP-GAN's *original* layout (basicsr ``stylegan2_arch.StyleGAN2Generator``), pure PyTorch.

This is the architecture of GFP-GAN's ``StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth``
(``params_ema``; ``StyleGAN2GeneratorOriginal(512, channel_multiplier=1)`` loads it with
``strict=True``: 139 tensors with the 15 stored noise buffers), the prior the GFIQA paper's
widths imply. It differs from the "clean" layout of :mod:`ifqa_loss.nets.stylegan2`
(GFPGANv1.3/1.4) in:

* equalised learning rate: weights are stored unscaled and multiplied by ``1/sqrt(fan_in)`` at
  run time (the style MLP also by ``lr_mul=0.01``, its biases too);
* activations are basicsr's fused leaky ReLU ``leaky_relu(x + bias, 0.2) * sqrt(2)`` with the bias
  inside the activation (keys ``*.activate.bias`` of shape (C,), ``style_mlp.1..8``);
* upsampling is a stride-2 transposed convolution followed by a [1,3,3,1] FIR blur (and a
  zero-insertion + FIR upsample for the RGB skip), not bilinear interpolation.

basicsr runs the blur and activation with compiled CUDA ops; here both are written with
``conv2d``/``leaky_relu`` (same arithmetic, any device, differentiable to any order).
Modulation scales the input and demodulates the output (one weight shared by the batch,
no grouped convolution); this equals modulating the weight up to float rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import PixelNorm, StyleGAN2Synthesis
from .stylegan2 import ToRGB as CleanToRGB

_SQRT2 = math.sqrt(2.0)
_RESAMPLE_KERNEL = (1.0, 3.0, 3.0, 1.0)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = _SQRT2) -> torch.Tensor:
    """basicsr's ``fused_leaky_relu``: ``leaky_relu(x + bias, slope) * scale``; bias (C,) on dim 1 of (N,C,...).

    Example:
        >>> fused_leaky_relu(torch.tensor([[-1.0, 1.0]]), torch.zeros(2))
        tensor([[-0.2828,  1.4142]])
    """
    bias = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + bias, negative_slope) * scale


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with a 2-D FIR ``kernel`` per channel: (N,C,H,W) -> (N,C,H',W').

    ``H' = H*up + pad[0] + pad[1] - kernel_size + 1`` (the same pad on both axes, as basicsr's op).

    Example:
        >>> upfirdn2d(torch.ones(1, 2, 4, 4), torch.full((2, 2), 0.25), pad=(0, 1)).shape
        torch.Size([1, 2, 4, 4])
    """
    c = x.shape[1]
    if up > 1:
        x = _zero_insert(x, up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.flip(0, 1).to(x)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def _zero_insert(x: torch.Tensor, up: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,H*up,W*up) with x at multiples of ``up`` and zeros elsewhere."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h, up, w, up)
    out[:, :, :, 0, :, 0] = x
    return out.view(n, c, h * up, w * up)


def resample_kernel(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """The normalised 4x4 FIR kernel ``outer([1,3,3,1]) / 64`` of StyleGAN2's up/down-sampling.

    Example:
        >>> float(resample_kernel().sum())
        1.0
    """
    k = torch.tensor(_RESAMPLE_KERNEL, dtype=dtype, device=device)
    k = k[None, :] * k[:, None]
    return k / k.sum()


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: (N,C_in) -> (N,C_out).

    ``weight * lr_mul / sqrt(C_in)`` and ``bias * lr_mul``; ``activation="fused_lrelu"`` applies
    :func:`fused_leaky_relu` with the bias inside.

    Example:
        >>> EqualLinear(4, 3, activation="fused_lrelu")(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"activation must be None or 'fused_lrelu', got {activation!r}")
        self.activation = activation
        self.lr_mul = lr_mul
        self.scale = lr_mul / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_channels,), float(bias_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if self.activation == "fused_lrelu":
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (no bias): (N,C_in,H,W), (N,S) -> (N,C_out,H',W').

    ``upsample=True``: stride-2 transposed convolution, then a [1,3,3,1] blur (H' = 2H).

    Example:
        >>> ModulatedConv2d(4, 6, 3, 8, upsample=True)(torch.zeros(1, 4, 4, 4), torch.zeros(1, 8)).shape
        torch.Size([1, 6, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int, *,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(num_style_feat, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = self.modulation(style)  # (N,C_in)
        weight = self.weight[0] * self.scale  # (C_out,C_in,k,k)
        x = x * style[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            # basicsr's UpFirDnSmooth(upsample_factor=2, kernel_size=k): kernel * 4, pad ((p+1)//2 + 1, p//2 + 1)
            p = 4 - 2 - (weight.shape[-1] - 1)
            out = upfirdn2d(out, resample_kernel(out.dtype, out.device) * 4, pad=((p + 1) // 2 + 1, p // 2 + 1))
        else:
            out = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum over (C_in,k,k) of (w * s)^2 = s^2 @ (w^2 summed over k)
            demod = torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + self.eps)  # (N,C_out)
            out = out * demod[:, :, None, None]
        return out


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) * sqrt(2) with the bias as a parameter of shape (C,): (N,C,H,W) -> (N,C,H,W).

    Example:
        >>> FusedLeakyReLU(3)(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyleConv(nn.Module):
    """Modulated 3x3 conv, noise injection, fused bias + leaky ReLU.

    Example:
        >>> StyleConv(4, 4, 8)(torch.zeros(1, 4, 4, 4), torch.zeros(1, 8)).shape
        torch.Size([1, 4, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, *, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return self.activate(out + self.weight * noise)


class ToRGB(CleanToRGB):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the FIR-upsampled previous RGB.

    Example:
        >>> ToRGB(4, 8)(torch.zeros(1, 4, 8, 8), torch.zeros(1, 8), torch.zeros(1, 3, 4, 4)).shape
        torch.Size([1, 3, 8, 8])
    """

    modulated_conv_class = ModulatedConv2d

    def upsample_skip(self, skip: torch.Tensor) -> torch.Tensor:
        # basicsr's UpFirDnUpsample(factor=2): kernel * 4, pad ((4-2+1)//2 + 1, (4-2)//2)
        return upfirdn2d(skip, resample_kernel(skip.dtype, skip.device) * 4, up=2, pad=(2, 1))


class StyleGAN2GeneratorOriginal(StyleGAN2Synthesis):
    """StyleGAN2 generator, GFP-GAN's original layout (basicsr ``StyleGAN2Generator``).

    Same interface as :class:`ifqa_loss.nets.StyleGAN2Generator` (the shared ``forward`` returns
    ``(image, features or None)``, optional SFT ``conditions``), so GFIQA can use either as its prior.

    Args:
        out_size: output side (power of two >= 8). num_style_feat: width of z/w.
        num_mlp: layers of the style MLP (``lr_mul`` 0.01 as basicsr's default ``lr_mlp``).
        channel_multiplier, narrow: feature widths (``channel_multiplier=1`` for the Cmul1 prior).

    Example:
        >>> g = StyleGAN2GeneratorOriginal(8, num_style_feat=8, num_mlp=1, narrow=1 / 64)
        >>> image, features = g(torch.zeros(1, 8), randomize_noise=False, return_features=True)
        >>> image.shape, features.shape
        (torch.Size([1, 3, 8, 8]), torch.Size([1, 8, 8, 8]))
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, num_mlp: int = 8, *,
                 channel_multiplier: int = 1, narrow: float = 1.0, lr_mlp: float = 0.01):
        mlp: list[nn.Module] = [PixelNorm()]  # index 0 has no parameters: keys are style_mlp.1..num_mlp
        mlp += [EqualLinear(num_style_feat, num_style_feat, lr_mul=lr_mlp, activation="fused_lrelu")
                for _ in range(num_mlp)]
        super().__init__(out_size, num_style_feat, channel_multiplier, narrow, nn.Sequential(*mlp), StyleConv, ToRGB,
                         noises_first=True)  # basicsr registers the noise buffers before the convolutions

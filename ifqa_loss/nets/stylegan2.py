"""StyleGAN2 generator, state-dict compatible with GFP-GAN's "clean" generator (no custom CUDA ops).

``stylegan_decoder.*`` of GFPGANv1.3/1.4.pth (under ``params_ema``, fallback ``params``)
loads with ``strict=True`` into ``StyleGAN2Generator(512, 512, 8, channel_multiplier=2)``:
139 tensors including the 15 stored noise buffers.

Modulated convolutions scale the *input* by the style and the *output* by the
demodulation factor, which equals modulating the weight (as the reference does)
while sharing one weight across the batch: no per-sample grouped convolution.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_SQRT2 = math.sqrt(2.0)


def stylegan2_channels(channel_multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Feature width per resolution (StyleGAN2 config-F widths used by GFP-GAN)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: int(width * narrow) for res, width in base.items()}


class PixelNorm(nn.Module):
    """Normalise each style vector to unit RMS: (N,C) -> (N,C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution without bias: (N,C_in,H,W), (N,S) -> (N,C_out,H',W').

    ``upsample`` doubles H,W with bilinear interpolation before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.modulation = nn.Linear(num_style_feat, in_channels)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size**2))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale = self.modulation(style)  # (N,C_in)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        weight = self.weight[0]
        out = F.conv2d(x * scale[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum over (C_in,k,k) of (w * s)^2 = (w^2 summed over k) @ s^2
            demod = torch.rsqrt(scale.square() @ weight.square().sum(dim=(2, 3)).t() + self.eps)  # (N,C_out)
            out = out * demod[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated 3x3 conv, noise injection, bias, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) * _SQRT2
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return F.leaky_relu(out + self.weight * noise + self.bias, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) plus the upsampled previous RGB.

    Layouts differ only in ``modulated_conv_class`` and :meth:`upsample_skip` (bilinear here).
    """

    modulated_conv_class: type[nn.Module] = ModulatedConv2d

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = self.modulated_conv_class(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def upsample_skip(self, skip: torch.Tensor) -> torch.Tensor:
        return F.interpolate(skip, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (self.upsample_skip(skip) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2Synthesis(nn.Module):
    """What every StyleGAN2 layout here shares: styles -> W+, the synthesis loop, noise, w̄.

    Subclasses pass their style MLP and their ``StyleConv`` / ``ToRGB`` layer classes.
    """

    def __init__(self, out_size: int, num_style_feat: int, channel_multiplier: int, narrow: float,
                 style_mlp: nn.Sequential, style_conv: type[nn.Module], to_rgb: type[nn.Module],
                 noises_first: bool = False):
        super().__init__()
        self.num_style_feat = num_style_feat
        self.log_size = int(math.log2(out_size))
        if 2**self.log_size != out_size or out_size < 8:
            raise ValueError(f"out_size must be a power of two >= 8, got {out_size}")
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2
        self.channels = stylegan2_channels(channel_multiplier, narrow)
        self.style_mlp = style_mlp

        width = self.channels[4]
        self.constant_input = ConstantInput(width)
        self.style_conv1 = style_conv(width, width, num_style_feat)
        self.to_rgb1 = to_rgb(width, num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        if noises_first:  # registration order = state-dict order of the published file
            self._register_noises()
        for level in range(3, self.log_size + 1):
            out_width = self.channels[2**level]
            self.style_convs.append(style_conv(width, out_width, num_style_feat, upsample=True))
            self.style_convs.append(style_conv(out_width, out_width, num_style_feat))
            self.to_rgbs.append(to_rgb(out_width, num_style_feat))
            width = out_width
        if not noises_first:
            self._register_noises()

    def _register_noises(self) -> None:
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, num_samples: int = 4096) -> torch.Tensor:
        """(1,S) average w over random z (the truncation centre)."""
        device = self.constant_input.weight.device
        return self.style_mlp(torch.randn(num_samples, self.num_style_feat, device=device)).mean(0, keepdim=True)

    def forward(
        self,
        styles: torch.Tensor,
        input_is_latent: bool = False,
        randomize_noise: bool = True,
        return_features: bool = False,
        conditions: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        return_image: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Synthesize images.

        Args:
            styles: (N,S) z (or w if ``input_is_latent``) repeated to every layer, or (N,num_latent,S) W+.
            randomize_noise: fresh noise each call; ``False`` uses the stored noise buffers.
            return_features: also return the last-scale feature map (N,C,out_size,out_size).
            conditions: optional spatial feature transform per resolution 8..out_size:
                ``(scale, shift)`` applied as ``x * scale + shift`` after the upsampling conv (GFP-GAN's SFT).
            return_image: ``False`` skips the RGB branch (every ToRGB and skip upsampling); the
                features do not depend on it, so they are the same tensor values.
        Returns:
            ``(image (N,3,out_size,out_size) or None, features or None)``.
        """
        if styles.ndim == 2:
            if not input_is_latent:
                styles = self.style_mlp(styles)
            latent = styles[:, None].expand(-1, self.num_latent, -1)
        elif styles.ndim == 3 and styles.shape[1] == self.num_latent:
            latent = styles if input_is_latent else self.style_mlp(styles.flatten(0, 1)).view_as(styles)
        else:
            raise ValueError(f"styles must be (N,{self.num_style_feat}) or (N,{self.num_latent},{self.num_style_feat}),"
                             f" got {tuple(styles.shape)}")
        noise = [None] * self.num_layers if randomize_noise else self.stored_noise()

        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1]) if return_image else None
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if conditions is not None and level < len(conditions):
                scale, shift = conditions[level]
                out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            if return_image:
                skip = to_rgb(out, latent[:, i + 2], skip)
        return skip, (out if return_features else None)


class StyleGAN2Generator(StyleGAN2Synthesis):
    """StyleGAN2 generator (GFP-GAN clean layout).

    Args:
        out_size: output side (power of two). num_style_feat: width of z/w.
        num_mlp: layers of the style MLP. channel_multiplier, narrow: feature widths.

    ``forward(styles, ...)``: ``styles`` is z or w of shape (N,S), or W+ of shape
    (N,num_latent,S) with ``num_latent = 2*log2(out_size) - 2`` (16 at 512).
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: int = 2, narrow: float = 1.0):
        # Index layout style_mlp.{1,3,...} matches the checkpoint (PixelNorm at 0, activations between).
        mlp: list[nn.Module] = [PixelNorm()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2)]
        super().__init__(out_size, num_style_feat, channel_multiplier, narrow, nn.Sequential(*mlp), StyleConv, ToRGB)

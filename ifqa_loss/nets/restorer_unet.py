"""A plain restoration U-Net: the generator of the IFQA training framework.

The IFQA paper trains its metric against "a plain restoration generator" and gives
no architecture; this is a conventional choice, kept small by default so it runs
on a CPU: residual blocks (GroupNorm, SiLU), strided-conv down-sampling,
nearest up-sampling + conv, concatenated skips, and a global residual
(the network predicts a correction added to the degraded input).

Input/output: (N,in_channels,H,W) and (N,out_channels,H,W) in [0,1], with H and W
divisible by ``2**depth``. The output is *not* clamped (a clamp would cut the
gradient of pixels that overshoot); clamp it before viewing or scoring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2 or g == 1)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``(N,C_in,H,W) -> (N,C_out,H,W)``.

    Example:
        >>> ResBlock(4, 8)(torch.rand(1, 4, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class RestorationUNet(nn.Module):
    """U-Net restorer: degraded (N,3,H,W) in [0,1] -> restored (N,3,H,W), ~[0,1] (unclamped).

    Args:
        width: channels at full resolution; each level doubles them up to ``max_width``.
        depth: number of 2x down-sampling levels (H, W must be divisible by ``2**depth``).
        blocks: residual blocks per level on each side.
        max_width: cap on the channels of the deepest levels.
        residual: add the input to the output (predict a correction), the usual choice for restoration.

    Example:
        >>> net = RestorationUNet(width=8, depth=2)
        >>> net(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 32,
        depth: int = 4,
        blocks: int = 1,
        max_width: int = 256,
        residual: bool = True,
    ):
        super().__init__()
        if width < 1 or depth < 0 or blocks < 1:
            raise ValueError(f"RestorationUNet needs width >= 1, depth >= 0, blocks >= 1;"
                             f" got {width}, {depth}, {blocks}")
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        self.depth, self.residual = depth, residual
        widths = [min(width * 2**i, max_width) for i in range(depth + 1)]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i in range(depth):
            self.down_blocks.append(nn.Sequential(*[ResBlock(widths[i], widths[i]) for _ in range(blocks)]))
            self.downsamples.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
        self.middle = nn.Sequential(*[ResBlock(widths[depth], widths[depth]) for _ in range(blocks)])
        self.upsamples = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(depth)):
            self.upsamples.append(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
            layers = [ResBlock(2 * widths[i], widths[i])] + [ResBlock(widths[i], widths[i]) for _ in range(blocks - 1)]
            self.up_blocks.append(nn.Sequential(*layers))
        self.head = nn.Sequential(_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1))
        if residual:
            # Start as the identity: the generator's first outputs are the degraded inputs.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) in [0,1] -> (N,out_channels,H,W)."""
        factor = 2**self.depth
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"RestorationUNet(depth={self.depth}) needs (N,C,H,W) with H, W divisible by {factor}, "
                f"got {tuple(x.shape)}"
            )
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples, strict=True):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, block in zip(self.upsamples, self.up_blocks, strict=True):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1))
        out = self.head(h)
        return x + out if self.residual else out

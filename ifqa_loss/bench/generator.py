"""A GFPGANv1Clean-sized restoration generator with random weights, for timing a training step.

Same structure and widths as GFP-GAN's ``GFPGANv1Clean(out_size=512, channel_multiplier=2)``:
a U-Net (half-width, bilinear resampling residual blocks) whose decoder features
modulate a StyleGAN2 decoder through spatial feature transforms. The weights are
random: step time does not depend on their values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ifqa_loss.nets.stylegan2 import StyleGAN2Generator, stylegan2_channels


class ResampleBlock(nn.Module):
    """Conv, bilinear x0.5 or x2, conv; 1x1 projected skip: (N,C_in,H,W) -> (N,C_out,H*f,W*f)."""

    def __init__(self, in_channels: int, out_channels: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv2(self._resample(F.leaky_relu(self.conv1(x), 0.2))), 0.2)
        return out + self.skip(self._resample(x))


def _sft_branch(channels: int) -> nn.Sequential:
    """U-Net features (C) -> SFT scale or shift at the decoder's width (2C), as GFP-GAN with sft_half=False."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(channels, 2 * channels, 3, 1, 1)
    )


class RestorationGenerator(nn.Module):
    """(N,3,S,S) degraded face in [-1,1] -> (N,3,S,S) restored face (unbounded, as GFP-GAN)."""

    def __init__(self, out_size: int = 512, channel_multiplier: int = 2, num_style_feat: int = 512):
        super().__init__()
        self.log_size = int(math.log2(out_size))
        unet = stylegan2_channels(channel_multiplier, narrow=0.5)
        self.conv_body_first = nn.Conv2d(3, unet[out_size], 1)
        self.conv_body_down = nn.ModuleList(
            ResampleBlock(unet[2**i], unet[2 ** (i - 1)], 0.5) for i in range(self.log_size, 2, -1)
        )
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, 1, 1)
        self.final_linear = nn.Linear(unet[4] * 16, num_style_feat)
        self.conv_body_up = nn.ModuleList(
            ResampleBlock(unet[2 ** (i - 1)], unet[2**i], 2.0) for i in range(3, self.log_size + 1)
        )
        self.condition_scale = nn.ModuleList(_sft_branch(unet[2**i]) for i in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(_sft_branch(unet[2**i]) for i in range(3, self.log_size + 1))
        self.decoder = StyleGAN2Generator(out_size, num_style_feat, 8, channel_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        style = self.final_linear(feat.flatten(1))
        conditions = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift,
                                          strict=True):
            feat = up(feat + skip)
            conditions.append((scale(feat), shift(feat)))
        image, _ = self.decoder(style, input_is_latent=True, conditions=conditions)
        return image


def measure_generator_step(cfg, log=print, budget=None, block_seconds=None) -> list[dict]:
    """Training-step time of the restoration generator alone (L1 to the target) and with each loss added
    (weight 0.1), timed round-robin until each step's paired ratio to the generator alone is conclusive or the
    block's time is spent (timing.adaptive). A step with a loss does the generator's work and more, so a ratio
    below 1 is a measurement error: it is re-measured while time is left and flagged, never shown as a result.
    Each row also records the step's peak memory (that first call is the warm-up)."""
    from .losses import build_loss, inputs
    from .memory import PeakMemory
    from .timing import adaptive, summarize

    torch.manual_seed(0)
    generator = RestorationGenerator(cfg.generator_size).to(cfg.device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-4)
    degraded, target = inputs(cfg.generator_batch, cfg.generator_size, cfg.device)

    def make_step(extra):
        def step():
            restored = generator(degraded)
            loss = F.l1_loss(restored, target)
            if extra is not None:
                loss = loss + 0.1 * extra(restored.clamp(-1, 1), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    steps = {"generator only": make_step(None)}
    for name in cfg.generator_losses:
        steps[f"+ {name}"] = make_step(build_loss(name, "fp32", cfg)[0])
    peaks = {}
    for label, step in steps.items():
        with PeakMemory(cfg.device) as memory:
            step()
        peaks[label] = memory.peak_bytes / 2**20
        if budget is not None:
            budget.tick("generator step: warm-up")
    ratios = {label: (label, "generator only", 1.0) for label in steps if label != "generator only"}
    block = adaptive(steps, ratios=ratios,
                     min_rounds=cfg.repeats, max_rounds=cfg.max_rounds, warmup=max(0, cfg.warmup - 1), budget=budget,
                     label="generator step", budget_s=block_seconds() if block_seconds else float("inf"),
                     target=cfg.ratio_target)
    base = summarize(block["times"]["generator only"])["median"]
    rows = []
    for label, times in block["times"].items():
        summary = summarize(times)
        ratio = block["ratios"].get(label)
        rows.append({"step": label, "batch": cfg.generator_batch, "size": cfg.generator_size, "step_ms": summary,
                     "overhead_ratio": ratio["estimate"] if ratio else 1.0, "ratio": ratio,
                     "rounds": block["rounds"], "stopped": block["stopped"], "peak_memory_mib": peaks[label]})
        log(f"  {label:<16} {summary['median']:9.1f} ms  x{summary['median'] / base:.2f}")
    return rows

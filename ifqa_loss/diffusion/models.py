"""Diffusers model configurations built with RANDOM weights: tiny ones for tests and examples, full-size ones
for the cost benchmark. Nothing is downloaded; no pretrained diffusion weights are used anywhere.

Full-size configurations follow public checkpoints' ``config.json`` (architecture only):
``pixel_unet_config`` google/ddpm-celebahq-256 (pixel-space face prior, the DifFace / PGDiff setting);
``sd_unet_config`` / ``sd_vae_config`` Stable Diffusion 2.1 (the backbone of DiffBIR and, as SD-Turbo, OSEDiff).
"""
from __future__ import annotations

import torch


def tiny_unet(*, in_channels: int = 3, out_channels: int = 3, sample_size: int = 16, width: int = 16,
              seed: int = 0):
    """A two-level ``UNet2DModel`` (~40 k parameters at ``width=16``), seeded random weights.

    Example:
        >>> sum(p.numel() for p in tiny_unet().parameters()) < 100_000
        True
    """
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                       layers_per_block=1, block_out_channels=(width, width), norm_num_groups=width // 4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def tiny_vae(*, latent_channels: int = 4, width: int = 8, seed: int = 0):
    """A two-level ``AutoencoderKL`` (factor-2 latents), seeded random weights.

    Example:
        >>> tiny_vae().config.latent_channels
        4
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(width, width), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=latent_channels,
                         norm_num_groups=width // 2, layers_per_block=1)


def pixel_unet_config(sample_size: int = 256) -> dict:
    """google/ddpm-celebahq-256's ``UNet2DModel`` architecture (~114 M parameters)."""
    return dict(sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=2,
                block_out_channels=(128, 128, 256, 256, 512, 512),
                down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4)


def sd_unet_config(sample_size: int = 64) -> dict:
    """Stable Diffusion 2.1's ``UNet2DConditionModel`` architecture (~866 M parameters, v-prediction)."""
    return dict(sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
                attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def sd_vae_config() -> dict:
    """Stable Diffusion's ``AutoencoderKL`` architecture (~84 M parameters, factor-8 latents, 4 channels)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)

"""Diffusion restorers with quality models: guidance in hand-written sampling loops, reward fine-tuning, cost.

Needs the ``diffusion`` extra (``pip install ifqa-loss[diffusion]``: diffusers, peft) for the diffusers
models; the functions take any denoiser callable and a diffusers scheduler. See ``docs/diffusion.md``.

Example:
    >>> from ifqa_loss.diffusion import QualityGuidance, predicted_x0
    >>> QualityGuidance.__name__
    'QualityGuidance'
"""
from .guidance import QualityGuidance, process_gradient, vae_decoder
from .sampling import predicted_x0, sample, start_sample, unet_denoiser

__all__ = ["QualityGuidance", "predicted_x0", "process_gradient", "sample", "start_sample", "unet_denoiser",
           "vae_decoder"]

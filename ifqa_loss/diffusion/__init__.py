"""Diffusion restorers with quality models: guidance in hand-written sampling loops, reward fine-tuning, cost.

Needs the ``diffusion`` extra (``pip install ifqa-loss[diffusion]``: diffusers, peft) for the diffusers
models; the functions take any denoiser callable and a diffusers scheduler. See ``docs/diffusion.md``.

Example:
    >>> from ifqa_loss.diffusion import QualityGuidance, RewardFineTuner
    >>> QualityGuidance.__name__, RewardFineTuner.__name__
    ('QualityGuidance', 'RewardFineTuner')
"""
from .guidance import QualityGuidance, fidelity_term, process_gradient, vae_decoder
from .reward import RewardFineTuner, add_lora, trainable_state_dict
from .sampling import predicted_x0, sample, start_sample, unet_denoiser

__all__ = ["QualityGuidance", "RewardFineTuner", "add_lora", "fidelity_term", "predicted_x0", "process_gradient",
           "sample", "start_sample", "trainable_state_dict", "unet_denoiser", "vae_decoder"]

"""Reference sampling loop for diffusers schedulers (pixel or latent space): the seam guidance and reward plug into.

A *denoiser* here is any callable ``denoiser(sample, timestep, cond) -> model_output`` with ``sample``
(N,C,h,w), ``timestep`` a 0-d integer tensor and ``cond`` whatever conditions the restorer (the degraded
image, its latent, or ``None``); :func:`unet_denoiser` wraps a diffusers ``UNet2DModel``. Schedulers are
diffusers schedulers with ``alphas_cumprod`` and ``config.prediction_type`` (DDIM, DDPM, ...) after
``set_timesteps``. Nothing here imports diffusers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def alpha_bar(scheduler, timestep, like: torch.Tensor) -> torch.Tensor:
    """The scheduler's cumulative alpha at ``timestep`` as a (1,1,1,1) tensor on ``like``'s device and dtype.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> float(alpha_bar(DDIMScheduler(), 0, torch.zeros(1))) > 0.999
        True
    """
    value = scheduler.alphas_cumprod[int(timestep)]
    return value.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32).reshape(
        1, 1, 1, 1)


def predicted_x0(sample: torch.Tensor, model_output: torch.Tensor, alpha_bar_t: torch.Tensor | float,
                 prediction_type: str = "epsilon") -> torch.Tensor:
    """Tweedie's clean-sample estimate x̂0 from x_t (N,C,h,w) and the model output (N,C,h,w).

    ``epsilon``: ``(x - sqrt(1-a) eps) / sqrt(a)``; ``v_prediction``: ``sqrt(a) x - sqrt(1-a) v``;
    ``sample``: the output itself. ``alpha_bar_t``: ``scheduler.alphas_cumprod[t]`` (see :func:`alpha_bar`).

    Example:
        >>> x0, eps, a = torch.ones(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.tensor(0.3)
        >>> xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        >>> torch.allclose(predicted_x0(xt, eps, a), x0, atol=1e-5)
        True
        >>> v = a.sqrt() * eps - (1 - a).sqrt() * x0
        >>> torch.allclose(predicted_x0(xt, v, a, "v_prediction"), x0, atol=1e-5)
        True
    """
    a = torch.as_tensor(alpha_bar_t, device=sample.device, dtype=sample.dtype)
    if prediction_type == "epsilon":
        return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def unet_denoiser(unet: torch.nn.Module, *, condition: str | None = "concat", **unet_kwargs) -> Denoiser:
    """A diffusers ``UNet2DModel`` as a denoiser.

    ``condition="concat"``: the UNet sees ``cat([x_t, cond])`` on channels (SR3 / DiffBIR-style; build the
    UNet with ``in_channels = C + C_cond``), with ``cond`` resized to the sample's size. ``None``: ``cond``
    is ignored (unconditional prior, as in DifFace / PGDiff, where the degraded image enters through the
    start point and the guidance). ``unet_kwargs`` go to every UNet call (e.g. ``encoder_hidden_states=``
    for a ``UNet2DConditionModel``).

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=6, out_channels=3, layers_per_block=1,
        ...                    block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
        ...                    up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
        >>> unet_denoiser(unet)(torch.randn(2, 3, 8, 8), torch.tensor(10), torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 8, 8])
    """
    if condition not in ("concat", None):
        raise ValueError(f"condition must be 'concat' or None, got {condition!r}")

    def denoise(sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if condition == "concat":
            if cond is None:
                raise ValueError("this denoiser is conditioned on the degraded input: pass cond=")
            if cond.shape[-2:] != sample.shape[-2:]:
                cond = torch.nn.functional.interpolate(cond, size=sample.shape[-2:], mode="area")
            sample = torch.cat([sample, cond.to(sample.dtype)], dim=1)
        return unet(sample, timestep, **unet_kwargs).sample

    return denoise


def start_sample(scheduler, shape: tuple[int, ...], *, start: torch.Tensor | None = None, strength: float = 1.0,
                 generator: torch.Generator | None = None, device=None, dtype=torch.float32):
    """The first sample and the timesteps to run: pure noise (``strength=1``) or ``start`` noised to ``strength``.

    ``strength < 1`` (SDEdit / DifFace-style start from the diffused degraded image): the loop skips the
    first ``(1 - strength)`` of ``scheduler.timesteps`` and ``start`` (N,C,h,w) is noised to the first
    timestep kept. Returns ``(x_T (N,C,h,w), timesteps (S,))``; call ``scheduler.set_timesteps`` first.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> scheduler = DDIMScheduler(); scheduler.set_timesteps(10)
        >>> x, steps = start_sample(scheduler, (1, 3, 8, 8), start=torch.zeros(1, 3, 8, 8), strength=0.5)
        >>> x.shape, steps.tolist()
        (torch.Size([1, 3, 8, 8]), [400, 300, 200, 100, 0])
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    device = device if device is not None else (start.device if start is not None else "cpu")
    timesteps = scheduler.timesteps
    noise = torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device,
                        dtype=dtype).to(device)
    if strength == 1 or start is None:
        return noise * getattr(scheduler, "init_noise_sigma", 1.0), timesteps
    skip = min(int(round((1 - strength) * len(timesteps))), len(timesteps) - 1)
    timesteps = timesteps[skip:]
    return scheduler.add_noise(start.to(device, dtype), noise, timesteps[:1]), timesteps


@dataclass
class SampleOutput:
    """What :func:`sample` returns: the final ``sample`` (N,C,h,w), the last step's x̂0, the guidance log."""

    sample: torch.Tensor
    x0: torch.Tensor
    log: list[dict] = field(default_factory=list)


def sample(denoiser: Denoiser, scheduler, x: torch.Tensor, timesteps: torch.Tensor, *, cond=None, degraded=None,
           guidance=None, grad_last_k: int = 0, generator: torch.Generator | None = None,
           step_kwargs: dict | None = None) -> SampleOutput:
    """Run the reverse chain from ``x`` (N,C,h,w) over ``timesteps`` (the loop restoration code writes by hand).

    Args:
        denoiser: ``denoiser(x_t, t, cond)`` (see the module docstring).
        scheduler: a diffusers scheduler after ``set_timesteps``.
        cond: passed to the denoiser. ``degraded``: (N,3,H,W) image for guidance's fidelity term.
        guidance: e.g. :class:`~ifqa_loss.diffusion.guidance.QualityGuidance`; at the steps it is active it
            returns the model output it computed with gradients and a shift, and the loop moves the
            scheduler's next sample by ``-shift`` (DPS / universal-guidance style).
        grad_last_k: run the last K steps with autograd on (DRaFT-K / ReFL: the reward's gradient reaches
            the denoiser through K steps; earlier steps run under ``no_grad`` and are detached).
        step_kwargs: extra ``scheduler.step`` arguments (e.g. ``{"eta": 0.0}`` for DDIM).

    Example:
        >>> from diffusers import DDIMScheduler
        >>> scheduler = DDIMScheduler(clip_sample=False); scheduler.set_timesteps(4)
        >>> x, steps = start_sample(scheduler, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> out = sample(lambda x, t, c: torch.zeros_like(x), scheduler, x, steps)  # "predicts no noise"
        >>> torch.allclose(out.sample, x / scheduler.alphas_cumprod[steps[0]].sqrt(), atol=1e-4)
        True
    """
    step_kwargs = dict(step_kwargs or {})
    if generator is not None:
        step_kwargs.setdefault("generator", generator)
    prediction_type = scheduler.config.prediction_type
    log: list[dict] = []
    x0 = x
    total = len(timesteps)
    for index, t in enumerate(timesteps):
        with_grad = index >= total - grad_last_k
        out = shift = None
        if guidance is not None and guidance.active(index, total):
            out, shift, entry = guidance(x, t, index, denoiser=denoiser, scheduler=scheduler, cond=cond,
                                         degraded=degraded)
            log.append(entry)
        if out is None or with_grad:  # the guided output is detached: rerun where the reward needs its graph
            with torch.set_grad_enabled(with_grad):
                out = denoiser(x, t, cond)
        with torch.set_grad_enabled(with_grad):
            x0 = predicted_x0(x, out, alpha_bar(scheduler, t, x), prediction_type)
            x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        if shift is not None:
            x = x - shift.to(x.dtype)
    return SampleOutput(sample=x, x0=x0, log=log)

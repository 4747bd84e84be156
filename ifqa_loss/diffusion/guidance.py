"""Quality guidance for hand-written sampling loops: grad of (quality + fidelity) at x̂0, moved onto the sample.

At a guided step the denoiser runs with gradients, the clean estimate x̂0 is formed for the model's
prediction type (:func:`~ifqa_loss.diffusion.sampling.predicted_x0`), decoded through the VAE for latent
models, and the loss ``quality_weight * quality(image) + fidelity_weight * fidelity(A(image), degraded)``
is differentiated with respect to x_t. The gradient is (optionally) normalised and clipped per sample,
multiplied by ``scale * schedule(t)`` and returned as a *shift* the loop subtracts from the scheduler's
next sample (DPS, Chung et al. 2023; universal guidance's forward step, Bansal et al. 2023; PGDiff's
classifier-style quality guidance).

Memory: one guided step keeps the activations of one denoiser call and of the decoder for backward;
:func:`vae_decoder` turns on diffusers' per-block gradient checkpointing in the decoder (recompute
instead of store), the dominant term at 512 px (numbers: ``python -m ifqa_loss.diffusion.bench``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .sampling import alpha_bar, predicted_x0

SCHEDULES = ("constant", "sqrt_one_minus_alpha_bar")
NORMALIZE = (None, "rms")
FIDELITY = ("mse", "l1")


def resize_to(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,h,w) of ``like``: area when shrinking (a down-sampling operator A), bilinear when growing."""
    if image.shape[-2:] == like.shape[-2:]:
        return image
    mode = "area" if image.shape[-1] > like.shape[-1] else "bilinear"
    return F.interpolate(image, size=like.shape[-2:], mode=mode)


def fidelity_term(image: torch.Tensor, reference: torch.Tensor, *, operator: Callable | None = None,
                  fidelity: str | Callable = "mse") -> torch.Tensor:
    """``fidelity(A(image), reference)`` for image (N,3,H,W) and reference (N,3,h,w); A defaults to :func:`resize_to`,
    ``fidelity`` is ``"mse"``, ``"l1"`` or a callable ``(measured, reference) -> scalar``.

    Example:
        >>> float(fidelity_term(torch.ones(1, 3, 8, 8), torch.ones(1, 3, 4, 4)))
        0.0
    """
    if isinstance(fidelity, str):
        if fidelity not in FIDELITY:
            raise ValueError(f"fidelity must be one of {FIDELITY} or a callable, got {fidelity!r}")
        fidelity = {"mse": F.mse_loss, "l1": F.l1_loss}[fidelity]
    reference = reference.to(image)
    measured = operator(image) if operator is not None else resize_to(image, reference)
    return fidelity(measured, reference)


def process_gradient(grad: torch.Tensor, *, normalize: str | None = None,
                     max_norm: float | None = None) -> torch.Tensor:
    """Per-sample gradient conditioning: ``normalize="rms"`` divides each sample's (N,C,h,w) gradient by its RMS
    (then ``scale`` is the step's RMS size in sample units); ``max_norm`` clips each sample's RMS to it.

    Example:
        >>> g = torch.stack([torch.full((1, 2, 2), 4.0), torch.full((1, 2, 2), 0.5)])
        >>> process_gradient(g, normalize="rms").flatten(1)[:, 0].tolist()
        [1.0, 1.0]
        >>> process_gradient(g, max_norm=1.0).flatten(1)[:, 0].tolist()
        [1.0, 0.5]
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    rms = grad.flatten(1).pow(2).mean(1).sqrt().reshape(-1, *[1] * (grad.ndim - 1))
    if normalize == "rms":
        grad = grad / rms.clamp_min(1e-12)
        rms = torch.ones_like(rms)
    if max_norm is not None:
        grad = grad * (max_norm / rms.clamp_min(1e-12)).clamp(max=1.0)
    return grad


def vae_decoder(vae: torch.nn.Module, *, checkpointing: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """A diffusers ``AutoencoderKL`` as ``decode(latent (N,c,h,w)) -> image (N,3,H,W)`` (latents scaled by
    ``vae.config.scaling_factor``, as Stable-Diffusion-based restorers such as DiffBIR / OSEDiff keep them).

    ``checkpointing=True`` enables diffusers' per-block gradient checkpointing of the decoder (a flag on
    ``vae``: it also affects your other uses of it): backward recomputes each up-block instead of storing
    its activations, roughly one extra decoder forward in time for a fraction of the memory.

    Example:
        >>> from diffusers import AutoencoderKL
        >>> vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        ...                     up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
        >>> vae_decoder(vae)(torch.randn(1, 4, 8, 8)).shape
        torch.Size([1, 3, 16, 16])
    """
    if checkpointing:
        vae.enable_gradient_checkpointing()
    scaling = float(getattr(vae.config, "scaling_factor", 1.0))

    def decode(latent: torch.Tensor) -> torch.Tensor:
        return vae.decode(latent / scaling).sample

    return decode


class QualityGuidance:
    """Guide a sampling loop towards low ``quality`` loss while keeping fidelity to the degraded input.

    Args (keyword-only):
        quality: any callable ``image (N,3,H,W) in [-1, 1] -> scalar loss``: ``IFQALoss(input_range=(-1, 1),
            mode=..., region_weights=...)``, ``GFIQALoss``, an EOT-wrapped loss (``augment=``), or a plain
            function. Its options (regions, non-saturating form) pass through untouched.
        quality_weight: weight of the quality term.
        fidelity_weight: weight of the data-consistency term ``fidelity(operator(image), degraded)``
            (0: none). ``operator``: the degradation model A (default :func:`resize_to` the degraded size,
            i.e. area down-sampling); ``fidelity``: ``"mse"``, ``"l1"`` or a callable.
        scale: guidance strength; the shift is ``scale * schedule(t) * g`` (``scale=0`` changes nothing).
        schedule: ``"constant"``, ``"sqrt_one_minus_alpha_bar"`` (universal guidance's weight: strong when
            noisy, vanishing at the end), or ``schedule(index, total, alpha_bar_t) -> float``.
        normalize, max_norm: see :func:`process_gradient`.
        steps: loop indices to guide: ``None`` (all), an iterable of indices, or ``(start, stop)``
            fractions of the loop given as a ``slice`` (e.g. ``slice(0.2, 1.0)``).
        decode: ``latent -> image`` for latent models (see :func:`vae_decoder`); ``None`` in pixel space.
        decode_every: decode (and apply the image-space terms) on every k-th guided step only; the other
            guided steps use the latent fidelity ``||x̂0 - degraded_latent||²`` (when ``degraded_latent``
            is given, else they are skipped). Saves the decoder's forward+backward on k-1 of k steps.
        degraded_latent: the degraded input's latent (N,c,h,w) for those steps.
        clamp: clamp images to [-1, 1] before the losses (x̂0 overshoots early in the chain; IFQALoss
            refuses far out-of-range inputs). Gradient flows through in-range pixels.

    Call: ``guidance(x_t, t, index, denoiser=, scheduler=, cond=, degraded=)`` -> ``(model_output (detached),
    shift (N,C,h,w), log entry)``; :func:`~ifqa_loss.diffusion.sampling.sample` does this for you.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> from ifqa_loss.diffusion.sampling import sample, start_sample
        >>> scheduler = DDIMScheduler(); scheduler.set_timesteps(5)
        >>> brighter = QualityGuidance(quality=lambda img: (img.mean() - 0.5) ** 2, scale=1.0, normalize="rms")
        >>> x, steps = start_sample(scheduler, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> denoiser = lambda x, t, c: 0.9 * x  # a stand-in epsilon model
        >>> plain = sample(denoiser, scheduler, x, steps).sample
        >>> guided = sample(denoiser, scheduler, x, steps, guidance=brighter).sample
        >>> bool(abs(guided.mean() - 0.5) < abs(plain.mean() - 0.5))
        True
    """

    def __init__(self, *, quality: Callable | None = None, quality_weight: float = 1.0, fidelity_weight: float = 0.0,
                 operator: Callable | None = None, fidelity: str | Callable = "mse", scale: float = 1.0,
                 schedule: str | Callable = "constant", normalize: str | None = None, max_norm: float | None = None,
                 steps: Iterable[int] | slice | None = None, decode: Callable | None = None, decode_every: int = 1,
                 degraded_latent: torch.Tensor | None = None, clamp: bool = True):
        if quality is None and fidelity_weight == 0:
            raise ValueError("nothing to guide with: pass quality= (e.g. IFQALoss(...)) and/or fidelity_weight > 0")
        if isinstance(schedule, str) and schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a callable, got {schedule!r}")
        if isinstance(fidelity, str) and fidelity not in FIDELITY:
            raise ValueError(f"fidelity must be one of {FIDELITY} or a callable, got {fidelity!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if decode_every < 1:
            raise ValueError(f"decode_every must be >= 1, got {decode_every}")
        self.quality, self.quality_weight, self.fidelity_weight = quality, float(quality_weight), float(fidelity_weight)
        self.operator = operator
        self.fidelity = fidelity
        self.scale, self.schedule, self.normalize, self.max_norm = float(scale), schedule, normalize, max_norm
        if steps is not None and not isinstance(steps, slice):
            steps = frozenset(int(i) for i in steps)
        self.steps, self.decode, self.decode_every = steps, decode, int(decode_every)
        self.degraded_latent, self.clamp = degraded_latent, clamp
        self._guided = 0  # guided steps so far in this loop (decode_every counts these)

    def active(self, index: int, total: int) -> bool:
        """Whether loop step ``index`` of ``total`` is guided."""
        if index == 0:
            self._guided = 0
        if self.steps is None:
            return True
        if isinstance(self.steps, slice):
            start, stop = self.steps.start or 0.0, 1.0 if self.steps.stop is None else self.steps.stop
            return start <= index / total < stop
        return index in self.steps

    def weight(self, index: int, total: int, alpha_bar_t: torch.Tensor) -> float:
        """``scale * schedule`` at this step."""
        if callable(self.schedule):
            return self.scale * float(self.schedule(index, total, alpha_bar_t))
        if self.schedule == "sqrt_one_minus_alpha_bar":
            return self.scale * float((1 - alpha_bar_t).sqrt())
        return self.scale

    def objective(self, x0: torch.Tensor, degraded: torch.Tensor | None, *, decode_now: bool = True):
        """The guided loss at x̂0 (N,C,h,w) -> ``(scalar loss or None, {term: float})``."""
        parts: dict[str, torch.Tensor] = {}
        if self.decode is not None and not decode_now:
            if self.degraded_latent is not None and self.fidelity_weight:
                parts["latent_fidelity"] = F.mse_loss(x0, self.degraded_latent.to(x0))
        else:
            image = self.decode(x0) if self.decode is not None else x0
            if self.clamp:
                image = image.clamp(-1, 1)
            if self.quality is not None and self.quality_weight:
                parts["quality"] = self.quality(image)
            if self.fidelity_weight:
                if degraded is None:
                    raise ValueError("fidelity_weight > 0 needs the degraded image: pass degraded= to the loop")
                parts["fidelity"] = fidelity_term(image, degraded, operator=self.operator, fidelity=self.fidelity)
        weights = {"quality": self.quality_weight, "fidelity": self.fidelity_weight,
                   "latent_fidelity": self.fidelity_weight}
        total = sum(weights[k] * v.float() for k, v in parts.items()) if parts else None
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def __call__(self, x: torch.Tensor, t, index: int, *, denoiser, scheduler, cond=None, degraded=None):
        total_steps = len(scheduler.timesteps)
        decode_now = self._guided % self.decode_every == 0
        self._guided += 1
        a = alpha_bar(scheduler, t, x)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = denoiser(x_in, t, cond)
            x0 = predicted_x0(x_in, out, a, scheduler.config.prediction_type)
            loss, parts = self.objective(x0, degraded, decode_now=decode_now)
            if loss is None:
                return out.detach(), None, {"index": index, "t": int(t), "skipped": True}
            (grad,) = torch.autograd.grad(loss, x_in)
        weight = self.weight(index, total_steps, a)
        grad = process_gradient(grad, normalize=self.normalize, max_norm=self.max_norm)
        entry = {"index": index, "t": int(t), "loss": float(loss.detach()), "weight": weight,
                 "grad_rms": float(grad.pow(2).mean().sqrt()), **parts}
        return out.detach(), weight * grad, entry

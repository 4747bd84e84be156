"""Reward fine-tuning of a diffusion restorer (ReFL / DRaFT-K): the quality loss back-propagated through the
last K denoising steps, with a fidelity term, a monitor seam, bf16/AMP, exact resume and DDP.

The reward is any callable ``image (N,3,H,W) in [-1, 1] -> scalar loss`` (lower is better: ``IFQALoss``,
``GFIQALoss``, an EOT/ensemble-wrapped loss); it is never part of the saved state. ``monitor`` is any object
with ``step(step: int, restore: Callable[[degraded (N,3,h,w)], restored (N,3,H,W)]) -> dict | None``,
called after every ``monitor_every``-th update with a no-grad restorer of the current model; a returned
dict joins the step's log, and ``{"stop": True}`` sets :attr:`RewardFineTuner.should_stop` (the seam the
metric-gaming defences' monitor plugs into: held-out judges, online refresh).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .guidance import FIDELITY, fidelity_term, resize_to
from .sampling import sample, start_sample, unet_denoiser

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


def add_lora(unet: torch.nn.Module, *, rank: int = 4, alpha: float | None = None,
             target_modules=LORA_TARGETS) -> torch.nn.Module:
    """Inject peft LoRA adapters into ``unet`` in place; only the adapters stay trainable (OSEDiff-style).

    Example:
        >>> from ifqa_loss.diffusion.models import tiny_unet
        >>> unet = add_lora(tiny_unet(), rank=2)
        >>> all("lora_" in n for n, p in unet.named_parameters() if p.requires_grad)
        True
    """
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(target_modules))
    return peft.inject_adapter_in_model(config, unet)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (the whole UNet, or only its LoRA adapters), detached, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in _unwrap(model).named_parameters() if p.requires_grad}


class RewardFineTuner:
    """Fine-tune a diffusion restorer so its samples score well under ``reward`` while staying faithful.

    Args:
        model: the UNet (``UNet2DModel``; whole, LoRA-injected with :func:`add_lora`, or DDP-wrapped).
        scheduler: a diffusers scheduler (DDIM for the few-step chains used here).
        reward: quality loss on the restored image (lower is better), e.g. ``IFQALoss(input_range=(-1, 1))``.
        reward_weight, fidelity_weight: the two terms; ``fidelity`` ``"l1"`` | ``"mse"`` | callable, to the
            ``target`` when ``step`` gets one, else to the degraded input through ``operator`` (default
            area down-sampling to its size).
        k: steps the gradient flows through (the last K of ``num_inference_steps``; ``k=1`` with
            ``num_inference_steps=1`` is the one-step, OSEDiff-style case).
        strength: 1 starts from noise; < 1 from the degraded image noised to that level (DifFace-style).
        condition: ``"concat"`` (the UNet sees the degraded image on extra input channels) or ``None``.
        decode: ``latent -> image`` for latent models (see :func:`~ifqa_loss.diffusion.guidance.vae_decoder`).
        sample_shape: ``degraded -> shape`` of x_T (default: the degraded image's shape).
        optimizer: default AdamW(lr) over the trainable parameters.
        max_grad_norm: gradient clipping (``None``: off).
        autocast_dtype: ``torch.bfloat16`` runs the model under autocast (CPU: tested; CUDA bf16 / fp16 with
            ``grad_scaler=torch.amp.GradScaler("cuda")``: written, not executed on this machine).
        monitor, monitor_every: see the module docstring.
        seed: every step draws its noise from ``(seed, step, rank)``, so a resumed run repeats exactly.
        denoiser: ``denoiser(x_t, t, cond)`` calling ``model`` your way (default :func:`unet_denoiser`).

    Example:
        >>> from diffusers import DDIMScheduler
        >>> from ifqa_loss.diffusion.models import tiny_unet
        >>> tuner = RewardFineTuner(tiny_unet(in_channels=6), DDIMScheduler(), reward=lambda img: img.std(),
        ...                         num_inference_steps=2, k=1)
        >>> log = tuner.step(torch.rand(2, 3, 16, 16) * 2 - 1)
        >>> sorted(log)[:3], tuner.step_count
        (['fidelity', 'grad_norm', 'loss'], 1)
    """

    def __init__(self, model: torch.nn.Module, scheduler, *, reward: Callable | None, reward_weight: float = 1.0,
                 fidelity_weight: float = 1.0, fidelity: str | Callable = "l1", operator: Callable | None = None,
                 k: int = 1, num_inference_steps: int = 4, strength: float = 1.0, condition: str | None = "concat",
                 decode: Callable | None = None, sample_shape: Callable | None = None,
                 optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-4,
                 max_grad_norm: float | None = 1.0, autocast_dtype: torch.dtype | None = None, grad_scaler=None,
                 monitor=None, monitor_every: int = 1, seed: int = 0, denoiser: Callable | None = None):
        if not 1 <= k <= num_inference_steps:
            raise ValueError(f"k must be in 1..num_inference_steps ({num_inference_steps}), got {k}")
        if reward is None and fidelity_weight == 0:
            raise ValueError("nothing to train for: pass reward= (e.g. IFQALoss(...)) and/or fidelity_weight > 0")
        if isinstance(fidelity, str) and fidelity not in FIDELITY:
            raise ValueError(f"fidelity must be one of {FIDELITY} or a callable, got {fidelity!r}")
        self.model, self.scheduler, self.reward = model, scheduler, reward
        self.reward_weight, self.fidelity_weight = float(reward_weight), float(fidelity_weight)
        self.fidelity = fidelity
        self.operator, self.k, self.num_inference_steps, self.strength = operator, k, num_inference_steps, strength
        self.denoiser = denoiser or unet_denoiser(model, condition=condition)
        self.decode, self.sample_shape = decode, sample_shape or (lambda degraded: tuple(degraded.shape))
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters: unfreeze the UNet or add_lora() first")
        self.optimizer = optimizer or torch.optim.AdamW(self.params, lr=lr)
        self.max_grad_norm, self.autocast_dtype, self.grad_scaler = max_grad_norm, autocast_dtype, grad_scaler
        self.monitor, self.monitor_every, self.seed = monitor, int(monitor_every), int(seed)
        self.step_count, self.should_stop = 0, False
        scheduler.set_timesteps(num_inference_steps)

    @property
    def _rank(self) -> int:
        dist = torch.distributed
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _device(self) -> torch.device:
        return self.params[0].device

    def restore(self, degraded: torch.Tensor, *, grad_last_k: int = 0, seed: int | None = None) -> torch.Tensor:
        """Sample a restoration of ``degraded`` (N,3,h,w) -> image (N,3,H,W) in the decoder's range.

        ``seed`` fixes the chain's noise (default: this step's draw). With ``grad_last_k=0`` no graph is kept.
        """
        seed = self.seed * 1_000_003 + self.step_count * 101 + self._rank if seed is None else seed
        generator = torch.Generator(device="cpu").manual_seed(seed)
        degraded = degraded.to(self._device())
        start = None if self.strength == 1 else resize_to(degraded, torch.empty(self.sample_shape(degraded)))
        self.scheduler.set_timesteps(self.num_inference_steps)
        x, timesteps = start_sample(self.scheduler, self.sample_shape(degraded), start=start, strength=self.strength,
                                    generator=generator, device=self._device())
        autocast = torch.autocast(self._device().type, dtype=self.autocast_dtype,
                                  enabled=self.autocast_dtype is not None)
        with autocast, torch.set_grad_enabled(grad_last_k > 0):
            out = sample(self.denoiser, self.scheduler, x, timesteps, cond=degraded, grad_last_k=grad_last_k,
                         generator=generator)
            image = self.decode(out.sample) if self.decode is not None else out.sample
        return image.float()

    def losses(self, image: torch.Tensor, degraded: torch.Tensor, target: torch.Tensor | None = None):
        """``(total, {term: value})`` of a restored batch (N,3,H,W); the image is clamped to [-1, 1] for the reward."""
        parts = {}
        if self.reward is not None and self.reward_weight:
            parts["reward"] = self.reward(image.clamp(-1, 1))
        if self.fidelity_weight:
            if target is not None:
                parts["fidelity"] = fidelity_term(image, target, fidelity=self.fidelity)
            else:
                parts["fidelity"] = fidelity_term(image, degraded, operator=self.operator, fidelity=self.fidelity)
        weights = {"reward": self.reward_weight, "fidelity": self.fidelity_weight}
        return sum(weights[k] * v.float() for k, v in parts.items()), parts

    def step(self, degraded: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        """One update on a degraded batch (N,3,h,w) (and optional ground truth (N,3,H,W)) -> log dict."""
        self.model.train()
        image = self.restore(degraded, grad_last_k=self.k)
        loss, parts = self.losses(image, degraded.to(image.device), target)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm or float("inf"))
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.step_count += 1
        log = {"step": self.step_count, "loss": float(loss.detach()), "grad_norm": float(norm),
               **{k: float(v.detach()) for k, v in parts.items()}}
        if self.monitor is not None and self.step_count % self.monitor_every == 0:
            report = self.monitor.step(self.step_count, self._monitor_restore) or {}
            self.should_stop = bool(report.get("stop", False))
            log.update({f"monitor/{k}": v for k, v in report.items()})
        return log

    def _monitor_restore(self, degraded: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.restore(degraded, seed=self.seed)

    @torch.no_grad()
    def evaluate(self, degraded: torch.Tensor, losses: dict[str, Callable], *, seed: int = 12345) -> dict[str, float]:
        """Mean of each loss on the restorations of a fixed probe batch with fixed noise (no update)."""
        self.model.eval()
        image = self.restore(degraded, seed=seed).clamp(-1, 1)
        return {name: float(fn(image)) for name, fn in losses.items()}

    def state_dict(self) -> dict:
        """Trainable weights (UNet or LoRA adapters), optimiser, step: never the reward's metric weights."""
        state = {"step": self.step_count, "model": trainable_state_dict(self.model),
                 "optimizer": self.optimizer.state_dict(), "seed": self.seed}
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        missing = set(trainable_state_dict(self.model)) - set(state["model"])
        extra = set(state["model"]) - set(trainable_state_dict(self.model))
        if missing or extra:
            raise ValueError(f"the saved trainable weights do not match this model (missing {sorted(missing)[:2]}, "
                             f"unexpected {sorted(extra)[:2]}): build the model (and add_lora) as when it was saved")
        _unwrap(self.model).load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.step_count, self.seed = int(state["step"]), int(state["seed"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` atomically (a crash never leaves a half-written file)."""
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

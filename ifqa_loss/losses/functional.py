"""Functional core of the quality losses: logits -> per-pixel loss -> per-image weighted mean -> reduction.

All reductions run in float32 whatever precision the network ran in, so fp16/bf16
autocast never produces inf/NaN at saturated maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_MODES = ("one_minus", "nonsaturating")
REDUCTIONS = ("mean", "sum", "none")


def quality_loss_map(logits: torch.Tensor, mode: str = "one_minus") -> torch.Tensor:
    """(N,1,h,w) pre-sigmoid realness -> (N,1,h,w) float32 per-pixel loss.

    ``one_minus``: ``1 - sigmoid(logit)``, written as ``sigmoid(-logit)`` to keep precision near 1.
    ``nonsaturating``: ``-log(sigmoid(logit)) = softplus(-logit)``; finite at any logit.
    """
    logits = logits.float()
    if mode == "one_minus":
        return torch.sigmoid(-logits)
    if mode == "nonsaturating":
        return F.softplus(-logits)
    raise ValueError(f"mode must be one of {LOSS_MODES}, got {mode!r}")


def check_pixel_weights(
    weights: torch.Tensor, batch: int, name: str = "pixel_weights", *, check_values: bool = True
) -> None:
    """Raise unless ``weights`` is a finite, non-negative (N,1,h,w) or (1,1,h,w) map with mass in every image.

    ``check_values=False`` keeps the shape checks and skips the value checks (one host sync).
    """
    if not isinstance(weights, torch.Tensor) or weights.ndim != 4 or weights.shape[1] != 1:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"{name} must be a (N,1,h,w) or (1,1,h,w) tensor, got {shape}")
    if weights.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch size {weights.shape[0]} but the input has {batch}; pass N or 1 maps")
    if not check_values:
        return
    w = weights.detach().flatten(1)
    # One host sync for all checks.
    bad_value, empty = torch.stack([~torch.isfinite(w).all() | (w < 0).any(), (w.amax(1) <= 0).any()]).tolist()
    if bad_value:
        raise ValueError(f"{name} must be finite and >= 0")
    if empty:
        empty_images = (w.amax(1) <= 0).nonzero().flatten().tolist()
        raise ValueError(f"{name} are all zero for image(s) {empty_images}: every image needs some weight")


def resize_weights(weights: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(N,1,h,w) weights -> (N,1,*size), detached float32 (area when shrinking, bilinear when growing)."""
    weights = weights.detach().float()
    if weights.shape[-2:] == tuple(size):
        return weights
    mode = "area" if weights.shape[-1] > size[-1] else "bilinear"
    return F.interpolate(weights, size=tuple(size), mode=mode)


def weighted_image_mean(loss_map: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(N,1,h,w) loss and optional (N|1,1,h',w') weights -> (N,) ``sum(w*l)/sum(w)`` per image.

    Weights are constants (no gradient), resized to the loss map when their size differs.
    """
    if weights is None:
        return loss_map.mean(dim=(1, 2, 3))
    weights = resize_weights(weights, loss_map.shape[-2:]).to(loss_map.dtype)
    # Scale-free: dividing by each image's largest weight first makes 1e-30 weights give the same loss as 1.
    weights = weights / weights.amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    weights = weights.expand(loss_map.shape[0], -1, -1, -1)
    return (weights * loss_map).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)


def reduce(per_image: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(N,) -> scalar (``mean``/``sum``) or (N,) (``none``)."""
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")

"""Weighted sums of named loss terms with weight schedules: the backbone of loss-weight ablations.

    composer = LossComposer.from_config({
        "l1":   {"type": "L1Loss", "weight": 1.0},
        "ifqa": {"type": "IFQALoss", "weight": 0.1, "checkpoint": "IFQA_Metric.pth",
                 "schedule": {"type": "linear_warmup", "steps": 5000}},
    })
    total, logs = composer(step, l1=(restored, target), ifqa=(restored,))

``logs`` holds each term's raw value and ``total`` as detached tensors (no device sync until
you log them) and each term's current weight as ``weight/<name>``. A YAML file with the same
structure loads with :meth:`LossComposer.from_yaml`.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .gfiqa import GFIQALoss
from .ifqa import IFQALoss, IFQAPlusLoss

LOSS_TYPES: dict[str, Callable[..., nn.Module]] = {
    "IFQALoss": IFQALoss,
    "IFQAPlusLoss": IFQAPlusLoss,
    "GFIQALoss": GFIQALoss,
    "L1Loss": nn.L1Loss,
    "MSELoss": nn.MSELoss,
    "SmoothL1Loss": nn.SmoothL1Loss,
}


@dataclass(frozen=True)
class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class LinearWarmup:
    """Factor rises linearly from ``start_factor`` at ``start`` to 1 at ``start + steps``."""

    steps: int
    start: int = 0
    start_factor: float = 0.0

    def __call__(self, step: int) -> float:
        progress = min(max((step - self.start) / max(self.steps, 1), 0.0), 1.0)
        return self.start_factor + (1.0 - self.start_factor) * progress


@dataclass(frozen=True)
class StepSchedule:
    """Factor is multiplied by ``gamma`` at each milestone step (like ``MultiStepLR``)."""

    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        return self.gamma ** bisect.bisect_right(sorted(self.milestones), step)


SCHEDULES = {"constant": Constant, "linear_warmup": LinearWarmup, "step": StepSchedule}


def build_schedule(spec: Mapping | Callable[[int], float] | None):
    if spec is None:
        return Constant()
    if callable(spec):
        return spec
    spec = dict(spec)
    kind = spec.pop("type", "constant")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {sorted(SCHEDULES)}")
    if "milestones" in spec:
        spec["milestones"] = tuple(spec["milestones"])
    return SCHEDULES[kind](**spec)


class LossComposer(nn.Module):
    """``total = sum_k weight_k * schedule_k(step) * loss_k(*args_k)``.

    Args:
        terms: ``{name: (loss_module, weight)}`` or ``{name: (loss_module, weight, schedule)}``.

    Example:
        >>> import torch
        >>> composer = LossComposer.from_config({
        ...     "l1": {"type": "L1Loss", "weight": 1.0},
        ...     "l2": {"type": "MSELoss", "weight": 0.5, "schedule": {"type": "linear_warmup", "steps": 10}},
        ... })
        >>> pred, target = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
        >>> total, logs = composer(5, l1=(pred, target), l2=(pred, target))
        >>> round(total.item(), 3), logs["weight/l2"]
        (1.25, 0.25)
    """

    def __init__(self, terms: Mapping[str, tuple]):
        super().__init__()
        if not terms:
            raise ValueError("LossComposer needs at least one term")
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.schedules: dict[str, Callable[[int], float]] = {}
        for name, term in terms.items():
            loss, weight, *schedule = term
            self.terms[name] = loss
            self.weights[name] = float(weight)
            self.schedules[name] = build_schedule(schedule[0] if schedule else None)

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping]) -> LossComposer:
        """Build from ``{name: {"type": ..., "weight": ..., "schedule": {...}, **loss_kwargs}}``."""
        terms = {}
        for name, spec in config.items():
            spec = dict(spec)
            kind = spec.pop("type", None)
            if kind not in LOSS_TYPES:
                raise ValueError(f"term {name!r}: unknown type {kind!r}; choose from {sorted(LOSS_TYPES)}")
            weight = spec.pop("weight", 1.0)
            schedule = spec.pop("schedule", None)
            if "input_range" in spec:
                spec["input_range"] = tuple(spec["input_range"])
            terms[name] = (LOSS_TYPES[kind](**spec), weight, build_schedule(schedule))
        return cls(terms)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> LossComposer:
        """Terms from a YAML file, read with :mod:`ifqa_loss.safeio`'s limits (regular UTF-8 file, size, nesting,
        alias expansion)."""
        from ..safeio import read_yaml

        return cls.from_config(read_yaml(path, "loss configuration"))

    def weight_at(self, name: str, step: int) -> float:
        return self.weights[name] * self.schedules[name](step)

    def forward(self, step: int, **inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """``inputs[name]`` is the argument tuple of term ``name`` (a single tensor is wrapped)."""
        missing = [name for name in self.terms if name not in inputs]
        unknown = [name for name in inputs if name not in self.terms]
        if missing or unknown:
            raise ValueError(f"LossComposer inputs: missing {missing}, unknown {unknown}; terms are {list(self.terms)}")
        total = None
        logs: dict[str, torch.Tensor | float] = {}
        for name, loss in self.terms.items():
            args = inputs[name] if isinstance(inputs[name], tuple) else (inputs[name],)
            weight = self.weight_at(name, step)
            logs[f"weight/{name}"] = weight
            if weight == 0.0:
                continue  # an ablated or not-yet-warmed-up term costs nothing
            value = loss(*args)
            logs[name] = value.detach()
            total = weight * value if total is None else total + weight * value
        if total is None:
            raise ValueError(f"every term has weight 0 at step {step}; nothing to optimise")
        logs["total"] = total.detach()
        return total, logs

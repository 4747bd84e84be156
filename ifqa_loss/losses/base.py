"""Shared machinery of the quality losses: a frozen, eval-locked metric that stays out of the parent's
parameters, modules and checkpoints."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..metric import QualityMetric, load_metric
from ..preprocess import LOSS_CLAMP_HINT, check_image_batch
from ..weights import resolve_metric
from . import functional as QF

OUT_OF_RANGE = ("error", "clamp")


class FrozenMetricLoss(nn.Module):
    """Base of :class:`~ifqa_loss.IFQALoss` and :class:`~ifqa_loss.GFIQALoss` (arguments documented there).

    The metric is held as a plain attribute, not a registered submodule: its ~100 M frozen
    parameters stay out of ``parent.parameters()`` (parameter counts, optimisers,
    ``requires_grad_``), ``parent.modules()`` (a user's ``apply(init_fn)`` cannot overwrite it)
    and ``parent.state_dict()``; ``.to()``/``.half()`` still reach it. Subclasses get the network
    output from :attr:`metric`, called with the options :meth:`metric_options` returns.
    """

    default_metric: str | None = "ifqa"

    def __new__(cls, *args, **kwargs):
        if args:  # every option is keyword-only; a positional path is the usual slip
            first = args[0]
            hint = (f": for a weight file write {cls.__name__}(checkpoint={os.fspath(first)!r})"
                    if isinstance(first, (str, os.PathLike)) else "")
            raise TypeError(f"{cls.__name__} takes keyword arguments only, got {len(args)} positional{hint}")
        return super().__new__(cls)

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike | None = None,
        metric: str | QualityMetric | None = None,
        input_range: tuple[float, float] = (-1, 1),
        reduction: str = "mean",
        antialias: bool = False,
        out_of_range: str = "error",
        include_in_state_dict: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        precision: str | None = None,
        fast: bool | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        check_values: bool = True,
        random_weights: bool = False,
        sha256: str | None = None,
    ):
        super().__init__()
        if reduction not in QF.REDUCTIONS:
            raise ValueError(f"reduction must be one of {QF.REDUCTIONS}, got {reduction!r}")
        input_range = tuple(float(v) for v in input_range)
        if input_range not in ((-1.0, 1.0), (0.0, 1.0)):
            raise ValueError(f"input_range must be (-1, 1) or (0, 1), got {input_range}")
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
        if isinstance(metric, QualityMetric):
            if checkpoint is not None or random_weights or sha256 is not None:
                raise ValueError("pass either a loaded metric or checkpoint=/random_weights=/sha256=, not both")
            loaded = metric.with_options(channels_last=channels_last, compile=compile, precision=precision,
                                         fast=fast if fast is not None else metric.fast).to(device=device, dtype=dtype)
        else:
            name = metric or self.default_metric if random_weights else resolve_metric(
                metric, checkpoint, default=self.default_metric)
            loaded = load_metric(name, checkpoint=checkpoint, device=device or "cpu", dtype=dtype,
                                 channels_last=channels_last, compile=compile, precision=precision, fast=fast,
                                 random_weights=random_weights, sha256=sha256)
        self.__dict__["metric"] = loaded  # unregistered on purpose (see the class docstring)
        self.input_range = input_range
        self.reduction = reduction
        self.antialias = antialias
        self.out_of_range = out_of_range
        self.include_in_state_dict = include_in_state_dict
        self.check_values = check_values
        self.register_state_dict_post_hook(_add_metric_weights)
        self.register_load_state_dict_pre_hook(_take_metric_weights)

    def _apply(self, fn, recurse=True):
        self.metric._apply(fn, recurse)  # .to()/.half()/.cuda() of a parent reach the unregistered metric
        return super()._apply(fn, recurse)

    def metric_options(self, pred: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``pred`` made ready for the metric (clamped when ``out_of_range="clamp"``) and the options to pass.

        The values are checked here, once, with the loss's own advice (an overshoot is offered
        ``out_of_range="clamp"``); the metric then skips its value check.
        """
        check_image_batch(pred, self.input_range, name="pred", device=next(self.metric.net.parameters()).device,
                          check_values=self.check_values, overshoot_hint=LOSS_CLAMP_HINT,
                          out_of_range=self.out_of_range)
        if self.out_of_range == "clamp":
            pred = pred.clamp(*self.input_range)
        return pred, {"input_range": self.input_range, "antialias": self.antialias, "check_values": False}


_METRIC_PREFIX = "metric."


def _add_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the frozen metric joins a checkpoint only when asked for."""
    if module.include_in_state_dict:
        for name, tensor in module.metric.state_dict().items():
            state_dict[prefix + _METRIC_PREFIX + name] = tensor


def _take_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: metric weights in a checkpoint must equal the loaded ones (never silently replaced).

    A parent saved without them loads strictly; one saved with ``include_in_state_dict=True``
    loads when they are the same weights, and is refused otherwise.
    """
    metric_prefix = prefix + _METRIC_PREFIX
    stored = {k[len(metric_prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(metric_prefix)]}
    if not stored:
        return
    current = module.metric.state_dict()
    differing = [k for k, v in stored.items() if k not in current or current[k].shape != v.shape
                 or not torch.equal(current[k].to(v.device, v.dtype), v)]
    if differing or len(stored) != len(current):
        raise RuntimeError(
            f"the checkpoint carries other {module.metric.name} weights under {metric_prefix!r} "
            f"({len(differing)} differing tensors, e.g. {differing[:2]}) than the loaded metric; the frozen metric "
            "is never replaced by a parent checkpoint: build the loss with checkpoint= for the weights you want, "
            "and drop the 'metric.' keys from the file"
        )

"""Differentiable face-quality losses for training restoration networks."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from . import functional as QF
from .metrics import QualityMetric, load_metric
from .preprocess import check_image_batch
from .regions import expand_region_weights, region_weight_map, template_regions


class FrozenMetricLoss(nn.Module):
    """Shared machinery of the quality losses: a frozen, eval-locked metric that never enters checkpoints.

    Subclasses implement ``forward``; they get the network input from :meth:`network_input` and run
    the network through :meth:`call_net` (channels_last / torch.compile handled there). Arguments
    are documented on :class:`IFQALoss`; ``metric=None`` means the subclass's ``default_metric``.
    """

    default_metric = "ifqa"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        metric: str | QualityMetric | None = None,
        input_range: tuple[float, float] = (-1, 1),
        reduction: str = "mean",
        antialias: bool = False,
        out_of_range: str = "error",
        include_in_state_dict: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        check_values: bool = True,
    ):
        super().__init__()
        metric = self.default_metric if metric is None else metric
        if reduction not in QF.REDUCTIONS:
            raise ValueError(f"reduction must be one of {QF.REDUCTIONS}, got {reduction!r}")
        input_range = tuple(float(v) for v in input_range)
        if input_range not in ((-1.0, 1.0), (0.0, 1.0)):
            raise ValueError(f"input_range must be (-1, 1) or (0, 1), got {input_range}")
        if out_of_range not in ("error", "clamp"):
            raise ValueError(f"out_of_range must be 'error' or 'clamp', got {out_of_range!r}")
        if isinstance(metric, QualityMetric):
            if checkpoint is not None:
                raise ValueError("pass either a loaded metric or a checkpoint, not both")
            self.metric = metric.to(device=device, dtype=dtype)
        else:
            self.metric = load_metric(metric, checkpoint=checkpoint, device=device or "cpu", dtype=dtype)
        self.input_range = input_range
        self.reduction = reduction
        self.antialias = antialias
        self.out_of_range = out_of_range
        self.include_in_state_dict = include_in_state_dict
        self.channels_last = channels_last
        self.compile = compile
        self.check_values = check_values
        if channels_last:
            self.metric.net.to(memory_format=torch.channels_last)
        self._compiled: dict[str, Any] = {}
        self.register_state_dict_post_hook(_drop_metric_weights)
        self.register_load_state_dict_pre_hook(_fill_metric_weights)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = {}  # compiled graphs are not picklable; rebuilt on first use
        return state

    def _apply(self, fn, recurse=True):
        self._compiled = {}
        return super()._apply(fn, recurse)

    def network_input(self, pred: torch.Tensor) -> torch.Tensor:
        """Validated, range-converted, resized network input for ``pred`` (N,3,H,W) in ``input_range``."""
        if self.out_of_range == "clamp":
            low, high = self.input_range
            check_image_batch(pred, self.input_range, name="pred", tolerance=high - low,
                              check_values=self.check_values)
            pred = pred.clamp(low, high)
        x = self.metric.prepare(pred, self.input_range, self.antialias, check_values=self.check_values)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def call_net(self, method: str, x: torch.Tensor) -> torch.Tensor:
        fn = getattr(self.metric.net, method)
        if not self.compile:
            return fn(x)
        if method not in self._compiled:
            self._compiled[method] = torch.compile(fn)
        return self._compiled[method](x)


class IFQALoss(FrozenMetricLoss):
    """IFQA (or IFQA++) realness as a training objective for a face restoration generator.

    Args:
        checkpoint: weight file for ``metric`` (default: the installed one, see ``ifqa-loss weights``).
        metric: ``"ifqa"``, ``"ifqa++"``, or an already loaded :class:`~ifqa_loss.QualityMetric`.
        input_range: range of ``pred``: ``(-1, 1)`` (tanh generators such as GFP-GAN, default) or ``(0, 1)``.
        mode: ``"one_minus"`` (mean of 1 - map) or ``"nonsaturating"`` (mean of -log map, from logits).
        region_weights: e.g. ``{"eyes": 2.0, "mouth": 2.0, "nose": 1.5, "skin": 1.0, "background": 0.0}``;
            groups ``eyes``/``brows`` or names in :data:`ifqa_loss.regions.REGION_NAMES`; unnamed
            regions weigh 1.0. Masks come from ``regions=`` in forward, else the FFHQ template.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-image, shape (N,)).
        antialias: antialias the bilinear downscale of ``pred`` to the network's input.
        out_of_range: ``"error"`` (default) refuses values outside ``input_range`` (beyond 1e-3);
            ``"clamp"`` clamps them, for unbounded generators such as GFP-GAN that overshoot a
            little, and still refuses values off by more than the range's width (a wrong range flag).
        include_in_state_dict: keep the frozen metric's weights in the parent's ``state_dict()``
            (off: checkpoints stay small, and a parent saved without them still loads strictly).
        channels_last: run the network in channels_last memory format.
        compile: wrap the network in ``torch.compile`` on first use.
        device, dtype: where the metric weights live (default CPU, checkpoint dtype).
        check_values: refuse NaN/Inf and out-of-range values (one host sync per call); ``False``
            keeps only the shape/dtype/device checks, for the last few percent of GPU throughput.

    Forward: ``pred`` (N,3,H,W) in ``input_range``, any H,W -> loss (scalar, or (N,) for
    ``reduction="none"``); with ``return_map=True`` also the (N,1,S,S) float32 quality map.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        metric: str | QualityMetric = "ifqa",
        input_range: tuple[float, float] = (-1, 1),
        mode: str = "one_minus",
        region_weights: dict[str, float] | None = None,
        reduction: str = "mean",
        antialias: bool = False,
        out_of_range: str = "error",
        include_in_state_dict: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        check_values: bool = True,
    ):
        if mode not in QF.LOSS_MODES:
            raise ValueError(f"mode must be one of {QF.LOSS_MODES}, got {mode!r}")
        if region_weights is not None:
            expand_region_weights(region_weights)  # validate names now, not at the first batch
        super().__init__(checkpoint, metric, input_range, reduction, antialias, out_of_range,
                         include_in_state_dict, channels_last, compile, device, dtype, check_values)
        if not self.metric.has_map:
            raise ValueError(f"IFQALoss needs a per-pixel metric; {self.metric.name!r} has none (use GFIQALoss)")
        self.mode = mode
        self.region_weights = dict(region_weights) if region_weights else None
        self._template_weights: dict[tuple, torch.Tensor] = {}  # cache: (size, device) -> (1,1,S,S)

    def _apply(self, fn, recurse=True):
        self._template_weights = {}  # cached masks follow no device/dtype change
        return super()._apply(fn, recurse)

    def _region_weights(self, regions: dict[str, torch.Tensor] | None, size: int, device) -> torch.Tensor:
        if regions is not None:
            return region_weight_map(regions, self.region_weights or {})
        key = (size, str(device))
        if key not in self._template_weights:
            self._template_weights[key] = region_weight_map(template_regions(size, device=device), self.region_weights)
        return self._template_weights[key]

    def forward(
        self,
        pred: torch.Tensor,
        *,
        pixel_weights: torch.Tensor | None = None,
        regions: dict[str, torch.Tensor] | None = None,
        return_map: bool = False,
    ):
        """Loss of ``pred`` (N,3,H,W) in ``input_range``.

        Args:
            pixel_weights: (N,1,h,w) or (1,1,h,w) non-negative weights at any resolution.
            regions: masks from an :mod:`ifqa_loss.regions` builder (e.g. per-sample landmarks);
                combined with ``region_weights``. Multiplied with ``pixel_weights`` when both are given.
            return_map: also return the (N,1,S,S) float32 quality map.
        """
        logits = self.call_net("logits", self.network_input(pred))
        batch, size = logits.shape[0], logits.shape[-2:]
        weights = None
        if pixel_weights is not None:
            QF.check_pixel_weights(pixel_weights, batch)
            weights = QF.resize_weights(pixel_weights, size)
        if regions is not None or self.region_weights:
            by_region = QF.resize_weights(self._region_weights(regions, size[-1], logits.device), size)
            weights = by_region if weights is None else weights * by_region
            QF.check_pixel_weights(weights, batch, name="region-weighted pixel weights")
        loss = QF.reduce(QF.weighted_image_mean(QF.quality_loss_map(logits, self.mode), weights), self.reduction)
        if return_map:
            return loss, torch.sigmoid(logits.float())
        return loss

    def extra_repr(self) -> str:
        return (
            f"metric={self.metric.name!r}, input_range={self.input_range}, mode={self.mode!r}, "
            f"region_weights={self.region_weights}, reduction={self.reduction!r}"
        )


class GFIQALoss(FrozenMetricLoss):
    """``1 - predicted MOS`` of a trained GFIQA model, with the same hygiene, autocast and input rules as IFQALoss.

    Args: as :class:`IFQALoss` minus ``mode`` and ``region_weights``; ``metric`` defaults to ``"gfiqa"``
    (or pass a loaded metric), ``checkpoint`` to the installed GFIQA weights.
    Forward: ``pred`` (N,3,H,W) in ``input_range`` -> scalar (or (N,) with ``reduction="none"``).
    """

    default_metric = "gfiqa"

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        mos = self.call_net("forward", self.network_input(pred)).float()
        return QF.reduce(1.0 - mos, self.reduction)

    def extra_repr(self) -> str:
        return f"metric={self.metric.name!r}, input_range={self.input_range}, reduction={self.reduction!r}"


def _metric_prefix(prefix: str) -> str:
    return prefix + "metric."


def _drop_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the frozen metric is not part of a training checkpoint unless asked for."""
    if module.include_in_state_dict:
        return
    for key in [k for k in state_dict if k.startswith(_metric_prefix(prefix))]:
        del state_dict[key]


def _fill_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: a checkpoint saved without the metric loads strictly (the metric keeps its weights)."""
    metric_prefix = _metric_prefix(prefix)
    if any(k.startswith(metric_prefix) for k in state_dict):
        return
    for name, tensor in module.metric.state_dict().items():
        state_dict[metric_prefix + name] = tensor

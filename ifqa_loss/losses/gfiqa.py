"""GFIQA's predicted MOS as a training loss."""
from __future__ import annotations

import torch

from . import functional as QF
from .base import FrozenMetricLoss


class GFIQALoss(FrozenMetricLoss):
    """``1 - predicted MOS`` of a trained GFIQA model, with the same hygiene, autocast and input rules as IFQALoss.

    Args: as :class:`~ifqa_loss.IFQALoss` minus ``mode`` and ``region_weights``; ``metric`` defaults
    to the one the checkpoint records (``"gfiqa"`` or ``"gfiqa-resnet50"``), ``checkpoint`` to the
    installed GFIQA weights.
    Forward: ``pred`` (N,3,H,W) in ``input_range`` -> scalar (or (N,) with ``reduction="none"``).

    Example:
        >>> import torch, warnings; warnings.simplefilter("ignore")
        >>> from ifqa_loss import GFIQALoss, load_metric
        >>> mos = load_metric("gfiqa-resnet50", random_weights=True, image_size=32, encoder_width=0.125,
        ...                   mlp_hidden=(8,))
        >>> GFIQALoss(metric=mos, input_range=(0, 1), reduction="none")(torch.rand(2, 3, 40, 40)).shape
        torch.Size([2])
    """

    default_metric = "gfiqa"

    def __init__(self, **options):
        super().__init__(**options)
        if self.metric.has_map:
            raise ValueError(f"GFIQALoss needs a MOS metric; {self.metric.name!r} gives a map (use IFQALoss)")

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        pred, options = self.metric_options(pred)
        pred = self.expand_draws(pred)  # (K*N,3,H,W) with augment
        return QF.reduce(self.combine([1.0 - metric.score(pred, **options) for metric in self.metrics]), self.reduction)

    def extra_repr(self) -> str:
        return f"metric={self.metric.name!r}, input_range={self.input_range}, reduction={self.reduction!r}"

"""IFQA / IFQA++ realness as a training loss."""
from __future__ import annotations

import torch

from ..regions import expand_region_weights, region_weight_map, template_regions
from . import functional as QF
from .base import FrozenMetricLoss


class IFQALoss(FrozenMetricLoss):
    """IFQA (or IFQA++) realness as a training objective for a face restoration generator.

    Args (keyword-only):
        checkpoint: weight file for ``metric`` (default: the installed one, see ``ifqa-loss weights``).
        metric: ``"ifqa"`` (default), ``"ifqa++"``, or an already loaded :class:`~ifqa_loss.QualityMetric`.
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
        channels_last: run the network on channels_last input.
        compile: wrap the network in ``torch.compile`` on first use.
        precision: ``None`` (default): :func:`ifqa_loss.metric.default_loss_precision` of the input's
            device — the fastest mode whose input gradient matches fp32 within 1e-2 relative L2
            (CPU: ``"exact"``; CUDA: ``"tf32"``); or ``"exact"``, ``"tf32"``, ``"bf16"``.
        fast: use the fast IFQA network (same function); ``None``: where measured faster.
        device, dtype: where the metric weights live (default CPU, checkpoint dtype).
        check_values: refuse NaN/Inf and out-of-range values (one host sync per call); ``False``
            keeps only the shape/dtype/device checks, for the last few percent of GPU throughput.
        random_weights: RANDOM metric weights, to test wiring without the official files (warns).
        sha256: the checkpoint's expected digest (hex): any other file is refused (pins provenance;
            the layout is always checked).
        augment, ensemble, ensemble_combine, refresh: defences against metric gaming, off by default
            (see :class:`~ifqa_loss.losses.base.FrozenMetricLoss` and docs/hacking.md).

    Forward: ``pred`` (N,3,H,W) in ``input_range``, any H,W -> loss (scalar, or (N,) for
    ``reduction="none"``); with ``return_map=True`` also the (N,1,S,S) float32 quality map.

    Example:
        >>> import torch, warnings; warnings.simplefilter("ignore")
        >>> from ifqa_loss import IFQALoss, load_metric
        >>> tiny = load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1)
        >>> loss_fn = IFQALoss(metric=tiny, input_range=(0, 1), region_weights={"eyes": 2.0})
        >>> restored = torch.rand(2, 3, 64, 64, requires_grad=True)
        >>> loss = loss_fn(restored)
        >>> loss.backward()
        >>> loss.shape, restored.grad.shape
        (torch.Size([]), torch.Size([2, 3, 64, 64]))
    """

    def __init__(self, *, mode: str = "one_minus", region_weights: dict[str, float] | None = None, **options):
        if mode not in QF.LOSS_MODES:
            raise ValueError(f"mode must be one of {QF.LOSS_MODES}, got {mode!r}")
        if region_weights is not None:
            expand_region_weights(region_weights)  # validate names now, not at the first batch
        super().__init__(**options)
        if not self.metric.has_map:
            raise ValueError(f"IFQALoss needs a per-pixel metric; {self.metric.name!r} has none (use GFIQALoss)")
        self.mode = mode
        self.region_weights = dict(region_weights) if region_weights else None
        self._template_weights: dict[tuple, torch.Tensor] = {}  # cache: (size, device) -> (1,1,S,S)

    def _apply(self, fn, recurse=True):
        self._template_weights = {}  # cached masks follow no device/dtype change
        return super()._apply(fn, recurse)

    def _region_weights(self, regions: dict[str, torch.Tensor] | None, size: int, device,
                        batch: int | None = None) -> torch.Tensor:
        if regions is not None:
            return region_weight_map(regions, self.region_weights or {}, batch)
        key = (size, str(device))
        if key not in self._template_weights:
            # Template masks are constants: checked once here, not on every call.
            weights = region_weight_map(template_regions(size, device=device), self.region_weights)
            QF.check_pixel_weights(weights, 1, name="region_weights on the template masks")
            self._template_weights[key] = weights
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
        pred, options = self.metric_options(pred)
        batch = pred.shape[0]
        check = self.check_values
        if pixel_weights is not None:
            QF.check_pixel_weights(pixel_weights, batch, check_values=check)
        if regions is not None:
            regions = {name: self.eot.repeat(mask) for name, mask in regions.items()} if self.eot else regions
        pixel_weights = self.eot.repeat(pixel_weights) if self.eot else pixel_weights
        pred = self.expand_draws(pred)  # (K*N,3,H,W) with augment, else (N,3,H,W)
        per_metric, first_logits = [], None
        for metric in self.metrics:
            logits = metric.logits(pred, **options)
            first_logits = logits if first_logits is None else first_logits
            weights = self._weights(logits, pixel_weights, regions, pixel_weights is not None)
            per_metric.append(QF.weighted_image_mean(QF.quality_loss_map(logits, self.mode), weights))
        loss = QF.reduce(self.combine(per_metric), self.reduction)
        if return_map:  # the loss's own metric; with augment the mean over the draws (in their own coordinates)
            quality = torch.sigmoid(first_logits.float())
            return loss, quality if self.eot is None else quality.reshape(self.eot.config.draws, batch,
                                                                          *quality.shape[1:]).mean(0)
        return loss

    def _weights(self, logits: torch.Tensor, pixel_weights, regions, checked_pixels: bool) -> torch.Tensor | None:
        """The (N,1,S,S) weights at ``logits``'s resolution from pixel weights and region masks, or None."""
        batch, size = logits.shape[0], logits.shape[-2:]
        weights = None
        check = self.check_values
        if pixel_weights is not None:
            weights = QF.resize_weights(pixel_weights, size)
        if regions is not None or self.region_weights:
            by_region = QF.resize_weights(self._region_weights(regions, size[-1], logits.device, batch), size)
            weights = by_region if weights is None else weights * by_region
            if regions is not None or checked_pixels:  # template-only weights were checked when cached
                QF.check_pixel_weights(weights, batch, name="region-weighted pixel weights", check_values=check)
        return weights

    def extra_repr(self) -> str:
        return (
            f"metric={self.metric.name!r}, input_range={self.input_range}, mode={self.mode!r}, "
            f"region_weights={self.region_weights}, reduction={self.reduction!r}"
        )


class IFQAPlusLoss(IFQALoss):
    """:class:`IFQALoss` with the IFQA++ (MAE ViT-H/14) metric by default; same arguments.

    Example:
        >>> IFQAPlusLoss.default_metric
        'ifqa++'
    """

    default_metric = "ifqa++"

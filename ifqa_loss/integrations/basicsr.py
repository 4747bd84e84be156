"""basicsr adapter: importing this module registers ``IFQALoss`` and ``GFIQALoss`` in basicsr's ``LOSS_REGISTRY``.

Use in an options YAML after ``import ifqa_loss.integrations.basicsr``::

    ifqa_opt:
      type: IFQALoss
      loss_weight: 0.1
      checkpoint: ~/.cache/ifqa_loss/ifqa.safetensors   # omit to use the installed weights
      region_weights: {eyes: 2.0, mouth: 2.0, background: 0.0}

The torchvision alias basicsr 1.4.2 needs is installed before basicsr is imported.
"""
from __future__ import annotations

import torch

from .. import losses as _losses
from .compat import install_functional_tensor_alias

install_functional_tensor_alias()

from basicsr.utils.registry import LOSS_REGISTRY  # noqa: E402  (needs the alias above)


class _BasicsrConventions:
    """basicsr's loss conventions on top of one of our losses.

    Args:
        loss_weight: multiplies the loss, as every basicsr loss.
        **kwargs: the wrapped loss's arguments. ``input_range`` defaults to (-1, 1) and
            ``out_of_range`` to ``"clamp"``: basicsr generators (GFP-GAN) are unbounded and
            overshoot [-1, 1] a little.

    ``forward(pred, target=None, weight=None, **kw)``: ``target`` is ignored (no-reference
    metrics); for IFQA, ``weight`` (N,C|1,H,W) element-wise weights become per-pixel weights
    (mean over channels); other keywords (``regions``, ``pixel_weights``) pass through.
    """

    def __init__(self, loss_weight: float = 1.0, **kwargs):
        if "input_range" in kwargs:
            kwargs["input_range"] = tuple(kwargs["input_range"])  # YAML gives lists
        kwargs.setdefault("out_of_range", "clamp")
        super().__init__(**kwargs)
        self.loss_weight = float(loss_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                **kwargs):
        if weight is not None:
            if not self.metric.has_map:
                raise ValueError(f"{type(self).__name__} has no per-pixel map: element-wise weight is not supported")
            kwargs["pixel_weights"] = weight.mean(dim=1, keepdim=True)
        out = super().forward(pred, **kwargs)
        if isinstance(out, tuple):  # return_map=True
            return out[0] * self.loss_weight, out[1]
        return out * self.loss_weight


class IFQALoss(_BasicsrConventions, _losses.IFQALoss):
    """:class:`ifqa_loss.IFQALoss` with basicsr's conventions (``loss_weight``; see ``_BasicsrConventions``)."""


class GFIQALoss(_BasicsrConventions, _losses.GFIQALoss):
    """:class:`ifqa_loss.GFIQALoss` with basicsr's conventions (``loss_weight``)."""


def register(registry=LOSS_REGISTRY) -> None:
    """Register our losses once; importing twice (or reloading) is harmless."""
    for loss in (IFQALoss, GFIQALoss):
        if loss.__name__ not in registry:
            registry.register(loss)


register()

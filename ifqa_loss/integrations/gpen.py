"""GPEN adapter: the IFQA term that ``integrations/gpen/ifqa.patch`` adds to GPEN's generator loss.

The patch (for yangxy/GPEN ``train_simple.py``, see ``integrations/gpen/README.md``) passes an
:class:`IFQATerm` as a third loss function, and ``g_nonsaturating_loss`` adds
``IFQATerm(fake_img) = weight * IFQALoss(fake_img)`` to GPEN's own softplus + smooth-L1 + identity
loss. The term is built in ``__main__`` next to GPEN's other losses, so it needs no global
``device``.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..losses import IFQALoss
from ..metric import QualityMetric
from .compat import install_functional_tensor_alias

# GPEN's training/data_loader/degradations.py (a copy of basicsr's) imports torchvision's pre-0.17 name;
# the patch imports this module before GPEN's data code, so the alias is in place in time.
install_functional_tensor_alias()


class IFQATerm(nn.Module):
    """``weight * IFQALoss(fake_img)`` for GPEN's generator objective; ``last_value`` keeps the unweighted value.

    Args:
        weight: multiplies the IFQA loss (GPEN's other terms weigh 1.0).
        checkpoint: IFQA weight file (default: the installed weights, ``ifqa-loss weights``).
        metric: ``"ifqa"``, ``"ifqa++"`` or a loaded :class:`~ifqa_loss.QualityMetric`.
        **loss_kwargs: further :class:`~ifqa_loss.IFQALoss` options. ``input_range`` defaults to
            (-1, 1) (GPEN's images) and ``out_of_range`` to ``"clamp"``: GPEN's generator has no
            final tanh and its output spans about [-1.6, 1.7].

    Forward: ``fake_img`` (N,3,H,W) in about [-1, 1] -> scalar.

    Example:
        >>> import torch
        >>> from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
        >>> from ifqa_loss.registry import get_spec
        >>> metric = QualityMetric(IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), get_spec("ifqa"))
        >>> term = IFQATerm(weight=0.1, metric=metric)
        >>> bool(term(torch.rand(1, 3, 64, 64) * 3.2 - 1.6) <= 0.1)   # overshooting output is clamped
        True
    """

    def __init__(self, *, weight: float = 0.1, checkpoint: str | os.PathLike | None = None,
                 metric: str | QualityMetric = "ifqa", **loss_kwargs):
        super().__init__()
        loss_kwargs.setdefault("input_range", (-1, 1))
        loss_kwargs.setdefault("out_of_range", "clamp")
        self.loss = IFQALoss(checkpoint=checkpoint, metric=metric, **loss_kwargs)
        self.weight = float(weight)
        self.last_value: torch.Tensor | None = None

    def forward(self, fake_img: torch.Tensor) -> torch.Tensor:
        value = self.loss(fake_img)
        self.last_value = value.detach()
        return self.weight * value

    def extra_repr(self) -> str:
        return f"weight={self.weight}"

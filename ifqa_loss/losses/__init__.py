"""Differentiable face-quality losses: the functional core, the loss modules, and the loss composer."""
from .composer import LossComposer
from .gfiqa import GFIQALoss
from .ifqa import IFQALoss, IFQAPlusLoss

__all__ = ["GFIQALoss", "IFQALoss", "IFQAPlusLoss", "LossComposer"]

"""ifqa-loss: published face-quality models as exact metrics and differentiable training losses.

Example:
    >>> import ifqa_loss
    >>> sorted(ifqa_loss.__all__)[:4]
    ['GFIQALoss', 'IFQALoss', 'IFQAPlusLoss', 'LossComposer']
"""
from . import regions
from .losses import GFIQALoss, IFQALoss, IFQAPlusLoss, LossComposer
from .metric import QualityMetric, load_metric

__version__ = "0.2.0"
__all__ = ["GFIQALoss", "IFQALoss", "IFQAPlusLoss", "LossComposer", "QualityMetric", "__version__", "load_metric",
           "regions"]

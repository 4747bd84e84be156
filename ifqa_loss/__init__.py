"""ifqa-loss: published face-quality models as exact metrics and differentiable training losses."""
from . import regions
from .composer import LossComposer
from .losses import GFIQALoss, IFQALoss
from .metrics import QualityMetric, load_metric

__version__ = "0.1.0"
__all__ = ["GFIQALoss", "IFQALoss", "LossComposer", "QualityMetric", "__version__", "load_metric", "regions"]

"""ifqa-loss: published face-quality models as exact metrics and differentiable training losses."""
from .metrics import QualityMetric, load_metric

__version__ = "0.1.0"
__all__ = ["QualityMetric", "load_metric", "__version__"]

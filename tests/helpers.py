"""Small networks for behaviour tests (exactness tests use the published sizes)."""
import torch

from ifqa_loss import QualityMetric
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.registry import get_spec


def tiny_ifqa_metric(seed: int = 0) -> QualityMetric:
    """An IFQA-architecture metric with narrow widths: same code path, milliseconds per call."""
    torch.manual_seed(seed)
    return QualityMetric(IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), get_spec("ifqa"))

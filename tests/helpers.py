"""Small networks for behaviour tests (exactness tests use the published sizes)."""
import torch

from ifqa_loss import QualityMetric
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.registry import get_spec


def tiny_ifqa_metric(seed: int = 0) -> QualityMetric:
    """An IFQA-architecture metric with narrow widths: same code path, milliseconds per call."""
    torch.manual_seed(seed)
    return QualityMetric(IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), get_spec("ifqa"))


TINY_GFIQA = {
    "image_size": 32, "num_injected": 4, "prior": "cmul1", "num_style_feat": 16, "num_mlp": 2,
    "encoder_width": 0.125, "code_groups": (2, 2, 2, 2), "num_quality_blocks": 1, "mlp_hidden": (16, 8),
    "generator_narrow": 0.0625,
    # At 32 px ResNet stage 4 is 1x1: instance norm would zero f_E, so the tiny model normalises over the batch.
    "spade_norm": "batch",
}


def tiny_gfiqa(seed: int = 0):
    from ifqa_loss.nets.gfiqa import GFIQA

    torch.manual_seed(seed)
    model = GFIQA(**TINY_GFIQA)
    model.init_mean_latent(256)
    return model


def small_ifqa_metric(seed: int = 0, dtype: torch.dtype = torch.float32) -> QualityMetric:
    """The narrow IFQA network at 64 px native size (what docs/hacking.md trains): the fastest realistic metric."""
    torch.manual_seed(seed)
    net = IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1, input_size=64).to(dtype)
    return QualityMetric(net, get_spec("ifqa"))


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: a shell that starts a job in the background
    (``cmd &`` without job control) makes it ignore SIGINT, every child inherits that, and Python then installs no
    KeyboardInterrupt handler; the test would see a run that finished instead of one that was interrupted."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)

"""What each published metric is: network builder, native input, preprocessing, checkpoint facts."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .nets.gfiqa import build_gfiqa
from .nets.ifqa_unet import IFQADiscriminator
from .nets.ifqa_vit import IFQAViT

OFFICIAL_REPO = "https://github.com/AIM-SKKU/IFQA"
# The official README's "IFQA pre-trained model" link (holds IFQA_Metric.pth and IFQA++_Metric.pth).
OFFICIAL_WEIGHTS_URL = "https://drive.google.com/file/d/1aHxF39Mdg4R2dFiF_yx8HsJHy9lJaEZP/view?usp=sharing"


@dataclass(frozen=True)
class MetricSpec:
    """Static description of one metric.

    ``resize_mode`` is the interpolation the official pipeline uses to bring an
    image to ``input_size`` (cv2 INTER_LINEAR -> bilinear, INTER_CUBIC -> bicubic).
    """

    name: str
    build: Callable[..., nn.Module]
    input_size: int
    resize_mode: str
    official_filename: str
    checkpoint_key: str
    num_tensors: int | None
    num_parameters: int | None
    has_map: bool = True  # False: the network predicts one score per image (GFIQA's MOS)
    configurable: bool = False  # True: architecture arguments are stored in the checkpoint ("config")
    antialias: bool = False  # resize with antialiasing (how the model was trained)

    @property
    def cache_filename(self) -> str:
        return self.name.replace("+", "p") + ".safetensors"


METRICS: dict[str, MetricSpec] = {
    "ifqa": MetricSpec(
        name="ifqa",
        build=IFQADiscriminator,
        input_size=256,
        resize_mode="bilinear",
        official_filename="IFQA_Metric.pth",
        checkpoint_key="D",
        num_tensors=122,
        num_parameters=105_172_833,
    ),
    "ifqa++": MetricSpec(
        name="ifqa++",
        build=IFQAViT,
        input_size=224,
        resize_mode="bicubic",
        official_filename="IFQA++_Metric.pth",
        checkpoint_key="D",
        num_tensors=494,
        num_parameters=656_873_412,
    ),
    # No public weights exist: checkpoints come from `ifqa-loss train-gfiqa` and carry their config.
    "gfiqa": MetricSpec(
        name="gfiqa",
        build=build_gfiqa,
        input_size=512,
        resize_mode="bilinear",
        official_filename="gfiqa.pth",
        checkpoint_key="model",
        num_tensors=None,
        num_parameters=None,
        has_map=False,
        configurable=True,
        antialias=True,
    ),
}


def get_spec(name: str) -> MetricSpec:
    key = name.lower()
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[key]

"""What each metric is: network builder, native input, preprocessing, checkpoint facts — the one name -> metric table.

Example:
    >>> from ifqa_loss.registry import get_spec
    >>> spec = get_spec("IFQA")
    >>> spec.name, spec.input_size, spec.resize_mode
    ('ifqa', 256, 'bilinear')
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .nets.gfiqa import ResNet50MOS, build_gfiqa
from .nets.ifqa_unet import IFQADiscriminator
from .nets.ifqa_vit import IFQAViT

OFFICIAL_REPO = "https://github.com/AIM-SKKU/IFQA"
# The official README's "IFQA pre-trained model" link (holds IFQA_Metric.pth and IFQA++_Metric.pth).
OFFICIAL_WEIGHTS_URL = "https://drive.google.com/file/d/1aHxF39Mdg4R2dFiF_yx8HsJHy9lJaEZP/view?usp=sharing"


@dataclass(frozen=True)
class MetricSpec:
    """Static description of one metric.

    Attributes:
        build: the network class; keyword arguments stored in a checkpoint's ``config`` are passed to it.
        input_size: native square input; images are resized to it.
        resize_mode: the interpolation the official pipeline uses (cv2 INTER_LINEAR -> bilinear,
            INTER_CUBIC -> bicubic).
        official_filename: the published file name (also looked for in the weights cache).
        checkpoint_key: the key the state dict sits under in this metric's own checkpoints.
        published: official weights exist (else they come from this library's trainers).
        has_map: the network gives a per-pixel map; ``False``: one score per image (GFIQA's MOS).
        antialias: resize with antialiasing (how the model was trained).
    """

    name: str
    build: Callable[..., nn.Module]
    input_size: int
    resize_mode: str
    official_filename: str
    checkpoint_key: str
    published: bool = True
    has_map: bool = True
    antialias: bool = False

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
    ),
    "ifqa++": MetricSpec(
        name="ifqa++",
        build=IFQAViT,
        input_size=224,
        resize_mode="bicubic",
        official_filename="IFQA++_Metric.pth",
        checkpoint_key="D",
    ),
    # No public weights exist: checkpoints come from `ifqa-loss train-gfiqa` and carry their config.
    "gfiqa": MetricSpec(
        name="gfiqa",
        build=build_gfiqa,
        input_size=512,
        resize_mode="bilinear",
        official_filename="gfiqa.pth",
        checkpoint_key="model",
        published=False,
        has_map=False,
        antialias=True,
    ),
    # The paper's ResNet50 baseline (`ifqa-loss train-gfiqa --model resnet50`).
    "gfiqa-resnet50": MetricSpec(
        name="gfiqa-resnet50",
        build=ResNet50MOS,
        input_size=512,
        resize_mode="bilinear",
        official_filename="gfiqa-resnet50.pth",
        checkpoint_key="model",
        published=False,
        has_map=False,
        antialias=True,
    ),
}


def get_spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` registered under ``name`` (case-insensitive); ``ValueError`` lists the choices."""
    if not isinstance(name, str):
        raise TypeError(f"a metric is named by a string, one of {sorted(METRICS)}; got a {type(name).__name__}")
    key = name.strip().lower()
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[key]

"""Frozen quality metrics: a published network plus the preprocessing that makes it score any image."""
from __future__ import annotations

import os

import torch
from torch import nn

from . import preprocess
from .checkpoints import load_network
from .registry import MetricSpec, get_spec


class QualityMetric(nn.Module):
    """A frozen, eval-locked face-quality network with differentiable preprocessing.

    Attributes:
        net: the raw network, (N,3,S,S) in [-1,1] at native size S -> (N,1,S,S) sigmoid map.
        spec: the :class:`~ifqa_loss.registry.MetricSpec` (name, native size, resize mode).

    Gradients flow to the input; no parameter ever requires grad, and ``.train()``
    leaves the module in eval mode.
    """

    def __init__(self, net: nn.Module, spec: MetricSpec):
        super().__init__()
        self.spec = spec
        self.net = net
        self.net.requires_grad_(False)
        self.train(False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return getattr(self.net, "input_size", self.spec.input_size)

    @property
    def has_map(self) -> bool:
        return self.spec.has_map

    def train(self, mode: bool = True) -> QualityMetric:
        # Eval-locked: a parent's .train() must not change normalisation or dropout behaviour.
        return super().train(False)

    def _param(self) -> torch.Tensor:
        return next(self.net.parameters())

    def prepare(
        self,
        x: torch.Tensor,
        input_range: tuple[float, float] = (0.0, 1.0),
        antialias: bool = False,
        check_values: bool = True,
    ) -> torch.Tensor:
        """(N,3,H,W) in ``input_range`` -> (N,3,S,S) network input in [-1,1] (validated, resized, cast).

        Resizing before the range change equals the official "normalise then resize"
        order exactly: both are affine maps and interpolation weights sum to one.
        """
        param = self._param()
        preprocess.check_image_batch(x, input_range, device=param.device, check_values=check_values)
        x = preprocess.resize(x, self.input_size, self.spec.resize_mode, antialias or self.spec.antialias)
        x = preprocess.to_signed_range(x, input_range)
        # Under autocast the network picks its own precision; otherwise follow the weights.
        return x if torch.is_autocast_enabled(x.device.type) else x.to(param.dtype)

    def _require_map(self) -> None:
        if not self.has_map:
            raise NotImplementedError(f"{self.name!r} predicts one score per image and has no quality map; use score()")

    def logits(self, x: torch.Tensor, input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """(N,3,H,W) -> (N,1,S,S) pre-sigmoid realness."""
        self._require_map()
        return self.net.logits(self.prepare(x, input_range))

    def quality_map(self, x: torch.Tensor, input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """(N,3,H,W) RGB in ``input_range`` (default [0,1]) -> (N,1,S,S) realness map in [0,1] (1 = real)."""
        self._require_map()
        return self.net(self.prepare(x, input_range))

    def score(self, x: torch.Tensor, input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """(N,3,H,W) -> (N,) image score: the mean of the quality map (official test.py), or GFIQA's MOS."""
        if not self.has_map:
            return self.net(self.prepare(x, input_range)).float()
        return self.quality_map(x, input_range).float().mean(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`score` for [0,1] input."""
        return self.score(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}"


def load_metric(
    name: str = "ifqa",
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> QualityMetric:
    """Load a published metric, frozen and in eval mode.

    Args:
        name: ``"ifqa"`` (U-Net, 256x256 map), ``"ifqa++"`` (ViT-H/14, 224x224 map) or
            ``"gfiqa"`` (predicted MOS, no map; checkpoints from ``ifqa-loss train-gfiqa``).
        checkpoint: weight file (official ``.pth``, bare state dict or ``.safetensors``).
            ``None`` looks in ``$IFQA_LOSS_HOME`` then ``~/.cache/ifqa_loss`` (see
            ``ifqa-loss weights import``); nothing is ever downloaded.
        device, dtype: where the weights live (dtype defaults to the checkpoint's, fp32).

    Example:
        >>> m = load_metric("ifqa", checkpoint="IFQA_Metric.pth")   # doctest: +SKIP
        >>> m.score(images_in_0_1)                                  # doctest: +SKIP
    """
    spec = get_spec(name)
    net, _ = load_network(spec.name, checkpoint)
    net = net.to(device=device, dtype=dtype)
    return QualityMetric(net, spec)

"""The one object that runs a quality network: image -> logits / map / score, with its preprocessing,
memory format and compilation. Losses and the CLI call it; nothing else calls the network."""
from __future__ import annotations

import os

import torch
from torch import nn

from . import preprocess
from .registry import MetricSpec, get_spec
from .weights import load_network, random_network, resolve_metric

InputRange = tuple[float, float]


class QualityMetric(nn.Module):
    """A frozen, eval-locked face-quality network with differentiable preprocessing.

    Args:
        net: the raw network, (N,3,S,S) in [-1,1] at native size S -> (N,1,S,S) sigmoid map
            (or (N,) MOS for GFIQA); it must have a ``logits`` method when it gives a map.
        spec: the :class:`~ifqa_loss.registry.MetricSpec` (name, native size, resize mode).
        channels_last: feed the network channels_last input (the weights are left untouched,
            so a network shared by several metrics is never changed).
        compile: run the network through ``torch.compile`` (compiled on first use per method).

    Gradients flow to the input; no parameter ever requires grad, and ``.train()``
    leaves the module in eval mode.

    Example:
        >>> import torch, warnings
        >>> warnings.simplefilter("ignore")          # random weights warn loudly
        >>> m = load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1)
        >>> m.quality_map(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 1, 256, 256])
        >>> m.score(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(self, net: nn.Module, spec: MetricSpec, *, channels_last: bool = False, compile: bool = False):
        super().__init__()
        self.spec = spec
        self.net = net
        self.net.requires_grad_(False)
        self.channels_last = channels_last
        self.compile = compile
        self._compiled: dict[str, object] = {}
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

    @property
    def random_weights(self) -> bool:
        """True when built with ``random_weights=True``: outputs are meaningless."""
        return getattr(self.net, "random_weights", False)

    def with_options(self, *, channels_last: bool | None = None, compile: bool | None = None) -> QualityMetric:
        """A metric sharing this one's network (no copy) with other run options; ``self`` is unchanged."""
        channels_last = self.channels_last if channels_last is None else channels_last
        compile = self.compile if compile is None else compile
        if (channels_last, compile) == (self.channels_last, self.compile):
            return self
        return QualityMetric(self.net, self.spec, channels_last=channels_last, compile=compile)

    def train(self, mode: bool = True) -> QualityMetric:
        # Eval-locked: a parent's .train() must not change normalisation or dropout behaviour.
        return super().train(False)

    def _apply(self, fn, recurse=True):
        self._compiled = {}  # compiled graphs are tied to the old device/dtype
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_compiled"] = {}  # compiled graphs are not picklable; rebuilt on first use
        return state

    def prepare(
        self,
        x: torch.Tensor,
        *,
        input_range: InputRange = (0.0, 1.0),
        antialias: bool = False,
        check_values: bool = True,
    ) -> torch.Tensor:
        """(N,3,H,W) in ``input_range`` -> (N,3,S,S) network input in [-1,1] (validated, resized, cast).

        Resizing before the range change equals the official "normalise then resize"
        order exactly: both are affine maps and interpolation weights sum to one.
        """
        param = next(self.net.parameters())
        preprocess.check_image_batch(x, input_range, device=param.device, check_values=check_values)
        x = preprocess.resize(x, self.input_size, self.spec.resize_mode, antialias or self.spec.antialias)
        x = preprocess.to_signed_range(x, input_range)
        # Under autocast the network picks its own precision; otherwise follow the weights.
        x = x if torch.is_autocast_enabled(x.device.type) else x.to(param.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run(self, method: str, x: torch.Tensor) -> torch.Tensor:
        fn = getattr(self.net, method)
        if not self.compile:
            return fn(x)
        if method not in self._compiled:
            self._compiled[method] = torch.compile(fn)
        return self._compiled[method](x)

    def _require_map(self) -> None:
        if not self.has_map:
            raise NotImplementedError(f"{self.name!r} predicts one score per image and has no quality map; use score()")

    def logits(self, x: torch.Tensor, **prepare_options) -> torch.Tensor:
        """(N,3,H,W) -> (N,1,S,S) pre-sigmoid realness; keyword options as :meth:`prepare`."""
        self._require_map()
        return self._run("logits", self.prepare(x, **prepare_options))

    def quality_map(self, x: torch.Tensor, **prepare_options) -> torch.Tensor:
        """(N,3,H,W) RGB in ``input_range`` (default [0,1]) -> (N,1,S,S) realness map in [0,1] (1 = real)."""
        return torch.sigmoid(self.logits(x, **prepare_options))

    def score(self, x: torch.Tensor, **prepare_options) -> torch.Tensor:
        """(N,3,H,W) -> (N,) float32 image score: the mean of the quality map (official test.py), or GFIQA's MOS."""
        if not self.has_map:
            return self._run("forward", self.prepare(x, **prepare_options)).float()
        return self.quality_map(x, **prepare_options).float().mean(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`score` for [0,1] input."""
        return self.score(x)

    def extra_repr(self) -> str:
        warning = ", RANDOM WEIGHTS (meaningless scores)" if self.random_weights else ""
        return f"name={self.name!r}, input_size={self.input_size}{warning}"


def load_metric(
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile: bool = False,
    random_weights: bool = False,
    sha256: str | None = None,
    **random_config,
) -> QualityMetric:
    """Load a metric, frozen and in eval mode.

    Args:
        name: ``"ifqa"`` (U-Net, 256x256 map), ``"ifqa++"`` (ViT-H/14, 224x224 map),
            ``"gfiqa"`` / ``"gfiqa-resnet50"`` (predicted MOS, no map; checkpoints from
            ``ifqa-loss train-gfiqa``). Default: the metric the checkpoint records, else ``"ifqa"``.
        checkpoint: weight file (official ``.pth``, bare state dict, ``.safetensors``, or a
            checkpoint written by this library's trainers). ``None`` looks in ``$IFQA_LOSS_HOME``
            then ``~/.cache/ifqa_loss`` (see ``ifqa-loss weights import``); nothing is ever downloaded.
        device, dtype: where the weights live (dtype defaults to the checkpoint's, fp32).
        channels_last, compile: how the network is run (see :class:`QualityMetric`).
        random_weights: build the published architecture with seeded RANDOM weights instead of
            loading a checkpoint — only to test wiring without the official files; it warns
            every time and the metric's repr says so. ``random_config``: architecture
            arguments for it (e.g. narrow ``widths`` for fast tests).
        sha256: the checkpoint's expected sha256 (hex): any other file is refused. Files in
            the weights cache are always checked against the digest recorded at import.

    Example:
        >>> import warnings; warnings.simplefilter("ignore")
        >>> load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1)
        QualityMetric(
          name='ifqa', input_size=256, RANDOM WEIGHTS (meaningless scores)
          (net): IFQADiscriminator(...)
        )
    """
    if random_weights:
        if checkpoint is not None or sha256 is not None:
            raise ValueError("pass either checkpoint=/sha256= or random_weights=True, not both")
        spec = get_spec(name or "ifqa")
        net = random_network(spec.name, **random_config)
    else:
        if random_config:
            raise TypeError(f"unexpected arguments {sorted(random_config)}: architecture arguments are read "
                            "from the checkpoint (they apply only with random_weights=True)")
        spec = get_spec(resolve_metric(name, checkpoint))
        net, _ = load_network(spec.name, checkpoint, sha256=sha256)
    net = net.to(device=device, dtype=dtype)
    return QualityMetric(net, spec, channels_last=channels_last, compile=compile)

"""The one object that runs a quality network: image -> logits / map / score, with its preprocessing,
memory format and compilation. Losses and the CLI call it; nothing else calls the network."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from . import preprocess
from .batch_memory import activation_bytes, check_batch_fits
from .nets.ifqa_unet import IFQADiscriminator
from .nets.ifqa_unet_fast import FastIFQADiscriminator
from .registry import MetricSpec, get_spec
from .weights import load_network, random_network, resolve_metric

InputRange = tuple[float, float]

PRECISIONS = ("exact", "tf32", "bf16")
_KEEP = object()  # with_options: "leave this option as it is" (None is a meaningful value)

# When the fast IFQA network (nets/ifqa_unet_fast.py, the same function) runs by default:
# (device type, compiled) -> use it. Decided from measurements, fwd + backward to the input,
# published-size IFQA at 256x256, fp32:
# | device, mode       | published      | fast           | source                                          |
# | CPU eager, batch 2 | 2.42-2.69 s    | 1.93-2.51 s    | this repo, 2026-11-30, 2 threads, quiet 2-core  |
# |                    | (fwd: 1.32-1.43)| (fwd: 1.00-1.07)| AMD EPYC, round-robin 4 rounds (RESULTS.md);   |
# |                    |                |                | earlier: 1 thread under load, 29.2 vs 23.8 s    |
# | CUDA eager, bs 64  | 820 img/s bf16 | 717-747 img/s  | issue 14's H100 probe of the same rewrites      |
# | CUDA compiled, 64  | 1,126 img/s    | 2,421 img/s    | issue 14's H100 probe (channels_last + compile) |
# CPU batch 256 was not measured (about an hour per round on this machine). The CUDA rows are
# the probe, not this implementation: re-measure with `ifqa-loss bench --device cuda --losses ifqa
# --variants fp32,published,bf16,compile` (CPU: the same with --device cpu --variants fp32,published).
# CPU compiled is not timed here (compiling took minutes); fewer FLOPs make it the default there.
FAST_IFQA_BY_DEFAULT = {
    ("cpu", False): True,
    ("cpu", True): True,
    ("cuda", False): False,
    ("cuda", True): True,
}


def _set_tf32(enabled: bool) -> list:
    """Set TF32 for cuDNN convolutions and CUDA matmuls; returns how to restore the previous state."""
    backends = torch.backends
    if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):  # torch >= 2.9 API
        previous = [(backends.cudnn.conv, "fp32_precision", backends.cudnn.conv.fp32_precision),
                    (backends.cuda.matmul, "fp32_precision", backends.cuda.matmul.fp32_precision)]
        value = "tf32" if enabled else "ieee"
        backends.cudnn.conv.fp32_precision = value
        backends.cuda.matmul.fp32_precision = value
    else:
        previous = [(backends.cudnn, "allow_tf32", backends.cudnn.allow_tf32),
                    (backends.cuda.matmul, "allow_tf32", backends.cuda.matmul.allow_tf32)]
        backends.cudnn.allow_tf32 = enabled
        backends.cuda.matmul.allow_tf32 = enabled
    return previous


@contextlib.contextmanager
def precision_scope(precision: str, device_type: str):
    """Run a block in one of :data:`PRECISIONS`; every global flag it sets is restored on exit.

    ``"exact"``: IEEE fp32 math (TF32 off for cuDNN convolutions and CUDA matmuls).
    ``"tf32"``: TF32 convolutions and matmuls on CUDA (fp32 elsewhere).
    ``"bf16"``: ``torch.autocast(device_type, torch.bfloat16)``.
    A caller's own ``torch.autocast`` region is respected in every mode. The TF32 flags are
    process-wide while the block runs (PyTorch has no per-thread switch); they are only touched
    for ``device_type == "cuda"``.

    Example:
        >>> import torch
        >>> with precision_scope("exact", "cuda"):
        ...     inside = torch.backends.cudnn.conv.fp32_precision
        >>> inside, torch.backends.cudnn.conv.fp32_precision
        ('ieee', 'tf32')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with contextlib.ExitStack() as stack:
        if device_type == "cuda":
            previous = _set_tf32(precision == "tf32")
            stack.callback(lambda: [setattr(owner, name, value) for owner, name, value in reversed(previous)])
        if precision == "bf16" and not torch.is_autocast_enabled(device_type):
            stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        yield


def default_loss_precision(device_type: str) -> str:
    """The loss's default precision: the fastest mode whose input gradient matches fp32 within
    1e-2 relative L2 error (the bound training needs; a score stays exact by default).

    CPU: ``"exact"`` (bf16 autocast on CPU is slower than fp32 there). CUDA: ``"tf32"`` —
    bf16 is faster on an H100 (issue 14: 820 vs 640 img/s) but its gradient error has not
    been measured on a GPU by this project, so it stays opt-in (``precision="bf16"``).

    Example:
        >>> default_loss_precision("cpu")
        'exact'
    """
    return "tf32" if device_type == "cuda" else "exact"


class QualityMetric(nn.Module):
    """A frozen, eval-locked face-quality network with differentiable preprocessing.

    Args:
        net: the raw network, (N,3,S,S) in [-1,1] at native size S -> (N,1,S,S) sigmoid map
            (or (N,) MOS for GFIQA); it must have a ``logits`` method when it gives a map.
        spec: the :class:`~ifqa_loss.registry.MetricSpec` (name, native size, resize mode).
        channels_last: feed the network channels_last input (the weights are left untouched,
            so a network shared by several metrics is never changed).
        compile: run the network through ``torch.compile`` (compiled on first use per method).
        precision: one of :data:`PRECISIONS` (see :func:`precision_scope`); ``"exact"`` by default,
            so scores are IEEE fp32 on CUDA too (PyTorch's default TF32 moves the map by ~4e-3).
            ``None``: :func:`default_loss_precision` of the input's device (what the losses use).
        fast: run IFQA through :class:`~ifqa_loss.nets.ifqa_unet_fast.FastIFQADiscriminator`
            (the same function, shares the weights). ``None``: per device, from the measurements
            in :data:`FAST_IFQA_BY_DEFAULT`.

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

    def __init__(self, net: nn.Module, spec: MetricSpec, *, channels_last: bool = False, compile: bool = False,
                 precision: str | None = "exact", fast: bool | None = None):
        super().__init__()
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.spec = spec
        self.net = net
        self.net.requires_grad_(False)
        self.channels_last = channels_last
        self.compile = compile
        self.precision = precision
        self.fast = fast
        self._compiled: dict[tuple, object] = {}
        self._fast_net: FastIFQADiscriminator | None = None  # built on first use; shares self.net's tensors
        self._activation_bytes: dict[tuple, int] = {}  # per (method, input shape, dtype): see batch_memory
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

    def with_options(self, *, channels_last: bool | None = None, compile: bool | None = None,
                     precision=_KEEP, fast=_KEEP) -> QualityMetric:
        """A metric sharing this one's network (no copy) with other run options; ``self`` is unchanged."""
        options = {"channels_last": self.channels_last if channels_last is None else channels_last,
                   "compile": self.compile if compile is None else compile,
                   "precision": self.precision if precision is _KEEP else precision,
                   "fast": self.fast if fast is _KEEP else fast}
        if all(getattr(self, k) == v for k, v in options.items()):
            return self
        return QualityMetric(self.net, self.spec, **options)

    def uses_fast_net(self, device_type: str) -> bool:
        """Whether IFQA runs through the fast network on ``device_type`` (``"cpu"``, ``"cuda"``)."""
        if not isinstance(self.net, IFQADiscriminator):
            return False
        if self.fast is not None:
            return self.fast
        return FAST_IFQA_BY_DEFAULT.get((device_type, self.compile), False)

    def _network(self, device_type: str) -> nn.Module:
        if not self.uses_fast_net(device_type) or isinstance(self.net, FastIFQADiscriminator):
            return self.net
        if self._fast_net is None:
            # Unregistered: the metric's modules, parameters and state dict stay the published ones.
            self.__dict__["_fast_net"] = FastIFQADiscriminator.from_published(self.net)
        return self._fast_net

    def train(self, mode: bool = True) -> QualityMetric:
        # Eval-locked: a parent's .train() must not change normalisation or dropout behaviour.
        return super().train(False)

    def _apply(self, fn, recurse=True):
        self._compiled = {}  # compiled graphs are tied to the old device/dtype
        self._fast_net = None  # rebuilt from the converted parameters on next use
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_compiled"] = {}  # compiled graphs are not picklable; rebuilt on first use
        state["_fast_net"] = None
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
        """The network's ``method`` on prepared input, in this metric's precision; float32 output in bf16 mode."""
        net = self._network(x.device.type)
        self._check_batch_memory(method, x)
        fn = getattr(net, method)
        if self.compile:
            key = (method, id(net))
            if key not in self._compiled:
                self._compiled[key] = torch.compile(fn)
            fn = self._compiled[key]
        precision = self.precision or default_loss_precision(x.device.type)
        with precision_scope(precision, x.device.type):
            out = fn(x)
        return out.float() if precision == "bf16" else out

    def _check_batch_memory(self, method: str, x: torch.Tensor) -> None:
        """Refuse (:class:`~ifqa_loss.batch_memory.BatchTooLarge`) a batch the device cannot hold, before it runs."""
        if x.shape[0] <= 1:
            return
        key = (method, tuple(x.shape[1:]), x.dtype)
        if key not in self._activation_bytes:
            self._activation_bytes[key] = activation_bytes(self.net, method, (1, *x.shape[1:]), x.dtype)
        check_batch_fits(x.shape[0], self._activation_bytes[key], x.device, grad=torch.is_grad_enabled())

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
    precision: str | None = "exact",
    fast: bool | None = None,
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
        channels_last, compile, precision, fast: how the network is run (see :class:`QualityMetric`);
            ``precision="exact"`` (default) scores in IEEE fp32 even where PyTorch defaults to TF32.
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
    return QualityMetric(net, spec, channels_last=channels_last, compile=compile, precision=precision, fast=fast)

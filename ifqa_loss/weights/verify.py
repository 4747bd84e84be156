"""Does a state dict fit a metric's network? Config values, names and shapes, compared on a meta-device build."""
from __future__ import annotations

import contextlib
import inspect
import math
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from ..registry import METRICS, MetricSpec, get_spec
from .read import CheckpointError

# Bounds on stored architecture arguments: generous for any real model, small enough that a hostile value
# (a million-entry list, a width of 10**12) is refused before anything is built.
MAX_CONFIG_INT = 1 << 16
MAX_CONFIG_FLOAT = 64.0
MAX_CONFIG_LIST = 64


def validate_config(spec: MetricSpec, config: dict, source: object = "config") -> dict:
    """Check stored architecture arguments against ``spec.build``'s signature before anything is built.

    Names must be constructor arguments; integers in [1, 65536], floats finite in (0, 64],
    lists of at most 64 such integers, strings short. Returns ``config`` unchanged;
    :class:`CheckpointError` names the argument otherwise.

    Example:
        >>> validate_config(get_spec("ifqa"), {"widths": (4, 8, 8, 16, 16)})
        {'widths': (4, 8, 8, 16, 16)}
        >>> validate_config(get_spec("ifqa"), {"num_bottleneck": -1})
        Traceback (most recent call last):
        ...
        ifqa_loss.weights.read.CheckpointError: config: num_bottleneck=-1 is out of range ...
    """
    check = getattr(spec.build, "check_config", None)  # a builder's own refusals (e.g. a removed variant)
    if check is not None:
        try:
            check(config)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
    parameters = inspect.signature(getattr(spec.build, "architecture", spec.build)).parameters
    for key, value in config.items():
        if key not in parameters or key == "self":
            raise CheckpointError(f"{source}: unknown architecture argument {key!r} for {spec.name!r} (known: "
                                  f"{', '.join(sorted(parameters))}); the file was written for another version "
                                  "or model")
        default = parameters[key].default
        problem = _config_value_problem(value, default)
        if problem:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise CheckpointError(f"{source}: {key}={shown} is {problem}; the stored configuration is damaged "
                                  "or not for this library: save the checkpoint again with ifqa_loss")
    return config


def _config_value_problem(value, default) -> str | None:
    def bad_int(v) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"a {type(v).__name__}, not an integer"
        if not 1 <= v <= MAX_CONFIG_INT:
            return f"out of range (integers must lie in [1, {MAX_CONFIG_INT}])"
        return None

    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"a {type(value).__name__}, not true/false"
    if isinstance(default, int):
        return bad_int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"a {type(value).__name__}, not a number"
        if not (math.isfinite(value) and 0 < value <= MAX_CONFIG_FLOAT):
            return f"out of range (numbers must lie in (0, {MAX_CONFIG_FLOAT:g}])"
        return None
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            return f"a {type(value).__name__}, not a list of integers"
        if not 1 <= len(value) <= MAX_CONFIG_LIST:
            return f"a list of {len(value)} entries (1 to {MAX_CONFIG_LIST} allowed)"
        for item in value:
            if bad_int(item):
                return f"a list holding {item!r}, which is {bad_int(item)}"
        return None
    if isinstance(default, str):
        return None if isinstance(value, str) and len(value) <= 64 else "not a short string"
    return None


@contextlib.contextmanager
def _parameter_budget(max_tensors: int, max_numel: int, source: object):
    """Abort a network build as soon as it registers more parameters than the checkpoint stores.

    The hooks are global in torch but only count modules built by this thread, and are
    removed on exit.
    """
    owner = threading.get_ident()
    counted = {"tensors": 0, "numel": 0}

    def count(module, name, tensor):
        if threading.get_ident() != owner or tensor is None:
            return
        counted["tensors"] += 1
        counted["numel"] += tensor.numel()
        if counted["tensors"] > max_tensors or counted["numel"] > max_numel:
            raise CheckpointError(
                f"{source}: the stored configuration asks for a network far larger than the weights the file "
                f"stores (building stopped at {counted['tensors']} tensors / {counted['numel']} values); the "
                "configuration does not belong to these "
                "weights: save the checkpoint again with ifqa_loss"
            )

    handles = [nn.modules.module.register_module_parameter_registration_hook(count)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def meta_network(spec: MetricSpec, config: dict | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None, source: object = "config") -> nn.Module:
    """``spec``'s network on the meta device (no memory) from validated ``config``.

    With ``state_dict`` and a non-empty ``config`` the build is aborted as soon as it needs
    far more parameters than the state dict stores, so a hostile configuration costs nothing
    (the published defaults need no budget).
    """
    config = validate_config(spec, dict(config or {}), source)
    budget = contextlib.nullcontext()
    if state_dict is not None and config:
        # Four times what the file stores plus slack (builders may create layers they then drop, such as
        # torchvision's ResNet classifier): a file missing a few tensors still gets the precise missing-keys
        # report, while a configuration that asks for far more aborts at once (all on meta: no memory).
        stored = sum(v.numel() for v in state_dict.values())
        budget = _parameter_budget(4 * len(state_dict) + 256, 4 * stored + (1 << 26), source)
    with budget, torch.device("meta"):
        try:
            return spec.build(**config)
        except (TypeError, ValueError, ZeroDivisionError, AssertionError, RuntimeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{source}: the stored configuration {config} does not build a {spec.name!r} "
                                  f"network ({exc}); save the checkpoint again with ifqa_loss") from exc


def expected_shapes(spec: MetricSpec, config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the published state dict, read off a meta-device build (no memory)."""
    net = meta_network(spec, config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@dataclass
class StateDictReport:
    """Differences between a state dict and the one a metric expects."""

    metric: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, expected, found)
    looks_like: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def __str__(self) -> str:
        def head(items, n=8):
            items = list(items)
            more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
            return ", ".join(map(str, items[:n])) + more

        lines = [f"state dict does not match metric {self.metric!r}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): {head(self.unexpected)}")
        if self.wrong_shape:
            shapes = (f"{k} expected {tuple(e)} found {tuple(f)}" for k, e, f in self.wrong_shape)
            lines.append(f"  wrong shapes ({len(self.wrong_shape)}): {head(shapes, 4)}")
        prefixed = [k for k in self.unexpected if k.startswith("module.")]
        if prefixed and len(prefixed) == len(self.unexpected):
            lines.append("  the keys start with 'module.': the weights were saved from a DataParallel / "
                         "DistributedDataParallel wrapper; save the inner model instead (model.module.state_dict()) "
                         "or strip it: {k.removeprefix('module.'): v for k, v in state_dict.items()}")
        elif self.looks_like and self.looks_like != self.metric:
            lines.append(f"  this file looks like a {self.looks_like!r} checkpoint: pass metric={self.looks_like!r}")
        elif not self.looks_like:
            lines.append("  it matches none of the known metrics: " + ", ".join(sorted(METRICS)))
        return "\n".join(lines)


def identify(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Name of the registered metric whose key set the state dict matches best (>= 90% overlap)."""
    best, best_overlap = None, 0.0
    keys = set(state_dict)
    for name, spec in METRICS.items():
        expected = set(expected_shapes(spec))  # configurable specs: names do not depend on widths
        overlap = len(keys & expected) / max(len(keys | expected), 1)
        if overlap > best_overlap:
            best, best_overlap = name, overlap
    return best if best_overlap >= 0.9 else None


def check_state_dict(
    state_dict: dict[str, torch.Tensor], metric: str, config: dict | None = None, *, net: nn.Module | None = None
) -> StateDictReport:
    """Compare names and shapes with the metric's network (no weights are built; ``net``: a meta build to reuse)."""
    if net is None:
        net = meta_network(get_spec(metric), config, state_dict)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    report = StateDictReport(metric=get_spec(metric).name)
    report.missing = [k for k in expected if k not in state_dict]
    report.unexpected = [k for k in state_dict if k not in expected]
    report.wrong_shape = [
        (k, expected[k], tuple(v.shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if not report.ok:
        report.looks_like = identify(state_dict)
    return report



"""Shared machinery of the quality losses: a frozen, eval-locked metric that stays out of the parent's
parameters, modules and checkpoints."""
from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ..metric import QualityMetric, load_metric
from ..preprocess import LOSS_CLAMP_HINT, check_image_batch
from ..weights import resolve_metric
from . import functional as QF
from .augment import EOT, eot_config
from .refresh import Refresher, refresh_config

OUT_OF_RANGE = ("error", "clamp")
ENSEMBLE_COMBINE = ("mean", "min")


class FrozenMetricLoss(nn.Module):
    """Base of :class:`~ifqa_loss.IFQALoss` and :class:`~ifqa_loss.GFIQALoss` (arguments documented there).

    The metric is held as a plain attribute, not a registered submodule: its ~100 M frozen
    parameters stay out of ``parent.parameters()`` (parameter counts, optimisers,
    ``requires_grad_``), ``parent.modules()`` (a user's ``apply(init_fn)`` cannot overwrite it)
    and ``parent.state_dict()``; ``.to()``/``.half()`` still reach it. Subclasses get the network
    output from :attr:`metric`, called with the options :meth:`metric_options` returns.

    Defences against metric gaming (docs/hacking.md), all off by default:

    - ``augment``: expectation over ``draws`` seeded random transformations
      (:class:`~ifqa_loss.losses.augment.EOTConfig`: ``"eot"``, ``True`` or a dict of its fields).
    - ``ensemble``: more metrics (loaded :class:`~ifqa_loss.QualityMetric` objects or checkpoint
      paths, same kind as ``metric``) scored with the same options; ``ensemble_combine="mean"``
      averages the per-image losses, ``"min"`` keeps each image's worst metric (the lowest score).
    - ``refresh``: the loss's own copy of the metric is trained by :meth:`update` (real vs
      restored, near its starting weights; :class:`~ifqa_loss.losses.refresh.RefreshConfig`).
      The one exception to the frozen rule; its state is :attr:`refresher`'s, see ``refresh.py``.
    """

    default_metric: str | None = "ifqa"

    def __new__(cls, *args, **kwargs):
        if args:  # every option is keyword-only; a positional path is the usual slip
            first = args[0]
            hint = (f": for a weight file write {cls.__name__}(checkpoint={os.fspath(first)!r})"
                    if isinstance(first, (str, os.PathLike)) else "")
            raise TypeError(f"{cls.__name__} takes keyword arguments only, got {len(args)} positional{hint}")
        return super().__new__(cls)

    def __init__(
        self,
        *,
        checkpoint: str | os.PathLike | None = None,
        metric: str | QualityMetric | None = None,
        input_range: tuple[float, float] = (-1, 1),
        reduction: str = "mean",
        antialias: bool = False,
        out_of_range: str = "error",
        include_in_state_dict: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        precision: str | None = None,
        fast: bool | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        check_values: bool = True,
        random_weights: bool = False,
        sha256: str | None = None,
        augment=None,
        ensemble: list | tuple | None = None,
        ensemble_combine: str = "mean",
        refresh=None,
    ):
        super().__init__()
        if reduction not in QF.REDUCTIONS:
            raise ValueError(f"reduction must be one of {QF.REDUCTIONS}, got {reduction!r}")
        input_range = tuple(float(v) for v in input_range)
        if input_range not in ((-1.0, 1.0), (0.0, 1.0)):
            raise ValueError(f"input_range must be (-1, 1) or (0, 1), got {input_range}")
        if out_of_range not in OUT_OF_RANGE:
            raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
        if isinstance(metric, QualityMetric):
            if checkpoint is not None or random_weights or sha256 is not None:
                raise ValueError("pass either a loaded metric or checkpoint=/random_weights=/sha256=, not both")
            loaded = metric.with_options(channels_last=channels_last, compile=compile, precision=precision,
                                         fast=fast if fast is not None else metric.fast).to(device=device, dtype=dtype)
        else:
            name = metric or self.default_metric if random_weights else resolve_metric(
                metric, checkpoint, default=self.default_metric)
            loaded = load_metric(name, checkpoint=checkpoint, device=device or "cpu", dtype=dtype,
                                 channels_last=channels_last, compile=compile, precision=precision, fast=fast,
                                 random_weights=random_weights, sha256=sha256)
        if ensemble_combine not in ENSEMBLE_COMBINE:
            raise ValueError(f"ensemble_combine must be one of {ENSEMBLE_COMBINE}, got {ensemble_combine!r}")
        refresh_cfg = refresh_config(refresh)
        if refresh_cfg is not None:  # the loss trains its own copy; a shared metric stays as it was
            loaded = QualityMetric(copy.deepcopy(loaded.net), loaded.spec, channels_last=loaded.channels_last,
                                   compile=loaded.compile, precision=loaded.precision, fast=loaded.fast)
        self.__dict__["metric"] = loaded  # unregistered on purpose (see the class docstring)
        self.__dict__["ensemble_metrics"] = [self._ensemble_member(m, loaded, device, dtype) for m in ensemble or ()]
        self.ensemble_combine = ensemble_combine
        self.augment = eot_config(augment)
        self.__dict__["eot"] = EOT(self.augment) if self.augment is not None else None
        self.__dict__["refresher"] = (Refresher(loaded, refresh_cfg, input_range=input_range, antialias=antialias)
                                      if refresh_cfg is not None else None)
        self.input_range = input_range
        self.reduction = reduction
        self.antialias = antialias
        self.out_of_range = out_of_range
        self.include_in_state_dict = include_in_state_dict
        self.check_values = check_values
        self.register_state_dict_post_hook(_add_metric_weights)
        self.register_load_state_dict_pre_hook(_take_metric_weights)

    @staticmethod
    def _ensemble_member(member, primary: QualityMetric, device, dtype) -> QualityMetric:
        if not isinstance(member, QualityMetric):
            member = load_metric(checkpoint=member, device=device or "cpu", dtype=dtype, precision=primary.precision)
        if member.has_map != primary.has_map:
            raise ValueError(f"ensemble member {member.name!r} and the loss's metric {primary.name!r} differ in kind "
                             "(per-pixel map vs one score per image); mix kinds with LossComposer terms instead")
        return member

    @property
    def metrics(self) -> list[QualityMetric]:
        """The loss's metric followed by its ensemble members."""
        return [self.metric, *self.ensemble_metrics]

    def _apply(self, fn, recurse=True):
        for metric in self.metrics:  # .to()/.half()/.cuda() of a parent reach the unregistered metrics
            metric._apply(fn, recurse)
        if self.refresher is not None:
            self.refresher.apply(fn)
        return super()._apply(fn, recurse)

    def expand_draws(self, pred: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (K*N,3,H,W) EOT copies when ``augment`` is on, else ``pred`` itself."""
        return pred if self.eot is None else self.eot.expand(pred, self.input_range)

    def combine(self, per_metric: list[torch.Tensor]) -> torch.Tensor:
        """Per-metric (K*N,) per-copy losses -> (N,): mean over the EOT draws, then the ensemble combination."""
        per_image = torch.stack([v if self.eot is None else self.eot.fold(v) for v in per_metric])
        return per_image.mean(0) if self.ensemble_combine == "mean" else per_image.amax(0)

    def update(self, real: torch.Tensor, restored: torch.Tensor) -> dict[str, float]:
        """One online-refresh step of the loss's metric (``refresh=`` must be set); see ``losses/refresh.py``.

        ``real`` (N,3,H,W) and ``restored`` (M,3,H,W) in ``input_range``; ``restored`` is detached.
        """
        if self.refresher is None:
            raise RuntimeError("this loss's metric is frozen: build it with refresh={...} (e.g. refresh=True) to "
                               "train it online with update(real, restored)")
        return self.refresher.update(real, restored)

    def metric_options(self, pred: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``pred`` made ready for the metric (clamped when ``out_of_range="clamp"``) and the options to pass.

        The values are checked here, once, with the loss's own advice (an overshoot is offered
        ``out_of_range="clamp"``); the metric then skips its value check.
        """
        check_image_batch(pred, self.input_range, name="pred", device=next(self.metric.net.parameters()).device,
                          check_values=self.check_values, overshoot_hint=LOSS_CLAMP_HINT,
                          out_of_range=self.out_of_range)
        if self.out_of_range == "clamp":
            pred = pred.clamp(*self.input_range)
        return pred, {"input_range": self.input_range, "antialias": self.antialias, "check_values": False}


_METRIC_PREFIX = "metric."
_REFRESH_KEY = "refresh"


def _add_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: the frozen metric (or a refreshing loss's state) joins a checkpoint only when asked."""
    if module.include_in_state_dict and module.refresher is not None:
        state_dict[prefix + _REFRESH_KEY] = module.refresher.state_dict()
    elif module.include_in_state_dict:
        for name, tensor in module.metric.state_dict().items():
            state_dict[prefix + _METRIC_PREFIX + name] = tensor


def _take_metric_weights(module: FrozenMetricLoss, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: metric weights in a checkpoint must equal the loaded ones (never silently replaced).

    A parent saved without them loads strictly; one saved with ``include_in_state_dict=True``
    loads when they are the same weights, and is refused otherwise.
    """
    refresh_state = state_dict.pop(prefix + _REFRESH_KEY, None)
    if refresh_state is not None:
        if module.refresher is None:
            raise RuntimeError(f"the checkpoint carries a refreshed {module.metric.name} under "
                               f"{prefix + _REFRESH_KEY!r}; "
                               "build the loss with the same refresh={...} to load it, or drop that key")
        module.refresher.load_state_dict(refresh_state)
    metric_prefix = prefix + _METRIC_PREFIX
    stored = {k[len(metric_prefix):]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(metric_prefix)]}
    if not stored:
        return
    current = module.metric.state_dict()
    differing = [k for k, v in stored.items() if k not in current or current[k].shape != v.shape
                 or not torch.equal(current[k].to(v.device, v.dtype), v)]
    if differing or len(stored) != len(current):
        raise RuntimeError(
            f"the checkpoint carries other {module.metric.name} weights under {metric_prefix!r} "
            f"({len(differing)} differing tensors, e.g. {differing[:2]}) than the loaded metric; the frozen metric "
            "is never replaced by a parent checkpoint: build the loss with checkpoint= for the weights you want, "
            "and drop the 'metric.' keys from the file"
        )

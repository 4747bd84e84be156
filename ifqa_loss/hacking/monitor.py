"""Watch metric gaming during training: the optimised metric and held-out judges on a fixed probe set.

Divergence rule (stated, and the same everywhere): with the first measurement as the baseline,
the optimised gain ``d_opt = optimised - optimised_0`` and the judged gain ``d_judge`` = mean over
judges of ``judge - judge_0``, a measurement is **flagged** when ``d_opt >= min_gain`` and
``d_judge <= flat_ratio * d_opt``: the optimised metric rose clearly while the judges fell or
followed by less than ``flat_ratio`` of it (defaults: 0.05 and 0.25).
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch

__all__ = ["HackingMonitor", "HackingWarning"]


class HackingWarning(UserWarning):
    """The optimised metric rises while the judges do not follow (see the module's rule)."""


class HackingMonitor:
    """Every ``every`` steps: restore a fixed probe set, score it with the optimised metric and the judges.

    Args:
        optimised: the metric the loss optimises (a :class:`~ifqa_loss.QualityMetric`, or a quality
            loss, whose ``metric`` is used: with ``refresh=`` that is the refreshed network).
        judges: ``{name: QualityMetric}`` (or a sequence, named ``judge0``, ...) that only judge.
        probe: (N,3,H,W) degraded inputs, given to ``restore`` as they are.
        gt: optional (N,3,H,W) ground truth in [0,1] (adds PSNR to it).
        every: measure when ``step % every == 0``.
        input_range: range of what ``restore`` returns (scores read it; default (0, 1)).
        min_gain, flat_ratio: the divergence rule (module docstring).
        log: called with one line per measurement (e.g. ``print`` or a logger's ``info``); ``None``: silent.

    Call ``monitor(step, restore)`` in any loop; ``restore`` maps the probe to restored images
    (run under ``torch.no_grad``; the caller's train/eval state is its own business). Returns the
    new record, or ``None`` when this step is not measured. ``history`` holds every record;
    ``flagged`` is True once any record was flagged (a :class:`HackingWarning` is issued then).

    Example:
        >>> import torch, warnings; warnings.simplefilter("ignore")
        >>> from ifqa_loss import load_metric
        >>> a = load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1, input_size=64)
        >>> b = load_metric("ifqa", random_weights=True, seed=1, widths=(4, 8, 8, 16, 16), num_bottleneck=1,
        ...                 input_size=64)
        >>> monitor = HackingMonitor(a, {"B": b}, torch.rand(2, 3, 64, 64), every=10)
        >>> monitor(5, lambda lq: lq) is None, sorted(monitor(10, lambda lq: lq))
        (True, ['d_judge', 'd_optimised', 'flagged', 'judges', 'optimised', 'step'])
    """

    def __init__(self, optimised, judges: Mapping | Sequence, probe: torch.Tensor, *, gt: torch.Tensor | None = None,
                 every: int = 100, input_range: tuple[float, float] = (0.0, 1.0), min_gain: float = 0.05,
                 flat_ratio: float = 0.25, log: Callable[[str], None] | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not judges:
            raise ValueError("HackingMonitor needs at least one judge: a metric the loss does not optimise")
        self.optimised = optimised
        self.judges = dict(judges) if isinstance(judges, Mapping) else {f"judge{i}": j for i, j in enumerate(judges)}
        self.probe = probe.detach()
        self.gt = None if gt is None else gt.detach()
        self.every = every
        self.input_range = tuple(float(v) for v in input_range)
        self.min_gain = min_gain
        self.flat_ratio = flat_ratio
        self.log = log
        self.history: list[dict] = []
        self.flagged = False

    def _metric(self):
        return getattr(self.optimised, "metric", self.optimised)

    @torch.no_grad()
    def score(self, restored: torch.Tensor) -> dict:
        """Scores of (N,3,H,W) restored images: ``{"optimised": float, "judges": {name: float}}`` (+ ``psnr``).

        Values are clamped to ``input_range`` first, as a saved image would be (unbounded generators overshoot).
        """
        restored = restored.clamp(*self.input_range)
        def mean_score(metric):
            device = next(metric.net.parameters()).device
            return float(metric.score(restored.to(device), input_range=self.input_range).mean())

        out = {"optimised": mean_score(self._metric()),
               "judges": {name: mean_score(judge) for name, judge in self.judges.items()}}
        if self.gt is not None:
            from .probe import distortion

            low, high = self.input_range
            unit = ((restored.float() - low) / (high - low)).clamp(0, 1).cpu()
            out["psnr"] = float(distortion(unit, self.gt.float().cpu())["psnr"].mean())
        return out

    def measure(self, step: int, restored: torch.Tensor) -> dict:
        """Score restored probe images now and apply the divergence rule -> the new record."""
        scores = self.score(restored)
        record = {"step": int(step), **scores}
        base = self.history[0] if self.history else record
        d_opt = record["optimised"] - base["optimised"]
        d_judge = sum(record["judges"][n] - base["judges"][n] for n in self.judges) / len(self.judges)
        record.update(d_optimised=d_opt, d_judge=d_judge,
                      flagged=bool(d_opt >= self.min_gain and d_judge <= self.flat_ratio * d_opt))
        self.history.append(record)
        if self.log is not None:
            judged = " ".join(f"{n} {v:.4f}" for n, v in record["judges"].items())
            self.log(f"step {step}: optimised {record['optimised']:.4f} (gain {d_opt:+.4f}), judges {judged} "
                     f"(mean gain {d_judge:+.4f})" + ("  DIVERGING: judges do not follow" if record["flagged"] else ""))
        if record["flagged"] and not self.flagged:
            warnings.warn(f"step {step}: the optimised metric gained {d_opt:+.3f} while the judges moved "
                          f"{d_judge:+.3f} "
                          f"(<= {self.flat_ratio} x the gain): the restorer may be gaming the metric (docs/hacking.md)",
                          HackingWarning, stacklevel=2)
        self.flagged = self.flagged or record["flagged"]
        return record

    def __call__(self, step: int, restore: Callable[[torch.Tensor], torch.Tensor]) -> dict | None:
        if step % self.every:
            return None
        with torch.no_grad():
            restored = restore(self.probe)
        if isinstance(restored, (tuple, list)):  # GFP-GAN's generator returns (image, out_rgbs)
            restored = restored[0]
        return self.measure(step, restored.float())

    def state_dict(self) -> dict:
        """The history (to resume a run with the same baseline)."""
        return {"history": list(self.history), "flagged": self.flagged}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.flagged = bool(state["flagged"])

    def write_csv(self, path: str | os.PathLike) -> None:
        """One row per measurement: step, optimised, each judge, gains, flag (and psnr with ``gt``)."""
        names = list(self.judges)
        columns = ["step", "optimised", *names, "d_optimised", "d_judge", "flagged"]
        columns += ["psnr"] if self.gt is not None else []
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for r in self.history:
                row = {**r, **r["judges"]}
                writer.writerow([row.get(c) for c in columns])

"""Does a state dict fit a metric's network? Names and shapes, compared on a meta-device build."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..registry import METRICS, MetricSpec, get_spec


def expected_shapes(spec: MetricSpec, config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the published state dict, read off a meta-device build (no memory)."""
    with torch.device("meta"):
        net = spec.build(**(config or {}))
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
        if self.looks_like and self.looks_like != self.metric:
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
    state_dict: dict[str, torch.Tensor], metric: str, config: dict | None = None
) -> StateDictReport:
    """Compare names and shapes with the metric's network (no weights are built)."""
    expected = expected_shapes(get_spec(metric), config)
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



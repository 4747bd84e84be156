"""Interleaved, adaptive timing: every contender runs once per round (in a rotating order), so load drift on
a shared machine hits all alike; headline ratios are taken per round (paired) and rounds are added until each
ratio's 95 % interval is narrow enough or the block's time budget is spent.

Not ``torch.utils.benchmark.Timer.adaptive_autorange``: it times one statement at a time (no pairing across
contenders, so load drift between two measurements lands in their ratio), adds untimed warm-up calls to every
measurement and pins the thread count to 1, which would time another configuration than the user's. Its
``Measurement`` is still the container for each contender's times (median, IQR, ``has_warnings``).
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.benchmark import Measurement, TaskSpec

# A summary is flagged as too noisy when its interquartile range exceeds this share of the median.
NOISY_IQR_FRACTION = 0.10
# A headline ratio is conclusive when its 95 % interval lies within this relative distance of the estimate.
RATIO_TARGET = 0.10


def summarize(times_ms: list[float]) -> dict:
    """Median, min, max, interquartile range and a ``noisy`` flag of repeated timings (ms).

    Example:
        >>> s = summarize([10.0, 11.0, 10.5, 30.0])
        >>> s["median"], s["n"], s["noisy"]
        (10.75, 4, True)
    """
    ordered = sorted(times_ms)
    m = measurement("", ordered)
    median = m.median * 1e3
    iqr = m.iqr * 1e3 if len(ordered) >= 4 else ordered[-1] - ordered[0]
    return {"median": median, "min": ordered[0], "max": ordered[-1], "iqr": iqr, "n": len(ordered),
            "noisy": iqr > NOISY_IQR_FRACTION * median}


def measurement(label: str, times_ms: list[float]) -> Measurement:
    """The times (ms) as a ``torch.utils.benchmark.Measurement`` of one call per run (its median and IQR)."""
    spec = TaskSpec(stmt=label, setup="")
    return Measurement(number_per_run=1, raw_times=[t / 1e3 for t in times_ms], task_spec=spec)


def paired_ratio(numerator_ms: list[float], denominator_ms: list[float], *, floor: float | None = None,
                 target: float = RATIO_TARGET) -> dict:
    """Ratio of two contenders timed in the same rounds: geometric mean of the per-round ratios, 95 % t-interval.

    ``floor``: the smallest physically possible ratio (1.0 when the numerator does the denominator's work and
    more). ``status`` is ``"conclusive"`` (interval within ``target`` of the estimate, not below ``floor``),
    ``"impossible"`` (the whole interval below ``floor``: a measurement error, not a result) or ``"wide"``.

    Example:
        >>> r = paired_ratio([20.0, 21.0, 19.0, 20.0], [10.0, 10.5, 9.5, 10.0])
        >>> round(r["estimate"], 3), r["status"]
        (2.0, 'conclusive')
        >>> paired_ratio([9.0, 9.1, 8.9], [10.0, 10.0, 10.0], floor=1.0)["status"]
        'impossible'
    """
    from scipy import stats

    logs = [math.log(a / b) for a, b in zip(numerator_ms, denominator_ms, strict=True)]
    n = len(logs)
    mean = statistics.fmean(logs)
    if n >= 2:
        half = stats.t.ppf(0.975, n - 1) * statistics.stdev(logs) / math.sqrt(n)
    else:
        half = math.inf
    low, high = math.exp(mean - half), math.exp(mean + half)
    estimate = math.exp(mean)
    if floor is not None and high < floor:
        status = "impossible"
    elif high / estimate - 1 <= target and 1 - low / estimate <= target:
        status = "conclusive"
    else:
        status = "wide"
    return {"estimate": estimate, "low": low, "high": high, "n": n, "floor": floor, "target": target,
            "status": status}


@dataclass
class Budget:
    """Wall-clock budget of a whole run, shared out over its blocks; ``progress`` is a tqdm bar in seconds."""

    seconds: float
    progress: object = None  # tqdm bar or None
    start: float = field(default_factory=time.monotonic)
    loads: list = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def tick(self, label: str = "") -> None:
        """Advance the progress bar to the elapsed time and note the load average."""
        if hasattr(os, "getloadavg"):
            self.loads.append(os.getloadavg()[0])
        if self.progress is not None:
            self.progress.n = min(self.progress.total, round(self.elapsed()))
            if label:
                self.progress.set_description_str(label, refresh=False)
            self.progress.refresh()


def interleaved(steps: dict[str, Callable[[], None]], *, rounds: int, warmup: int = 1) -> dict[str, dict]:
    """``{label: summarize(ms per call)}`` of each step, run round-robin ``rounds`` times after ``warmup`` calls.

    CUDA work is synchronised before and after each timed call.

    Example:
        >>> result = interleaved({"a": lambda: None, "b": lambda: None}, rounds=3, warmup=0)
        >>> sorted(result), result["a"]["n"]
        (['a', 'b'], 3)
    """
    times = adaptive(steps, min_rounds=rounds, max_rounds=rounds, warmup=warmup)["times"]
    return {label: summarize(t) for label, t in times.items()}


def adaptive(steps: dict[str, Callable[[], None]], *, ratios: dict[str, tuple[str, str, float | None]] | None = None,
             min_rounds: int = 3, max_rounds: int = 50, warmup: int = 1, budget_s: float = math.inf,
             budget: Budget | None = None, label: str = "", target: float = RATIO_TARGET) -> dict:
    """Round-robin rounds until every ratio in ``ratios`` is conclusive or the time is spent.

    ``ratios``: ``{name: (numerator label, denominator label, floor)}`` (see :func:`paired_ratio`). Stops after
    ``min_rounds`` once every ratio is conclusive, or once ``budget_s`` (this block) is spent, or — after two
    rounds at least — once the whole run's ``budget`` is spent (one round only when it was spent before the block
    began: times, but no interval); never after ``max_rounds``. An ``"impossible"``
    ratio is re-measured (more rounds) while the block has time. The order of the contenders rotates each round.
    Returns ``{"times": {label: [ms]}, "ratios": {name: paired_ratio(...)}, "rounds": n, "stopped": why}``.

    Example:
        >>> out = adaptive({"a": lambda: None, "b": lambda: None}, ratios={"a/b": ("a", "b", None)},
        ...                min_rounds=3, max_rounds=4, warmup=0)
        >>> out["rounds"] in (3, 4), sorted(out["ratios"])
        (True, ['a/b'])
    """
    ratios = ratios or {}
    late = budget is not None and budget.left() <= 0
    if late:  # the run's time is already spent: one round, no interval
        min_rounds = max_rounds = 1
    start = time.monotonic()
    labels = list(steps)
    for _ in range(warmup):
        for step in steps.values():
            step()
    if budget is not None:
        budget.tick(label)
    times: dict[str, list[float]] = {name: [] for name in labels}
    result: dict[str, dict] = {}
    stopped = "max rounds"
    for round_index in range(max_rounds):
        shift = round_index % len(labels)
        for name in labels[shift:] + labels[:shift]:
            times[name].append(timed_call(steps[name]))
            if budget is not None:  # one tick per call: a call can take minutes on a busy machine
                budget.tick(label)
        rounds = round_index + 1
        result = {name: paired_ratio(times[a], times[b], floor=floor, target=target)
                  for name, (a, b, floor) in ratios.items()} if rounds >= 2 else {}
        if rounds < 2:
            continue
        if budget is not None and budget.left() <= 0:
            stopped = "run budget spent"
            break
        if rounds < min_rounds:
            continue
        if all(r["status"] == "conclusive" for r in result.values()):
            stopped = "conclusive" if ratios else "rounds done"
            break
        if time.monotonic() - start >= budget_s:
            stopped = "block budget spent"
            break
    else:
        rounds = max_rounds
        if late:
            stopped = "run budget spent before this block"
    if max_rounds < 2:
        result = {name: paired_ratio(times[a], times[b], floor=floor, target=target)
                  for name, (a, b, floor) in ratios.items()}
    return {"times": times, "ratios": result, "rounds": rounds, "stopped": stopped}


def timed_call(step: Callable[[], None]) -> float:
    """Milliseconds of one call, CUDA work included."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def ratio_text(r: dict) -> str:
    """A ratio for a report, never a physically impossible figure.

    Example:
        >>> ratio_text({"estimate": 1.2, "low": 1.1, "high": 1.3, "status": "conclusive", "floor": 1.0, "n": 5})
        '1.20x (95% CI 1.10–1.30)'
        >>> ratio_text({"estimate": 0.9, "low": 0.85, "high": 0.95, "status": "impossible", "floor": 1.0, "n": 3})
        'not shown: measured 0.90x (95% CI 0.85–0.95) < 1.0 is impossible (measurement error)'
    """
    if r.get("n", 2) < 2 or not math.isfinite(r["high"]) or r["low"] <= 0:
        rounds = f"{r.get('n', 1)} round{'s' if r.get('n', 1) != 1 else ''}"
        if r.get("floor") is not None and r["estimate"] < r["floor"]:
            return f"not shown: measured {r['estimate']:.2f}x < {r['floor']:.1f} in {rounds} (measurement error)"
        return f"{r['estimate']:.2f}x (no interval: {rounds})"
    ci = f"95% CI {r['low']:.2f}–{r['high']:.2f}"
    if r["status"] == "impossible":
        return f"not shown: measured {r['estimate']:.2f}x ({ci}) < {r['floor']:.1f} is impossible (measurement error)"
    if r.get("floor") is not None and r["estimate"] < r["floor"]:
        return f"≈{r['floor']:.2f}x, no overhead resolved ({ci})"
    return f"{r['estimate']:.2f}x ({ci})"


def inconclusive_reasons(named_ratios: dict[str, dict], rounds: dict[str, tuple[int, str]], load: str) -> list[str]:
    """One line per headline ratio that is not conclusive, saying why."""
    lines = []
    for name, r in named_ratios.items():
        if r["status"] == "conclusive":
            continue
        n, stopped = rounds.get(name, (r["n"], ""))
        why = ("the interval lies wholly below what is physically possible" if r["status"] == "impossible"
               else f"its 95% interval is wider than ±{r['target']:.0%}")
        lines.append(f"{name}: inconclusive — {why} after {n} paired rounds ({stopped}; {load}); "
                     "re-run on a quieter machine or with a larger --time-budget")
    return lines

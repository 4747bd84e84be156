"""Interleaved timing: every contender runs once per round, so load drift on a shared machine hits
all alike; the spread is reported and a noisy result is flagged.

Not ``torch.utils.benchmark.Timer``: its ``timeit`` adds two untimed warm-up calls to every
measurement and pins the thread count to 1, which would triple the cost of round-robin
single calls and time another configuration than the user's.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

# A result is flagged as too noisy to conclude when its interquartile range exceeds this share of the median.
NOISY_IQR_FRACTION = 0.10


def summarize(times_ms: list[float]) -> dict:
    """Median, min, max, interquartile range and a ``noisy`` flag of repeated timings (ms).

    Example:
        >>> s = summarize([10.0, 11.0, 10.5, 30.0])
        >>> s["median"], s["n"], s["noisy"]
        (10.75, 4, True)
    """
    ordered = sorted(times_ms)
    if len(ordered) >= 4:
        quartiles = statistics.quantiles(ordered, n=4)
        iqr = quartiles[2] - quartiles[0]
    else:
        iqr = ordered[-1] - ordered[0]
    median = statistics.median(ordered)
    return {"median": median, "min": ordered[0], "max": ordered[-1], "iqr": iqr, "n": len(ordered),
            "noisy": iqr > NOISY_IQR_FRACTION * median}


def interleaved(steps: dict[str, Callable[[], None]], *, rounds: int, warmup: int = 1) -> dict[str, dict]:
    """``{label: summarize(ms per call)}`` of each step, run round-robin ``rounds`` times after ``warmup`` calls.

    CUDA work is synchronised before and after each timed call.

    Example:
        >>> result = interleaved({"a": lambda: None, "b": lambda: None}, rounds=3, warmup=0)
        >>> sorted(result), result["a"]["n"]
        (['a', 'b'], 3)
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            times[label].append(timed_call(step))
    return {label: summarize(t) for label, t in times.items()}


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


def noise_warnings(named_summaries: dict[str, dict]) -> list[str]:
    """One line per too-noisy summary, naming what to do about it."""
    return [f"{label}: spread {s['iqr']:.1f} ms around a {s['median']:.1f} ms median (n={s['n']}) is too noisy "
            "to conclude; re-run with more --repeats on a quieter machine"
            for label, s in named_summaries.items() if s["noisy"]]

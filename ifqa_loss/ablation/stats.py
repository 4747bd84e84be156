"""Statistics of an ablation with the seed as the unit of replication.

Training randomness lives in the seed; the held-out images only measure each trained network more
precisely. So, per setting and metric:

1. **Per-seed paired delta**: for each seed, the mean over the same held-out images of
   ``setting - baseline`` where both were trained with that seed (set-level judges: the difference
   of the two numbers).
2. **Primary estimate**: the mean of the per-seed deltas, a 95 % Student-t interval over seeds and the
   two-sided p-value of a one-sample t-test of the per-seed deltas against 0
   (``scipy.stats.ttest_1samp``; ``n - 1`` degrees of freedom). With fewer than :data:`MIN_SEEDS`
   seeds no inference over training randomness is possible: interval and p are ``None`` and the
   per-seed deltas are shown instead.
3. **Multiplicity**: Holm over every setting for each metric
   (``statsmodels.stats.multitest.multipletests(method="holm")``); a setting is *starred* when its
   Holm-adjusted p < 0.05 **and** its interval excludes 0; it is *better* or *worse* by the sign of the
   delta, respecting lower-is-better metrics.
4. **Secondary (both levels)**: a hierarchical bootstrap interval: resample seeds with replacement,
   then images with replacement within each drawn seed, never images apart from their seed.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_SEEDS", "ALPHA", "seed_level", "holm", "hierarchical_bootstrap", "direction", "format_estimate",
           "decimals_for"]

MIN_SEEDS = 3
ALPHA = 0.05


def seed_level(deltas, *, confidence: float = 0.95) -> dict:
    """Mean of per-seed deltas with its t-interval and p -> ``{delta, ci_low, ci_high, p, seeds, sd}``.

    Example:
        >>> r = seed_level([0.1, 0.12, 0.09, 0.11, 0.1, 0.13])
        >>> round(r["delta"], 4), r["p"] < 0.01, r["ci_low"] > 0
        (0.1083, True, True)
        >>> seed_level([1.0, -1.0])["p"] is None
        True
    """
    from scipy import stats

    d = np.asarray([v for v in deltas if v is not None], dtype=float)
    out = {"delta": float(d.mean()) if len(d) else None, "ci_low": None, "ci_high": None, "p": None,
           "seeds": int(len(d)), "sd": float(d.std(ddof=1)) if len(d) > 1 else None}
    if len(d) < MIN_SEEDS or not np.all(np.isfinite(d)):
        return out
    sd = d.std(ddof=1)
    if sd == 0:  # every seed moved by exactly the same amount: no spread to test against
        out.update(ci_low=float(d[0]), ci_high=float(d[0]), p=1.0 if d[0] == 0 else 0.0)
        return out
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * sd / math.sqrt(len(d))
    out.update(ci_low=float(d.mean() - half), ci_high=float(d.mean() + half),
               p=float(stats.ttest_1samp(d, 0.0).pvalue))
    return out


def holm(pvalues) -> list:
    """Holm-adjusted p-values over a family; ``None`` (untestable) entries stay ``None``.

    Example:
        >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
        >>> holm([None, 0.02])
        [None, 0.02]
    """
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        raise ImportError("the ablation report's Holm correction needs statsmodels: pip install "
                          "'ifqa-loss[ablation]'") from None

    valid = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    adjusted = [None] * len(pvalues)
    if valid:
        corrected = multipletests([pvalues[i] for i in valid], alpha=ALPHA, method="holm")[1]
        for i, p in zip(valid, corrected, strict=True):
            adjusted[i] = float(p)
    return adjusted


def hierarchical_bootstrap(per_seed: list[np.ndarray], *, resamples: int = 2000, confidence: float = 0.95,
                           seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile interval of the mean delta: seeds resampled, then images within each drawn seed.

    ``per_seed``: one array of per-image deltas (setting - same-seed baseline) per seed.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> low, high = hierarchical_bootstrap([rng.normal(1, 0.1, 20) + s for s in (-0.1, 0, 0.1)])
        >>> low < 1 < high
        True
    """
    if len(per_seed) < MIN_SEEDS or resamples <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=float) for a in per_seed]
    if not all(np.all(np.isfinite(a)) and len(a) for a in arrays):
        return None, None
    n = len(arrays)
    picks = rng.integers(0, n, size=(resamples, n))  # level 1: seeds, with replacement
    slots = np.empty((resamples, n))
    for s in range(n):  # level 2: that seed's images, with replacement, for every slot that drew it
        drawn = picks == s
        count, size = int(drawn.sum()), len(arrays[s])
        if count:
            slots[drawn] = arrays[s][rng.integers(0, size, (count, size))].mean(1)
    means = slots.mean(1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def direction(delta: float | None, lower_is_better: bool) -> str:
    """``"better"``, ``"worse"`` or ``"same"`` for a delta of a metric.

    Example:
        >>> direction(-0.02, lower_is_better=True), direction(-0.02, lower_is_better=False)
        ('better', 'worse')
    """
    if delta is None or not math.isfinite(delta) or delta == 0:
        return "same"
    return "better" if (delta < 0) == lower_is_better else "worse"


def decimals_for(low: float | None, high: float | None, fallback: float | None = None) -> int:
    """Decimals that show an interval's half-width to 2 significant digits (no false precision).

    Example:
        >>> decimals_for(0.1234, 0.1456), decimals_for(-12.3, 40.0)
        (3, 0)
    """
    width = None
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high) and high > low:
        width = (high - low) / 2
    elif fallback is not None and math.isfinite(fallback) and fallback > 0:
        width = fallback
    if width is None:
        return 4
    return max(0, min(10, 1 - math.floor(math.log10(width))))


def format_estimate(value: float | None, low: float | None = None, high: float | None = None, *, decimals=None,
                    sign: bool = False) -> str:
    """A number with the digits its interval supports; ``[low, high]`` appended when given.

    Example:
        >>> format_estimate(0.00012, -0.00008, 0.00032, sign=True)
        '+0.00012 [-0.00008, 0.00032]'
        >>> format_estimate(31.4159, 31.2, 31.6)
        '31.42 [31.20, 31.60]'
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    d = decimals_for(low, high) if decimals is None else decimals
    text = f"{value:+.{d}f}" if sign else f"{value:.{d}f}"
    if low is not None and high is not None:
        text += f" [{low:.{d}f}, {high:.{d}f}]"
    return text

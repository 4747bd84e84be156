"""Seed-level statistics on synthetic per-seed / per-image results whose truth is known."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ifqa_loss.ablation import stats
from ifqa_loss.ablation.config import config_from_dict, plan_settings
from ifqa_loss.ablation.report import markdown_report, summarize


def _config(seeds, weights=(0, 1.0)):
    return config_from_dict({"name": "synthetic", "seeds": list(seeds), "mode": "external",
                             "sweep": [{"metric": "ifqa", "weights": list(weights)}],
                             "metrics": {"ifqa": {"random_weights": True}},
                             "external": {"command": "true", "gt": "gt"}, "evaluation": {"bootstrap": 300}},
                            check_imports=False)


def _records(cfg, effect, images=8, lpips_effect=None, noise=0.01, rng=None):
    """Per-image PSNR (judge, higher better) and LPIPS (lower better): baseline ~ 30 dB; ``effect(seed, weight)``
    is the true shift of every image of that setting against the same seed's baseline."""
    rng = rng or np.random.default_rng(0)
    base = {s: 30 + rng.normal(0, 0.5) + rng.normal(0, 1, images) for s in cfg.seeds}  # seed and image effects
    records = []
    for s in plan_settings(cfg):
        shift = 0.0 if s.metric is None else effect(s.seed, s.weight)
        psnr = base[s.seed] + shift + rng.normal(0, noise, images)
        lp = 0.3 - (0 if s.metric is None else (lpips_effect or effect)(s.seed, s.weight)) / 100 + \
            rng.normal(0, noise / 100, images)
        records.append({"setting": {"id": s.id, "group": s.group, "metric": s.metric, "weight": s.weight,
                                    "schedule": s.schedule, "seed": s.seed},
                        "definition": cfg.setting_definition(s), "images": [f"{i}.png" for i in range(images)],
                        "metric_order": ["psnr", "lpips"], "kinds": {"psnr": "judge", "lpips": "judge"},
                        "lower_is_better": ["lpips"], "notes": {}, "metrics": {"psnr": psnr.tolist(),
                                                                              "lpips": lp.tolist()},
                        "set_metrics": {}})
    return records


def _row(summary, setting="ifqa-w1-constant"):
    return next(r for r in summary["rows"] if r["setting"] == setting)


def test_two_seeds_of_opposite_sign_are_not_significant():
    # seed 0 better than its baseline on every image, seed 1 worse on every image (the case)
    cfg = _config([0, 1])
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.5 if seed == 0 else -0.5))
    row = _row(summary)
    assert row["psnr_p"] is None and row["psnr_ci_low"] is None and row["psnr_star"] is False
    assert summary["inference"] is False and "no inference over training randomness" in summary["statement"]
    assert [round(d, 1) for d in row["psnr_seed_deltas"]] == [0.5, -0.5]
    table = markdown_report(summary)
    assert "per-seed Δ: +0.5" in table and "no inference over training randomness is possible" in table
    assert "*" not in table.split("## Primary")[1].split("##")[0].replace("**", "")


def test_seeds_that_disagree_in_sign_stay_insignificant_with_more_seeds():
    cfg = _config([0, 1, 2, 3])
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.5 if seed % 2 == 0 else -0.5))
    row = _row(summary)
    assert row["psnr_p"] > 0.5 and row["psnr_ci_low"] < 0 < row["psnr_ci_high"] and not row["psnr_star"]
    # the secondary analysis resamples seeds first, so it does not call this significant either
    assert row["psnr_boot_ci_low"] < 0 < row["psnr_boot_ci_high"]


def test_a_consistent_gain_over_six_seeds_is_significant_better_and_bold():
    cfg = _config(range(6))
    rng = np.random.default_rng(1)
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.4 + rng.normal(0, 0.05), rng=rng))
    row = _row(summary)
    assert row["psnr_p"] < 0.01 and row["psnr_p_holm"] < 0.01 and row["psnr_star"]
    assert 0.3 < row["psnr_ci_low"] < row["psnr_delta"] < row["psnr_ci_high"] < 0.5
    assert row["psnr_direction"] == "better" and row["lpips_direction"] == "better"  # LPIPS fell: lower is better
    assert row["lpips_delta"] < 0 and row["lpips_star"]
    table = markdown_report(summary)
    assert "**+0.3" in table and "| better |" in table


def test_a_consistent_loss_is_starred_worse_but_not_bold():
    cfg = _config(range(4))
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: -0.3 - 0.01 * seed))
    row = _row(summary)
    assert row["psnr_star"] and row["psnr_direction"] == "worse"
    primary = markdown_report(summary).split("## Primary")[1].split("##")[0]
    assert "**" not in primary and "-0.3" in primary


def test_tiny_differences_are_not_shown_with_false_precision():
    cfg = _config(range(3))
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.0001 * (seed - 1), noise=0.0001))
    table = markdown_report(summary)
    assert "± 0.0000" not in table and "0.0000 [" not in table
    row = _row(summary)
    assert not row["psnr_star"]


def test_holm_adjusts_over_settings_and_the_primary_defaults_to_the_first_judge():
    cfg = _config(range(3), weights=(0, 0.1, 1.0, 10.0))
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.2 * w + 0.01 * seed))
    tested = [r for r in summary["rows"] if r["metric"] != "-"]
    raw, adjusted = [r["psnr_p"] for r in tested], [r["psnr_p_holm"] for r in tested]
    from statsmodels.stats.multitest import multipletests

    assert adjusted == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert all(a >= p for a, p in zip(adjusted, raw, strict=True))
    assert summary["primary"] == "psnr"


def test_results_are_strict_json_and_carry_the_data_contract(tmp_path):
    from ifqa_loss.ablation.io import dumps

    cfg = _config([0, 1])
    summary = summarize(cfg.to_dict(), _records(cfg, lambda seed, w: 0.1))
    text = dumps(summary)

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    parsed = json.loads(text, parse_constant=refuse)
    row = next(r for r in parsed["rows"] if r["metric"] != "-")
    for key in ("delta", "ci_low", "ci_high", "p", "p_holm"):
        assert f"psnr_{key}" in row and f"lpips_{key}" in row
    assert row["psnr_p"] is None and math.isfinite(row["psnr_delta"])


def test_a_mismatched_definition_is_refused_naming_the_setting():
    from ifqa_loss.ablation.config import SweepConfigError

    cfg = _config([0, 1, 2])
    records = _records(cfg, lambda seed, w: 0.1)
    records[-1]["definition"] = "0" * 64
    with pytest.raises(SweepConfigError, match=records[-1]["setting"]["id"]):
        summarize(cfg.to_dict(), records)


@pytest.mark.parametrize(("low", "high", "expected"), [(0.1, 0.3, 2), (-0.00008, 0.00032, 5), (10, 50, 0)])
def test_digits_follow_the_interval(low, high, expected):
    assert stats.decimals_for(low, high) == expected

"""The sweep file: validation names the field and the fix; the plan and its shards."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ifqa_loss.ablation.config import (
    SweepConfigError,
    config_from_dict,
    parse_shard,
    plan_settings,
    shard_settings,
)


def test_plan_has_one_baseline_per_seed_then_every_weight_and_schedule(builtin_config):
    raw = builtin_config(seeds=[0, 1], sweep=[{"metric": "ifqa", "weights": [0, 0.1, 1],
                                               "schedules": {"constant": None, "warm": {"type": "linear_warmup",
                                                                                        "steps": 5}}}])
    ids = [s.id for s in plan_settings(config_from_dict(raw))]
    assert ids[:2] == ["baseline-s0", "baseline-s1"] and len(ids) == 2 + 2 * 2 * 2
    assert "ifqa-w0.1-warm-s1" in ids and not any(i.startswith("ifqa-w0-") for i in ids)


def test_shards_are_disjoint_and_cover_the_plan(builtin_config):
    settings = plan_settings(config_from_dict(builtin_config(seeds=[0, 1, 2])))
    shards = [shard_settings(settings, (i, 4)) for i in range(4)]
    assert sorted(s.id for part in shards for s in part) == sorted(s.id for s in settings)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/3"])
def test_bad_shard_is_refused(text):
    with pytest.raises(SweepConfigError, match="i/n"):
        parse_shard(text)


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": [0]}, "unknown top-level field.*'seed'"),
    ({"metrics": {}}, "no entry in metrics"),
    ({"metrics": {"ifqa": {}}}, "checkpoint: PATH.*random_weights: true"),
    ({"base": {"l1": {"type": "L3"}}}, "base.l1: type must be one of"),
    ({"sweep": [{"metric": "ifqa", "weights": [-1]}]}, r"sweep\[0\].weights must be"),
    ({"sweep": [{"metric": "ifqa", "schedules": {"x": {"type": "cosine"}}}]}, "unknown schedule 'cosine'"),
    ({"train": {"step": 3}}, "train: unknown field"),
    ({"mode": "external"}, "external.command must be"),
])
def test_invalid_sweep_files_name_the_problem(builtin_config, change, message):
    with pytest.raises(SweepConfigError, match=message):
        config_from_dict(builtin_config(**change))


def test_lpips_without_its_backbone_refuses_unless_asked(tmp_path, monkeypatch):
    from ifqa_loss.ablation.config import LPIPSConfig
    from ifqa_loss.ablation.evaluate import LPIPSBackboneMissing, load_lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache: no backbone file
    with pytest.raises(LPIPSBackboneMissing, match="random_backbone: true"):
        load_lpips(LPIPSConfig(net="squeeze"))
    with pytest.warns(UserWarning, match="RANDOM backbone"):
        assert load_lpips(LPIPSConfig(net="squeeze", random_backbone=True)).random_backbone


def test_cli_reports_a_bad_sweep_file_with_exit_2(tmp_path):
    bad = tmp_path / "sweep.yaml"
    bad.write_text("mode: builtin\nsweep: [{metric: ifqa}]\n")
    proc = subprocess.run([sys.executable, "-m", "ifqa_loss", "ablate", "--config", str(bad)], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no entry in metrics" in proc.stderr

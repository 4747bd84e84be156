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
    ({"sweep": [{"metric": "ifqa", "weights": [-1]}]}, r"sweep\[0\].weights\[0\] must be a number >= 0"),
    ({"sweep": [{"metric": "ifqa", "weights": [0, float("inf")]}]}, r"sweep\[0\].weights\[1\] must be a finite"),
    ({"train": {"lr": float("nan")}}, "train.lr must be a finite number"),
    ({"train": {"lr": 0}}, r"train.lr must be a number > 0"),
    ({"train": {"steps": 2.5}}, "train.steps must be an integer >= 1"),
    ({"base": {"l1": {"type": "L1Loss", "weight": -1}}}, r"base.l1.weight must be a number >= 0"),
    ({"evaluation": {"color": "lab"}}, "evaluation.color must be 'rgb' or 'y'"),
    ({"model": {"net": "os.system"}}, "is a builtin_function_or_method, not an nn.Module subclass"),
    ({"model": {"net": "subprocess.Popen"}}, "is a type, not an nn.Module subclass"),
    ({"judges": {"psnr": {"type": "ifqa", "random_weights": True}}}, "a judge needs its own name"),
    ({"judges": {"held": {"type": "ifqa"}}}, "judges.held needs checkpoint: PATH"),
    ({"judges": {"f": {"type": "fid", "features": "nope"}}}, "judges.f.features must name an identity judge"),
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


def test_a_judge_with_the_loss_metrics_checkpoint_is_not_held_out(builtin_config, tmp_path):
    metrics = {"ifqa": {"checkpoint": str(tmp_path / "a.pth")}}
    with pytest.raises(SweepConfigError, match="uses the checkpoint of loss metric 'ifqa'"):
        config_from_dict(builtin_config(metrics=metrics, judges={"held": {"type": "ifqa",
                                                                          "checkpoint": str(tmp_path / "a.pth")}}))


def test_model_net_is_checked_before_anything_is_called(builtin_config, tmp_path, monkeypatch):
    # a module whose class is not an nn.Module: refused at load, and its constructor never runs
    (tmp_path / "hostile_net.py").write_text("class Net:\n    def __init__(self, **kw):\n"
                                              "        open(__file__ + '.called', 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SweepConfigError, match="'hostile_net.Net' is a type, not an nn.Module subclass"):
        config_from_dict(builtin_config(model={"net": "hostile_net.Net"}))
    assert not (tmp_path / "hostile_net.py.called").exists()


def test_yaml_limits_bound_aliases_nesting_and_size(tmp_path):
    """The sweep file is read by safeio with the sweep's tighter limits (more hostile files: tests/robustness)."""
    from ifqa_loss.ablation.config import MAX_SWEEP_DEPTH, MAX_SWEEP_VALUES, load_config

    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        laughs.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    (tmp_path / "laughs.yaml").write_text("\n".join(laughs) + "\n")
    with pytest.raises(SweepConfigError, match=f"expands to more than {MAX_SWEEP_VALUES} values"):
        load_config(tmp_path / "laughs.yaml")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 60 + "]" * 60 + "\n")
    with pytest.raises(SweepConfigError, match=f"nests more than {MAX_SWEEP_DEPTH} levels"):
        load_config(tmp_path / "deep.yaml")
    (tmp_path / "big.yaml").write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(SweepConfigError, match="larger than 1 MiB"):
        load_config(tmp_path / "big.yaml")
    with pytest.raises(SweepConfigError, match="is a folder, not a regular file"):
        load_config(tmp_path)
    (tmp_path / "ok.yaml").write_text("a: &w [0.1, 0.2]\nsweep: [{metric: ifqa, weights: *w}]\ndata: {hq: faces}\n"
                                      "metrics: {ifqa: {random_weights: true}}\n")
    with pytest.raises(SweepConfigError, match=r"unknown top-level field\(s\) \['a'\]"):
        load_config(tmp_path / "ok.yaml")  # read (aliases within the limits), then validated


def test_loss_options_reach_the_loss_generically(builtin_config):
    """Any IFQALoss keyword in sweep[].loss is passed through (e.g. defences a later issue adds)."""
    import warnings

    from ifqa_loss.ablation.builtin import build_objective
    from ifqa_loss.ablation.config import Setting
    from ifqa_loss.ablation.evaluate import load_metrics

    raw = builtin_config(sweep=[{"metric": "ifqa", "weights": [0, 0.5], "loss": {"mode": "nonsaturating",
                                                                                  "antialias": True}}])
    cfg = config_from_dict(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objective = build_objective(cfg, Setting("ifqa", 0.5, "constant", 0), metrics=load_metrics(cfg, "cpu"),
                                    lpips=None)
    loss = objective.terms["ifqa"]
    assert loss.mode == "nonsaturating" and loss.antialias is True


def test_the_old_image_level_test_field_is_ignored_with_a_warning(builtin_config):
    with pytest.warns(UserWarning, match=r"evaluation.test \('wilcoxon'\) is ignored"):
        cfg = config_from_dict(builtin_config(evaluation={"test": "wilcoxon", "samples": 2}))
    assert cfg.evaluation.samples == 2 and not hasattr(cfg.evaluation, "test")

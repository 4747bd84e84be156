"""Built-in sweeps: a 2-setting x 1-seed sweep on 32 px faces trains on the CPU, writes every artefact,
resumes without recomputing, and reproduces its numbers exactly from the same seed."""
from __future__ import annotations

import json
import warnings

import pytest

from ifqa_loss.ablation import config_from_dict, run_sweep

ARTEFACTS = ["config.json", "config.yaml", "environment.json", "results.csv", "results.json", "results.md",
             "results_per_seed.csv", "samples.png", "plots/metrics_vs_weight.png", "plots/tradeoff.png",
             "samples/lq_000.png", "samples/gt_001.png"]
PER_SETTING = ["done.json", "per_image.json", "train_log.csv", "restorer.pth", "samples/restored_000.png",
               "samples/map_001.png", "samples/maps.json"]


def _run(builtin_config, out):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weight IFQA/LPIPS warn by design
        return run_sweep(config_from_dict(builtin_config()), out, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def sweep(builtin_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("builtin") / "run"
    return out, _run(lambda: builtin_config(evaluation={"samples": 2, "plots": True}), out)


def test_sweep_writes_every_artefact(sweep):
    out, result = sweep
    assert result["ran"] == ["baseline-s0", "ifqa-w0.5-constant-s0"]
    missing = [a for a in ARTEFACTS if not (out / a).is_file()]
    missing += [f"{s}/{a}" for s in result["ran"] for a in PER_SETTING if not (out / "settings" / s / a).is_file()]
    assert not missing
    results = json.loads((out / "results.json").read_text())
    assert [r["setting"] for r in results["rows"]] == ["baseline", "ifqa-w0.5-constant"]
    for name in ("psnr", "ssim", "lpips", "ifqa", "ifqa_eyes", "ifqa_nose", "ifqa_mouth", "ifqa_skin"):
        assert name in results["metrics"]
    assert results["notes"]["ifqa"] == results["notes"]["ifqa_eyes"] == "RANDOM WEIGHTS"
    assert results["notes"]["lpips"] == "RANDOM BACKBONE"
    # the swept term and its regions are optimised; PSNR/SSIM (and LPIPS, not in this loss) are judges
    assert results["kinds"]["ifqa"] == results["kinds"]["ifqa_eyes"] == "optimised"
    assert results["kinds"]["psnr"] == results["kinds"]["lpips"] == "judge" and results["primary"] == "psnr"
    table = (out / "results.md").read_text()
    assert "RANDOM WEIGHTS" in table and "ifqa-w0.5-constant" in table and "ifqa [optimised]" in table
    assert "no inference over training randomness is possible" in table  # one seed
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and env["git"]["ifqa_loss"]["commit"]


def test_settings_share_init_and_batches_and_differ_only_in_the_loss(sweep):
    import csv

    out, _ = sweep
    logs = {s: list(csv.DictReader((out / "settings" / s / "train_log.csv").read_text().splitlines()))
            for s in ("baseline-s0", "ifqa-w0.5-constant-s0")}
    assert "weight/ifqa" in logs["ifqa-w0.5-constant-s0"][0] and "ifqa" not in logs["baseline-s0"][0]
    # Same initial weights, same first batch and degradations: the first L1 is identical.
    assert logs["baseline-s0"][0]["l1"] == logs["ifqa-w0.5-constant-s0"][0]["l1"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[0]["psnr_mean"] != rows[1]["psnr_mean"]


def test_rerun_resumes_without_recomputing(sweep, builtin_config):
    out, _ = sweep
    done = out / "settings" / "ifqa-w0.5-constant-s0" / "done.json"
    stamp = (out / "settings" / "baseline-s0" / "done.json").stat().st_mtime_ns
    again = _run(builtin_config, out)
    assert again["ran"] == [] and again["skipped"] == ["baseline-s0", "ifqa-w0.5-constant-s0"]
    done.unlink()  # as if interrupted during this setting
    partial = _run(builtin_config, out)
    assert partial["ran"] == ["ifqa-w0.5-constant-s0"]
    assert (out / "settings" / "baseline-s0" / "done.json").stat().st_mtime_ns == stamp


def test_same_seed_gives_identical_numbers(sweep, builtin_config, tmp_path):
    out, _ = sweep
    _run(builtin_config, tmp_path / "again")
    first = json.loads((out / "results.json").read_text())["per_seed"]
    second = json.loads((tmp_path / "again" / "results.json").read_text())["per_seed"]
    assert sorted(first, key=lambda r: r["id"]) == sorted(second, key=lambda r: r["id"])


def test_adding_a_seed_extends_the_run_and_keeps_finished_settings(builtin_config, tmp_path):
    out = tmp_path / "run"
    raw = builtin_config(sweep=[{"metric": "ifqa", "weights": [0, 0.5]}])
    _run(lambda: raw, out)
    stamp = (out / "settings" / "baseline-s0" / "done.json").stat().st_mtime_ns
    extended = _run(lambda: {**raw, "seeds": [0, 1]}, out)
    assert extended["skipped"] == ["baseline-s0", "ifqa-w0.5-constant-s0"]
    assert extended["ran"] == ["baseline-s1", "ifqa-w0.5-constant-s1"]
    assert (out / "settings" / "baseline-s0" / "done.json").stat().st_mtime_ns == stamp
    stored = json.loads((out / "config.json").read_text())
    assert stored["seeds"] == [0, 1] and not stored["data"]["hq"].startswith("/")  # relative to the run folder
    assert json.loads((out / "results.json").read_text())["rows"][1]["seeds"] == 2
    # a changed definition of a finished setting (here: the learning rate) is refused, naming them
    from ifqa_loss.ablation import SweepConfigError

    changed = config_from_dict({**raw, "seeds": [0, 1], "train": {**raw["train"], "lr": 2e-3}})
    with pytest.raises(SweepConfigError, match=r"defines differently: \['baseline-s0'"):
        run_sweep(changed, out, progress=False)
    # the folder moved (or mounted elsewhere): it still reports and resumes
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    out.rename(moved)
    (moved / "results.md").unlink()
    again = _run(lambda: {**raw, "seeds": [0, 1]}, moved)
    assert again["ran"] == [] and (moved / "results.md").is_file()


def test_rerun_of_an_interrupted_setting_logs_each_step_once(sweep, builtin_config):
    import csv

    out, _ = sweep
    (out / "settings" / "ifqa-w0.5-constant-s0" / "done.json").unlink()
    _run(builtin_config, out)
    rows = list(csv.DictReader((out / "settings" / "ifqa-w0.5-constant-s0" / "train_log.csv").read_text()
                               .splitlines()))
    assert [int(r["step"]) for r in rows] == list(range(3))

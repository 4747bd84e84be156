"""External sweeps: the user's command (a real script, as a subprocess) per setting; shards merge into
the same table as one unsharded run. The sweep and the shard merge run through ``python -m ifqa_loss`` as well."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import yaml

from ifqa_loss.ablation import SweepConfigError, config_from_dict, run_sweep, write_report
from ifqa_loss.ablation.external import ExternalCommandError
from ifqa_loss.cli import main


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ifqa_loss", *args], capture_output=True, text=True,
                          env=os.environ.copy(), cwd=cwd, timeout=300)


def _api(raw, out, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_sweep(config_from_dict(raw), out, progress=False, log=lambda m: None, **kwargs)


@pytest.fixture(scope="module")
def unsharded(external_config, tmp_path_factory):
    folder = tmp_path_factory.mktemp("external")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(external_config()))
    proc = _cli("ablate", "--config", str(folder / "sweep.yaml"), "--out", str(folder / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return folder / "run", json.loads(proc.stdout)


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_cli_runs_the_command_per_setting_and_finds_the_known_gain(unsharded):
    out, result = unsharded
    assert result["ran"] == ["baseline-s0", "baseline-s1", "baseline-s2", "ifqa-w1-constant-s0",
                             "ifqa-w1-constant-s1", "ifqa-w1-constant-s2"]
    results = _strict((out / "results.json").read_text())
    rows = {r["setting"]: r for r in results["rows"]}
    # The script's weight-1 setting blends 0.1 less grey on every seed: PSNR rises, consistently over the 3 seeds.
    row = rows["ifqa-w1-constant"]
    assert results["primary"] == "psnr" and results["kinds"]["psnr"] == "judge" and results["inference"]
    assert row["psnr_delta"] > 1 and row["psnr_ci_low"] > 0 and row["psnr_p"] < 0.05 and row["psnr_star"]
    assert row["psnr_direction"] == "better" and row["ssim_direction"] == "better"
    assert rows["baseline"]["seeds"] == 3 and row["psnr_sd"] > 0 and rows["baseline"]["psnr_delta"] is None
    for key in ("delta", "ci_low", "ci_high", "p", "p_holm"):
        assert f"psnr_{key}" in row
    per_seed = (out / "results_per_seed.csv").read_text().splitlines()
    assert len(per_seed) == 1 + 6 and "psnr_delta" in per_seed[0]
    log = (out / "settings" / "ifqa-w1-constant-s1" / "train.log").read_text()
    assert "--weight 1 --seed 1" in log


def test_seeds_that_disagree_in_sign_are_not_starred(external_config, tmp_path):
    # seed 0 gains on every image, seed 1 loses on every image: 2 seeds, no inference possible
    _api(external_config(["--flip"], seeds=[0, 1]), tmp_path / "run")
    results = _strict((tmp_path / "run" / "results.json").read_text())
    row = next(r for r in results["rows"] if r["setting"] == "ifqa-w1-constant")
    assert row["psnr_seed_deltas"][0] > 0 > row["psnr_seed_deltas"][1]
    assert row["psnr_p"] is None and row["psnr_ci_low"] is None and not row["psnr_star"]
    assert not results["inference"] and "no inference" in (tmp_path / "run" / "results.md").read_text()


def test_restorations_of_another_size_are_refused_unless_resizing_is_asked(external_config, tmp_path):
    raw = external_config(["--size", "24"], seeds=[0])
    with pytest.raises(ExternalCommandError, match=r"is 24x24 \(WxH\) but its ground truth is 32x32"):
        _api(raw, tmp_path / "refused")
    raw["external"]["resize"] = True
    _api(raw, tmp_path / "resized")
    results = _strict((tmp_path / "resized" / "results.json").read_text())
    assert "RESIZED" in results["notes"]["psnr"] and results["config"]["external"]["resize"] is True


def test_out_that_is_a_file_is_refused_and_left_untouched(external_config, tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(external_config()))
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    code = main(["ablate", "--config", str(tmp_path / "sweep.yaml"), "--out", str(target), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "is a file, not a folder" in err
    assert target.read_text() == "precious"


def test_shards_merge_into_the_unsharded_table(external_config, tmp_path):
    raw = external_config(seeds=[0])
    _api(raw, tmp_path / "whole")
    shared = tmp_path / "shared"  # array job on a shared disk: one folder
    for i in range(2):
        _api(raw, shared, shard=(i, 2))
    separate = [tmp_path / f"shard{i}" for i in range(2)]  # or one folder per machine, merged by report
    for i, folder in enumerate(separate):
        _api(raw, folder, shard=(i, 2))
    with pytest.raises(SweepConfigError, match="1 of 2 settings are not finished"):
        write_report(separate[0])  # one shard alone is not the table
    assert not (separate[0] / "results.csv").exists()
    proc = _cli("ablate", "report", str(separate[0]), str(separate[1]))
    assert proc.returncode == 0, proc.stderr
    expected = (tmp_path / "whole" / "results.csv").read_text()
    assert (shared / "results.csv").read_text() == expected
    assert (separate[0] / "results.csv").read_text() == expected


def test_a_failing_command_stops_with_its_log_and_is_not_marked_done(external_config, tmp_path):
    raw = external_config()
    raw["external"]["command"] = [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"]
    with pytest.raises(ExternalCommandError, match="exited with 3(.|\n)*out of memory"):
        _api(raw, tmp_path / "run")
    assert not list((tmp_path / "run" / "settings").glob("*/done.json"))

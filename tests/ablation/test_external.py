"""External sweeps: the user's command (a real script, as a subprocess) per setting; shards merge into
the same table as one unsharded run."""
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


def test_cli_runs_the_command_per_setting_and_evaluates_its_images(unsharded):
    out, result = unsharded
    assert result["ran"] == ["baseline-s0", "baseline-s1", "ifqa-w1-constant-s0", "ifqa-w1-constant-s1"]
    rows = {r["setting"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    # The script restores better with a larger weight: PSNR rises on every image, and the paired test sees it.
    assert rows["ifqa-w1-constant"]["psnr_delta"] > 0 and rows["ifqa-w1-constant"]["psnr_p"] < 0.05
    assert rows["baseline"]["seeds"] == 2 and rows["ifqa-w1-constant"]["psnr_std"] > 0
    log = (out / "settings" / "ifqa-w1-constant-s1" / "train.log").read_text()
    assert "--weight 1 --seed 1" in log


def test_shards_merge_into_the_unsharded_table(unsharded, external_config, tmp_path):
    out, _ = unsharded
    raw = external_config()
    shared = tmp_path / "shared"  # array job on a shared disk: one folder
    for i in range(2):
        _api(raw, shared, shard=(i, 2))
    separate = [tmp_path / f"shard{i}" for i in range(2)]  # or one folder per machine, merged by report
    for i, folder in enumerate(separate):
        _api(raw, folder, shard=(i, 2))
    with pytest.raises(SweepConfigError, match="2 of 4 settings are not finished"):
        write_report(separate[0])  # one shard alone is not the table
    assert not (separate[0] / "results.csv").exists()
    proc = _cli("ablate", "report", str(separate[0]), str(separate[1]))
    assert proc.returncode == 0, proc.stderr
    expected = (out / "results.csv").read_text()
    assert (shared / "results.csv").read_text() == expected
    assert (separate[0] / "results.csv").read_text() == expected


def test_a_failing_command_stops_with_its_log_and_is_not_marked_done(external_config, tmp_path):
    raw = external_config()
    raw["external"]["command"] = [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"]
    with pytest.raises(ExternalCommandError, match="exited with 3(.|\n)*out of memory"):
        _api(raw, tmp_path / "run")
    assert not list((tmp_path / "run" / "settings").glob("*/done.json"))

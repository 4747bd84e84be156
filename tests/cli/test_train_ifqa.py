import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from ifqa_loss import load_metric
from ifqa_loss.cli import EXIT_FAILED, main
from ifqa_loss.imageio import read_image

from reference import FIXTURES

TINY = ["--size", "64", "--d-widths", "4,8,8,16,16", "--d-bottleneck", "1", "--g-width", "4", "--g-depth", "2"]


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    for name in ("face256.png", "face512.png"):
        save_image(F.interpolate(read_image(FIXTURES / name)[None], size=64, mode="area"), root / name)
    return root


def test_train_ifqa_command_writes_a_loadable_run(faces, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny nets: one thread is fastest on a shared CPU
    cmd = [sys.executable, "-m", "ifqa_loss", "train-ifqa", "--data", str(faces), "--out", str(out), *TINY,
           "--steps", "2", "--batch-size", "2", "--snapshot-every", "1", "--log-every", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["step"] == 2
    assert (out / "log.csv").read_text().count("\n") == 3
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step_0000001.png", "step_0000002.png"]
    assert any((out / "tensorboard").iterdir())
    metric = load_metric("ifqa", checkpoint=out / "last.pth")
    assert metric.input_size == 64 and metric.quality_map(torch.rand(1, 3, 80, 80)).shape == (1, 1, 64, 64)


def test_bad_options_are_refused_with_the_field_named(faces, tmp_path, capsys):
    code = main(["train-ifqa", "--data", str(faces), "--out", str(tmp_path / "run"), *TINY,
                 "--degradations", '{"jpeg_quality": [10, 20]}'])
    assert code == EXIT_FAILED and "error: --degradations: unknown fields ['jpeg_quality']" in capsys.readouterr().err
    code = main(["train-ifqa", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), *TINY])
    assert code == EXIT_FAILED and "does not exist" in capsys.readouterr().err

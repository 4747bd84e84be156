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

from reference import SAMPLES

TINY = ["--size", "64", "--d-widths", "4,8,8,16,16", "--d-bottleneck", "1", "--g-width", "4", "--g-depth", "2"]


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    for name in ("face256.png", "face512.png"):
        save_image(F.interpolate(read_image(SAMPLES / name)[None], size=64, mode="area"), root / name)
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


# ----------------------------------------------------------------------------------- a run is never lost
def _args(data, out, *extra):
    """The train-ifqa arguments these tests use: for ``main`` in this process, or a real one via ``_cmd``."""
    return ["train-ifqa", "--data", str(data), "--out", str(out), *TINY, "--batch-size", "2", "--no-tensorboard",
            "--quiet", "--val-fraction", "0", *extra]


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "ifqa_loss", *_args(data, out, *extra)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _logged_steps(path) -> list[int]:
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def _wait_for_step(proc, path, step: int, timeout: float = 300.0) -> None:
    """Wait until the trainer has logged ``step`` (rows left by an earlier, killed run do not count: a resumed
    trainer truncates them first, so only its own new rows get past ``step``)."""
    import time

    start = time.time()
    while time.time() - start < timeout:
        if path.is_file() and max(_logged_steps(path), default=0) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer ended early: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"waited {timeout} s for step {step} in {path}")


def test_a_run_folder_is_never_overwritten(faces, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(faces, out, "--steps", "2")) == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = main(["train-ifqa", "--data", str(faces), "--out", str(out), *TINY, "--steps", "4"])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED and "holds a run at step 2" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    code = main(["train-ifqa", "--data", str(faces), "--out", str(out), *TINY, "--g-width", "8", "--resume"])
    assert code == EXIT_FAILED and "g_width=4" in capsys.readouterr().err
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    code = main(["train-ifqa", "--data", str(faces), "--out", str(a_file), *TINY])
    assert code == EXIT_FAILED and "is a file" in capsys.readouterr().err and a_file.read_text() == "keep me"


def test_kill_sigterm_lock_and_resume_keep_one_row_per_step(faces, tmp_path, capsys):
    """SIGKILL after a checkpoint leaves log rows past it: --resume drops them. SIGTERM writes a checkpoint and
    exits 130; a second trainer on the same folder is refused while the first runs; a changed learning rate on
    resume is applied and recorded."""
    import signal

    out, log = tmp_path / "run", tmp_path / "run" / "log.csv"
    steps = ["--steps", "1000000", "--log-every", "1"]  # never finishes by itself: the signals end it
    proc = subprocess.Popen(_cmd(faces, out, *steps, "--checkpoint-every", "3"), env=_env(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_step(proc, log, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    held = torch.load(out / "last.pth", weights_only=True)["step"]
    killed_at = max(_logged_steps(log))
    assert held % 3 == 0 and killed_at >= held

    proc = subprocess.Popen(_cmd(faces, out, *steps, "--resume"), env=_env(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_step(proc, log, killed_at + 2)  # past the killed run's rows: this trainer holds the folder
    second = main(_args(faces, out, *steps, "--resume"))  # in this process: the lock is held by another one
    err = capsys.readouterr().err
    assert second == EXIT_FAILED and f"(pid {proc.pid}" in err, err
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert "continue with --resume" in proc.stderr.read()
    stopped = torch.load(out / "last.pth", weights_only=True)["step"]
    assert _logged_steps(log) == list(range(1, stopped + 1))

    end = str(stopped + 2)
    code = main(_args(faces, out, "--steps", end, "--log-every", "1", "--resume", "--lr-d", "5e-4", "--schedule",
                      "constant", "--warmup", "0"))
    assert code == 0, capsys.readouterr().err
    assert _logged_steps(log) == list(range(1, stopped + 3))
    assert [float(r.split(",")[7]) for r in log.read_text().splitlines()[-2:]] == [5e-4, 5e-4]  # lr_d column
    history = json.loads((out / "config.json").read_text())["history"]
    assert history[-1]["step"] == stopped and history[-1]["changed"]["lr_d"] == [1e-3, 5e-4]

"""Scores reach stdout as they are computed: a run stopped with Ctrl-C keeps them, in a valid document."""
import json
import os
import signal
import subprocess
import sys

from PIL import Image

from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.weights import save_checkpoint

from helpers import default_sigint


def test_interrupted_run_keeps_every_score_written_so_far_as_valid_json(tmp_path):
    ckpt = save_checkpoint(tmp_path / "t.pth", IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), "ifqa")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(400):  # far more than are scored before the interrupt arrives
        Image.new("RGB", (32, 32), (i % 256, 120, 90)).save(folder / f"{i:03d}.png")
    process = subprocess.Popen(
        [sys.executable, "-m", "ifqa_loss", "score", str(folder), "--checkpoint", str(ckpt), "--format", "json",
         "--batch-size", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=default_sigint,
    )
    lines = [process.stdout.readline(), process.stdout.readline()]  # "[" and the first score: streamed
    process.send_signal(signal.SIGINT)
    rest, err = process.stdout.read(), process.stderr.read()  # read() keeps what readline() buffered
    process.wait(timeout=300)
    results = json.loads("".join(lines) + rest)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert 1 <= len(results) < 400 and results[0]["path"].endswith("000.png")

"""What ``score`` writes stays one row per image and a valid document: hostile file names, interruptions (real
signals), a reader that goes away, a batch that runs out of memory, and the messages around them."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from ifqa_loss import batch_memory
from ifqa_loss.cli import main

from helpers import default_sigint
from robustness.case import Case, Refused, Works, params

# Characters a terminal or a parser would act on: ESC, CR, LF, tab, DEL, C1 NEL, Unicode separators, bidi override.
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def face(folder: Path, name: str, size=(40, 40)) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    Image.new("RGB", size, (180, 140, 120)).save(path, format="PNG")
    return path


def named(name: str, fmt: str):
    """A folder with a normal face and one named ``name``; score it as ``fmt``."""
    def make(folder: Path):
        face(folder, name)
        return ["--format", fmt]
    return make


def unreadable_named(name: str):
    def make(folder: Path):
        (folder / name).write_bytes(b"not an image")
        return ["--format", "csv"]
    return make


def batch_fails(error: type, fmt: str = "json"):
    """Three images in batches of one; the metric fails on the second batch with ``error``."""
    def make(folder: Path):
        for name in ("b.png", "c.png"):
            face(folder, name)
        from ifqa_loss.metric import QualityMetric

        original = QualityMetric.quality_map
        calls = []

        def failing(self, x, **options):
            calls.append(1)
            if len(calls) == 2:
                raise error("out of memory while scoring" if error is not MemoryError else "")
            return original(self, x, **options)
        _PATCHES.append((QualityMetric, "quality_map", original))
        QualityMetric.quality_map = failing
        return ["--format", fmt, "--batch-size", "1"]
    return make


def memory_reported_as(available: int):
    def make(folder: Path):
        face(folder, "b.png")
        original = batch_memory.available_bytes
        _PATCHES.append((batch_memory, "available_bytes", original))
        batch_memory.available_bytes = lambda device: available
        return ["--format", "csv", "--batch-size", "64"]
    return make


_PATCHES: list = []

CASES = [
    # --- file names that would fake rows or drive the terminal: escaped, one row per image ---------------------
    *(Case(f"name-with-{label}-{fmt}", named(name, fmt), Works(f"{label} escaped in {fmt}"))
      for label, name in (("escape-sequence", "red\x1b[31mX.png"), ("newline", "two\nlines.png"),
                          ("carriage-return", "fake\r0.9999.png"), ("tab", "a\tb.png"), ("bell", "ding\x07.png"),
                          ("line-separator", "a\u2028b.png"), ("bidi-override", "gnp.\u202eevil.png"),
                          ("c1-control", "next\u0085line.png"), ("delete", "del\x7f.png"))
      for fmt in ("table", "csv", "json")),
    Case("skip-message-name-with-escape", unreadable_named("x\x1b]0;owned\x07.png"),
         Refused("x\\\\x1b\\]0;owned\\\\x07.png: not a readable image", "")),
    Case("skip-message-name-with-newline", unreadable_named("x\nskipped: fake.png"),
         Refused("x\\\\nskipped: fake.png: not a readable image", "")),
    # --- a batch that fails: reported like any other, the rest scored -----------------------------------------
    Case("memory-error-in-one-batch", batch_fails(MemoryError), Refused("scoring its batch failed \\(MemoryError\\)",
                                                                        "smaller --batch-size")),
    Case("runtime-oom-in-one-batch-csv", batch_fails(RuntimeError, "csv"),
         Refused("batch failed \\(out of memory while scoring\\)", "smaller --batch-size")),
    Case("batch-estimated-too-large", memory_reported_as(8 << 20),
         Refused("a batch of 2 images needs about .* GiB.*only 0.0 GiB", "try a batch of at most 1")),
]


@params(CASES)
def test_score_output(case: Case, tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    face(folder, "a.png")
    try:
        options = case.make(folder)
        code = main(["score", str(folder), "--checkpoint", str(tiny_checkpoint), "--quiet", *options])
    finally:
        while _PATCHES:
            owner, name, original = _PATCHES.pop()
            setattr(owner, name, original)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert not RAW_CONTROLS.search(out), repr(out)
    assert not RAW_CONTROLS.search(err.replace("\n", "")), repr(err)
    images = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    fmt = options[options.index("--format") + 1]
    rows = parse(out, fmt)
    if isinstance(case.expect, Refused):
        assert code in (1, 2), err
        skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
        assert skipped, err
        case.expect.check(" ".join(skipped))
    else:
        assert code == 0, err
        assert len(rows) == len(images), f"one row per image: {rows}"
        shown = {row[0] for row in rows}
        assert any("\\" in name for name in shown), shown  # the hostile name, escaped


def parse(out: str, fmt: str) -> list[list[str]]:
    if fmt == "json":
        return [[r["path"], r["score"]] for r in json.loads(out)]
    if fmt == "csv":
        return list(csv.reader(io.StringIO(out)))[1:]
    lines = out.splitlines()[1:]
    return [line.rsplit(None, 1) for line in lines if not line.startswith("mean (")]


def test_random_weights_warn_in_one_line_without_source(tmp_path, capsys):
    face(tmp_path, "a.png")
    assert main(["score", str(tmp_path), "--random-weights", "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "RANDOM" in line.upper() and "meaningless" in line.lower()]
    assert len(lines) == 1, err
    assert "warnings.warn" not in err and ".py:" not in err, err


def test_no_checkpoint_message_suggests_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "empty"))
    face(tmp_path, "a.png")
    assert main(["score", str(tmp_path / "a.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint /path/to/IFQA_Metric.pth" in err and "ifqa-loss weights import" in err


def test_skip_messages_never_share_the_progress_bar_line(tmp_path, tiny_checkpoint, capsys):
    for i in range(3):
        face(tmp_path, f"{i}.png")
        (tmp_path / f"{i}-bad.png").write_bytes(b"junk")
    assert main(["score", str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--batch-size", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped:") == 3
    for match in re.finditer("skipped:", err):
        assert match.start() == 0 or err[match.start() - 1] in "\r\n", repr(err[max(0, match.start() - 80):])


# --- real processes: signals and a closed pipe ------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_faces(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for i in range(400):
        Image.new("RGB", (64, 64), (i % 256, 120, 90)).save(folder / f"{i:03d}.png")
    return folder


def _command(folder: Path, ckpt: Path, fmt: str) -> list[str]:
    return [sys.executable, "-m", "ifqa_loss", "score", str(folder), "--checkpoint", str(ckpt), "--format", fmt,
            "--batch-size", "1", "--quiet", "--device", "cpu"]


@pytest.mark.parametrize("sig,fmt", [(signal.SIGTERM, "json"), (signal.SIGINT, "csv")],
                         ids=["sigterm-json", "sigint-csv"])
def test_signal_mid_run_leaves_a_valid_document(sig, fmt, many_faces, tiny_checkpoint, tmp_path):
    out_path = tmp_path / f"scores.{fmt}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out_path, "w") as out:
        child = subprocess.Popen(_command(many_faces, tiny_checkpoint, fmt), stdout=out, stderr=subprocess.PIPE,
                                 text=True, env=env, preexec_fn=default_sigint)
        deadline = time.monotonic() + 300
        while out_path.stat().st_size < 200 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)  # rows are flushed one by one: wait until some are written
        child.send_signal(sig)
        _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    text = out_path.read_text()
    rows = json.loads(text) if fmt == "json" else list(csv.DictReader(io.StringIO(text)))
    assert 0 < len(rows) < 400, len(rows)
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    assert text.endswith("\n")


def test_closed_stdout_pipe_exits_quietly(many_faces, tiny_checkpoint, fmt="csv"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shell = " ".join(f"'{a}'" for a in _command(many_faces, tiny_checkpoint, fmt)) + " | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.count("\n") == 1
    assert done.stderr == "", done.stderr
    assert done.returncode == 0

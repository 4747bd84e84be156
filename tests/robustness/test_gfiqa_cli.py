"""``train-gfiqa`` validates before it trains: a run folder is never overwritten or mixed, a resume must fit the run,
JSON options name their valid fields, numbers are in range, and every image and text file of the data is checked
(nothing in ``--out`` changes when a case is refused)."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss.cli import main

from helpers import TINY_GFIQA
from robustness.case import Case, Refused, Works, params
from robustness.test_images import png_declaring

KWARGS = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY_GFIQA.items()})
LOSS = '{"perceptual": 0, "l2": 0.1}'


def _dataset(root: Path, n: int = 16) -> tuple[Path, Path]:
    rs = np.random.RandomState(0)
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n):
        array = (rs.uniform(0, 1, (32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(images / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{rs.uniform(0, 1):.3f}")
    meta = root / "meta.csv"
    meta.write_text("img_name,mos\n" + "\n".join(rows) + "\n")
    return images, meta


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny dataset and one finished 1-epoch run of the tiny GFIQA (resume cases copy it)."""
    root = tmp_path_factory.mktemp("gfiqa-data")
    images, meta = _dataset(root)
    run = root / "run"
    code = main(["train-gfiqa", *_base(images, meta, run)])
    assert code == 0
    return images, meta, run


def _base(images: Path, meta: Path, out: Path, kwargs: str = KWARGS) -> list[str]:
    return ["--images", str(images), "--meta", str(meta), "--out", str(out), "--model-kwargs", kwargs,
            "--loss-weights", LOSS, "--epochs", "1", "--batch-size", "8", "--workers", "0", "--device", "cpu",
            "--allow-random-prior", "--quiet"]


def command(*extra: str, kwargs: str = KWARGS, setup=None, out: str = "out", meta=None, images=None):
    """``train-gfiqa`` on the tiny data with ``extra`` options; ``setup(tmp, images, meta, run)`` prepares files and
    may return replacement (images, meta)."""
    def make(tmp: Path, data) -> list[str]:
        good_images, good_meta, run = data
        chosen = (good_images, good_meta)
        if setup is not None:
            chosen = setup(tmp, good_images, good_meta, run) or chosen
        argv = _base(*chosen, tmp / out, kwargs)
        if meta is not None:
            argv[argv.index("--meta") + 1] = str(meta(tmp))
        return [*argv, *extra]
    return make


def _copy_run(tmp, images, meta, run):
    shutil.copytree(run, tmp / "out")


def _file_out(tmp, images, meta, run):
    (tmp / "out").write_text("my notes\n")


def _partial_run(*names):
    def setup(tmp, images, meta, run):
        (tmp / "out").mkdir()
        for name in names:
            shutil.copy(run / name, tmp / "out" / name)
    return setup


def _last_without_optimiser(tmp, images, meta, run):
    _copy_run(tmp, images, meta, run)
    state = torch.load(tmp / "out" / "last.pth", weights_only=True)
    for key in ("optimizer", "scheduler"):
        state.pop(key)
    torch.save(state, tmp / "out" / "last.pth")


def _best_as_last(tmp, images, meta, run):
    _copy_run(tmp, images, meta, run)
    shutil.copy(run / "best.pth", tmp / "out" / "last.pth")


def _with_image(name: str, content: bytes | None = None, fifo: bool = False, size=None):
    """The data folder copied, plus one extra image named in the meta file."""
    def setup(tmp, images, meta, run):
        folder = tmp / "images"
        shutil.copytree(images, folder)
        if fifo:
            os.mkfifo(folder / name)
        elif size is not None:
            Image.new("RGB", size).save(folder / name)
        else:
            (folder / name).write_bytes(content)
        extra = tmp / "meta.csv"
        extra.write_text(meta.read_text() + f"{name},0.5\n")
        return folder, extra
    return setup


def _meta_bytes(content: bytes):
    def make(tmp: Path) -> Path:
        (tmp / "m.csv").write_bytes(content)
        return tmp / "m.csv"
    return make


def _meta_fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "m.csv")
    return tmp / "m.csv"


def _stopped_between_row_and_checkpoint(tmp, images, meta, run):
    """The run's log holds a row for epoch 1 whose checkpoint was never saved (stopped in between)."""
    _copy_run(tmp, images, meta, run)
    with open(tmp / "out" / "log.csv", "a", newline="") as fh:
        csv.writer(fh).writerow([1, 5e-5, 0.5, 0.1, 0.1, 0.3, 0.1])


OTHER_KWARGS = json.dumps({**json.loads(KWARGS), "num_quality_blocks": 2})
RESNET_KWARGS = '{"image_size": 32, "encoder_width": 0.125, "mlp_hidden": [16, 8]}'

CASES = [
    # --- the run folder ------------------------------------------------------------------------------------
    Case("out-is-a-file", command(setup=_file_out), Refused("--out .* is a file, not a folder", "left as it is")),
    Case("out-holds-a-run", command(setup=_copy_run),
         Refused("already holds a train-gfiqa run \\(last.pth, best.pth, log.csv \\(1 epoch\\), result.json, "
                 "split.csv\\)", "--resume")),
    Case("out-holds-only-a-log", command(setup=_partial_run("log.csv")), Refused("holds a train-gfiqa run \\(log.csv",
                                                                                 "--resume|another --out")),
    Case("out-holds-best-only-resume", command("--resume", setup=_partial_run("best.pth")),
         Refused("holds best.pth but no last.pth", "another --out")),
    Case("out-broken-link", command(setup=lambda t, i, m, r: os.symlink(t / "gone", t / "out")),
         Refused("broken symbolic link", "another --out")),
    Case("resume-without-optimiser-state", command("--resume", setup=_last_without_optimiser),
         Refused("cannot be resumed: it holds no 'optimizer', 'scheduler'", "last.pth train-gfiqa wrote")),
    Case("resume-from-best-checkpoint", command("--resume", setup=_best_as_last),
         Refused("cannot be resumed.*'optimizer'", "new run")),
    Case("resume-other-architecture", command("--resume", setup=_copy_run, kwargs=OTHER_KWARGS),
         Refused("other architecture arguments \\(num_quality_blocks=1\\).*\\(num_quality_blocks=2\\)",
                 "run's --model-kwargs")),
    Case("resume-other-model", command("--resume", "--model", "resnet50", setup=_copy_run, kwargs=RESNET_KWARGS),
         Refused("holds a 'gfiqa' run, not 'gfiqa-resnet50'", "--model")),
    Case("resume-log-holds-each-epoch-once", command("--resume", "--epochs", "2",
                                                     setup=_stopped_between_row_and_checkpoint),
         Works("epochs 0 and 1, once each")),
    # --- JSON options ---------------------------------------------------------------------------------------
    Case("model-kwargs-unknown-field", command(kwargs='{"depth": 12}'),
         Refused("unknown field\\(s\\) \\['depth'\\] for 'gfiqa'; valid fields: code_groups, encoder_width",
                 "num_injected")),
    Case("model-kwargs-unknown-resnet-field", command("--model", "resnet50", kwargs='{"num_injected": 4}'),
         Refused("\\['num_injected'\\] for 'gfiqa-resnet50'; valid fields: encoder_width, image_size, mlp_hidden",
                 "")),
    Case("model-kwargs-not-json", command(kwargs="{num_injected: 4}"), Refused("not valid JSON", "JSON object")),
    Case("model-kwargs-a-list", command(kwargs="[4]"), Refused("must be a JSON object", "field")),
    Case("model-kwargs-negative", command(kwargs='{"num_injected": -1}'), Refused("num_injected=-1 is out of range",
                                                                                   "")),
    Case("model-kwargs-nan", command(kwargs='{"encoder_width": NaN}'), Refused("NaN, which is not JSON", "number")),
    Case("model-kwargs-deeply-nested", command(kwargs="[" * 50 + "]" * 50), Refused("nests 50 levels", "")),
    Case("loss-weights-unknown-field", command("--loss-weights", '{"ssim": 1}'),
         Refused("unknown field\\(s\\) \\['ssim'\\]; valid fields: l2, perceptual, identity, latent, quality", "")),
    Case("loss-weights-negative", command("--loss-weights", '{"l2": -1}'), Refused("l2=-1 must be a finite number >= 0",
                                                                                  "")),
    Case("loss-weights-huge-overflow", command("--loss-weights", '{"l2": 1e400}'),
         Refused("l2=inf must be a finite number", "")),
    Case("loss-weights-string", command("--loss-weights", '{"l2": "0.1"}'), Refused("l2='0.1' must be a finite", "")),
    # --- numbers --------------------------------------------------------------------------------------------
    Case("epochs-zero", command("--epochs", "0"), Refused("--epochs must be a whole number in \\[1", "")),
    Case("batch-size-zero", command("--batch-size", "0"), Refused("--batch-size must be a whole number in \\[1", "")),
    Case("lr-nan", command("--lr", "nan"), Refused("--lr must be a finite number in \\(0, 10\\], got nan", "")),
    Case("lr-inf", command("--lr", "inf"), Refused("--lr must be a finite number", "")),
    Case("lr-negative", command("--lr", "-0.1"), Refused("--lr must be a finite number in \\(0, 10\\]", "")),
    Case("lr-step-zero", command("--lr-step", "0"), Refused("--lr-step must be a whole number", "")),
    Case("workers-negative", command("--workers", "-1"), Refused("--workers must be a whole number in \\[0", "")),
    # --- data files -----------------------------------------------------------------------------------------
    Case("meta-latin1", command(meta=_meta_bytes("img_name,mos\ncaf\xe9.png,0.5\n".encode("latin-1"))),
         Refused("meta file .* is not UTF-8 text: byte 0xe9 at offset 16 \\(line 2\\)", "save it as UTF-8")),
    Case("meta-utf16", command(meta=_meta_bytes("img_name,mos\n00.png,0.5\n".encode("utf-16"))),
         Refused("UTF-16", "iconv")),
    Case("meta-fifo", command(meta=_meta_fifo), Refused("named pipe", "regular file")),
    Case("meta-link-to-dev-zero", command(meta=lambda t: (os.symlink("/dev/zero", t / "m.csv"), t / "m.csv")[1]),
         Refused("character device", "regular file")),
    Case("image-decompression-bomb", command(setup=_with_image("bomb.png", png_declaring(30000, 30000))),
         Refused("bomb.png: .* pixels, more than the limit", "remove 'bomb.png' from the meta file")),
    Case("image-fifo", command(setup=_with_image("pipe.png", fifo=True)), Refused("pipe.png.*named pipe", "remove")),
    Case("image-one-pixel", command(setup=_with_image("dot.png", size=(1, 1))),
         Refused("dot.png: 1x1 pixels, below the minimum side", "remove 'dot.png'")),
    Case("image-not-an-image", command(setup=_with_image("text.png", b"hello")),
         Refused("text.png: not a readable image", "remove 'text.png'")),
]


@params(CASES)
def test_train_gfiqa(case: Case, tmp_path, data, capsys):
    argv = case.make(tmp_path, data)
    out = tmp_path / "out"
    before = _snapshot(out)
    try:
        code = main(["train-gfiqa", *argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if isinstance(case.expect, Refused):
        assert code == 2, captured.err
        assert captured.err.startswith("error: "), captured.err
        case.expect.check(captured.err)
        assert _snapshot(out) == before, "a refused command changes nothing in --out"
    else:
        assert code == 0, captured.err
        epochs = [row.split(",")[0] for row in (out / "log.csv").read_text().splitlines()[1:]]
        assert epochs == ["0", "1"], epochs


def _snapshot(out: Path):
    if out.is_file():
        return out.read_bytes()
    if not out.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}

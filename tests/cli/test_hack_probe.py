"""`ifqa-loss hack-probe`: JSON keys and self-judge agreement through a real subprocess; refusals in-process
(the same ``main``; tests/robustness/test_cli.py checks a refusal through a real process)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss.cli import main
from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.weights.load import save_checkpoint


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    return save_checkpoint(path, IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1, input_size=64), "ifqa")


def _folder(path, seed, count=2, size=48):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(40, 220, (size, size, 3), dtype=np.uint8)).save(path / f"img{i}.png")
    return path


@pytest.fixture
def setup(tmp_path):
    return {"a": _checkpoint(tmp_path / "a.pth", 0), "b": _checkpoint(tmp_path / "b.pth", 1),
            "images": _folder(tmp_path / "lq", 0), "gt": _folder(tmp_path / "gt", 1), "tmp": tmp_path}


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ifqa_loss", "hack-probe", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def _strict(text):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_self_judge_agrees_and_keys_are_as_documented(setup):
    out = setup["tmp"] / "report.json"
    proc = _run("--optimise", setup["a"], "--judge", setup["a"], "--judge", setup["b"], "--images", setup["images"],
                "--gt", setup["gt"], "--steps", "8", "--lr", "0.02", "--json", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = _strict(out.read_text())
    opt, (same, other) = report["optimised"], report["judges"]
    assert opt["name"] == str(setup["a"])
    assert [j["name"] for j in report["judges"]] == [str(setup["a"]), str(setup["b"])]
    assert (same["before"], same["after"]) == (opt["before"], opt["after"])
    assert opt["after"] > opt["before"]
    assert other["before"] != opt["before"]
    assert isinstance(report["psnr"], float) and isinstance(report["ssim"], float)
    assert set(report["gt"]) == {"psnr", "ssim"}
    assert "lpips_note" in report and (report["lpips"] is None) == report["lpips_note"].startswith("not measured")
    assert [row["file"] for row in report["images"]] == ["img0", "img1"]


def test_json_to_stdout_with_zero_steps_is_strict(setup):
    proc = _run("--optimise", setup["a"], "--judge", setup["b"], "--images", setup["images"], "--steps", "0",
                "--augment", "eot", "--json", "-", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = _strict(proc.stdout)
    assert report["psnr"] is None  # unchanged images: infinite PSNR has no JSON form
    assert report["optimised"]["before"] == report["optimised"]["after"]


@pytest.mark.parametrize("case, message", [
    ("no_images", "no such folder"),
    ("gt_missing", "--gt has no image"),
    ("bad_json_folder", "its folder does not exist"),
    ("bad_lr", "--lr must be > 0"),
])
def test_bad_input_is_refused_with_the_fix(setup, case, message, capsys):
    args = {"--optimise": setup["a"], "--judge": setup["b"], "--images": setup["images"],
            "--json": setup["tmp"] / "r.json", "--steps": "1", "--device": "cpu"}
    if case == "no_images":
        args["--images"] = setup["tmp"] / "nowhere"
    elif case == "gt_missing":
        args["--gt"] = _folder(setup["tmp"] / "gt1", 2, count=1)
        (args["--gt"] / "img0.png").rename(args["--gt"] / "other.png")
    elif case == "bad_json_folder":
        args["--json"] = setup["tmp"] / "missing" / "r.json"
    elif case == "bad_lr":
        args["--lr"] = "0"
    try:
        code = main(["hack-probe", *[str(v) for kv in args.items() for v in kv]])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert not (setup["tmp"] / "r.json").exists()

"""Tiny sweeps for the ablation tests: 32 px faces, a 4-channel U-Net, random-weight IFQA (labelled)."""
from __future__ import annotations

import sys
import textwrap

import pytest

TINY_IFQA = {"random_weights": True, "widths": [4, 8, 8, 16, 16], "num_bottleneck": 1}


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    from ifqa_loss.ablation.sample_faces import make_sample_faces

    folder = tmp_path_factory.mktemp("faces")
    make_sample_faces(folder, count=6, size=32)
    return folder


@pytest.fixture(scope="session")
def builtin_config(faces):
    """Factory: the 2-setting x 1-seed built-in sweep (dict), with top-level ``overrides``."""
    return lambda **overrides: {**_builtin(faces), **overrides}


def _builtin(faces) -> dict:
    return {
        "name": "tiny",
        "seeds": [0],
        "base": {"l1": {"type": "L1Loss", "weight": 1.0}},
        "sweep": [{"metric": "ifqa", "weights": [0, 0.5]}],
        "metrics": {"ifqa": dict(TINY_IFQA)},
        "lpips": {"net": "squeeze", "random_backbone": True},  # squeeze: builds in 0.1 s (alex: 3 s)
        "data": {"hq": str(faces), "size": 32, "val_count": 2,
                 "degradation": {"blur_sigma": [0.5, 2.0], "downsample_range": [1, 2], "jpeg_range": [70, 90]}},
        "model": {"kwargs": {"width": 4, "depth": 2}},
        "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "device": "cpu"},
        "evaluation": {"samples": 2, "bootstrap": 200, "plots": False},  # tables only: matplotlib is slow
    }


# The "user's training command" of the external tests: a real script, run as a subprocess. It
# "restores" each ground-truth face by blending it towards grey, then adds noise. The baseline blends
# by 0.3 plus a per-seed amount (training randomness); a positive weight changes the blend by
# 0.2 * weight / (1 + weight) towards the truth (a known gain) -- or, with --flip, towards the truth
# for even seeds and away from it for odd seeds (a known sign flip: seed 0 better on every image,
# seed 1 worse on every image). --size writes restorations of another size.
RESTORE_SCRIPT = textwrap.dedent("""
    import argparse, pathlib
    import numpy as np
    from PIL import Image
    p = argparse.ArgumentParser()
    for name in ("--gt", "--out"):
        p.add_argument(name)
    p.add_argument("--weight", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--size", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    out = pathlib.Path(a.out) / "restored"
    out.mkdir(parents=True, exist_ok=True)
    gain = 0.2 * a.weight / (1 + a.weight) * (-1 if a.flip and a.seed % 2 else 1)
    blend = 0.3 + rng.uniform(0, 0.1) - gain
    for path in sorted(pathlib.Path(a.gt).glob("*.png")):
        x = np.asarray(Image.open(path), dtype=np.float64) / 255
        y = (1 - blend) * x + blend * 0.5 + rng.normal(0, 0.01, x.shape)
        image = Image.fromarray((np.clip(y, 0, 1) * 255).round().astype(np.uint8))
        if a.size:
            image = image.resize((a.size, a.size))
        image.save(out / path.name)
""")


@pytest.fixture(scope="session")
def restore_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "restore.py"
    path.write_text(RESTORE_SCRIPT)
    return path


@pytest.fixture(scope="session")
def external_config(faces, restore_script):
    """Factory: the external sweep (2 weights x 3 seeds) running RESTORE_SCRIPT, with top-level ``overrides``;
    ``extra_args`` are appended to the command (``--flip``, ``--size 24``)."""
    return lambda extra_args=(), **overrides: {**_external(faces, restore_script, list(extra_args)), **overrides}


def _external(faces, script, extra_args) -> dict:
    return {
        "name": "external",
        "mode": "external",
        "seeds": [0, 1, 2],
        "sweep": [{"metric": "ifqa", "weights": [0, 1.0]}],
        "metrics": {"ifqa": dict(TINY_IFQA)},
        "lpips": {"net": "squeeze", "random_backbone": True},  # squeeze: builds in 0.1 s (alex: 3 s)
        "external": {"command": [sys.executable, str(script), "--gt", str(faces), "--out", "{out}",
                                 "--weight", "{weight}", "--seed", "{seed}", *extra_args],
                     "gt": str(faces), "restored": "{out}/restored/{stem}.png"},
        "evaluation": {"samples": 2, "bootstrap": 200, "plots": False},  # tables only: matplotlib is slow
    }

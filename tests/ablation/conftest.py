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
        "evaluation": {"samples": 2},
    }


# The "user's training command" of the external tests: a real script, run as a subprocess. It
# "restores" each ground-truth face by blending it towards grey by an amount that shrinks with the
# weight and varies per seed, and writes PNGs where the sweep file says.
RESTORE_SCRIPT = textwrap.dedent("""
    import argparse, pathlib
    import numpy as np
    from PIL import Image
    p = argparse.ArgumentParser()
    for name in ("--gt", "--out"):
        p.add_argument(name)
    p.add_argument("--weight", type=float)
    p.add_argument("--seed", type=int)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    out = pathlib.Path(a.out) / "restored"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(pathlib.Path(a.gt).glob("*.png")):
        x = np.asarray(Image.open(path), dtype=np.float64) / 255
        blend = 0.5 / (1 + 10 * a.weight) + rng.uniform(0, 0.05)
        y = (1 - blend) * x + blend * 0.5 + rng.normal(0, 0.02, x.shape)
        Image.fromarray((np.clip(y, 0, 1) * 255).round().astype(np.uint8)).save(out / path.name)
""")


@pytest.fixture(scope="session")
def restore_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "restore.py"
    path.write_text(RESTORE_SCRIPT)
    return path


@pytest.fixture(scope="session")
def external_config(faces, restore_script):
    """Factory: the external sweep (2 weights x 2 seeds) running RESTORE_SCRIPT, with top-level ``overrides``."""
    return lambda **overrides: {**_external(faces, restore_script), **overrides}


def _external(faces, script) -> dict:
    return {
        "name": "external",
        "mode": "external",
        "seeds": [0, 1],
        "sweep": [{"metric": "ifqa", "weights": [0, 1.0]}],
        "metrics": {"ifqa": dict(TINY_IFQA)},
        "lpips": {"net": "squeeze", "random_backbone": True},  # squeeze: builds in 0.1 s (alex: 3 s)
        "external": {"command": [sys.executable, str(script), "--gt", str(faces), "--out", "{out}",
                                 "--weight", "{weight}", "--seed", "{seed}"],
                     "gt": str(faces), "restored": "{out}/restored/{stem}.png"},
        "evaluation": {"samples": 2},
    }

"""The reference parameter-fill rule and the reference inputs.

The fill rule and the pattern input are specified in tests/fixtures/REFERENCE.md
(copied from the project's reference material); the expected outputs in
tests/fixtures/ were produced by the official implementations with these values.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
# The reference faces (face256.png, face512.png) ship with the package as its sample images; stored once.
SAMPLES = Path(__file__).resolve().parent.parent / "ifqa_loss" / "samples"


def reference_state_dict(keys_file: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights: one RandomState walked over the tensors in file order."""
    spec = json.loads((FIXTURES / keys_file).read_text())
    rs = np.random.RandomState(seed)
    state = {}
    for name, shape in spec["tensors"]:
        shape = tuple(shape)
        z = rs.standard_normal(int(np.prod(shape))).astype(np.float32).reshape(shape)
        parts = name.split(".")
        if len(shape) >= 2:
            value = z * np.float32(np.sqrt(1.0 / np.prod(shape[1:])))
        elif parts[-1] == "weight" and len(parts) >= 2 and "norm" in parts[-2]:
            value = np.float32(1) + np.float32(0.1) * z
        else:
            value = np.float32(0.1) * z
        state[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


def pattern_input(n: int) -> torch.Tensor:
    """The reference (1,3,n,n) pattern, already in [-1,1]."""
    yy, xx = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    x = np.stack([0.5 + 0.4 * np.sin(9 * xx + 3 * yy), 0.5 + 0.4 * np.cos(7 * yy - 2 * xx), xx * yy])[None]
    return torch.from_numpy(x * 2 - 1).float()


def read_rgb(name: str) -> torch.Tensor:
    """A reference face (a package sample) as (1,3,H,W) float in [0,1]."""
    arr = np.asarray(Image.open(SAMPLES / name).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()

"""Validation of a metric as it trains: does it rank clean images above degraded and restored ones?

Held-out images (``--val DIR``, or a seeded split of ``--data`` by file in which near-duplicates stay
on one side) are scored with fixed degradations drawn once, so numbers are comparable across steps:

* ``acc_degraded``: share of images scored above their own degraded copy (the training degradations);
* ``acc_restored``: share scored above their restoration by a *frozen* snapshot of the restorer
  (taken at the first validation and kept in the checkpoint), so the target does not move;
* ``ladder_srcc``: Spearman correlation of the score with a ladder of Gaussian blur strengths
  (:data:`BLUR_LADDER`), per image, averaged (1 = the score falls with every step of blur);
* ``mean_*``: mean score per group.

``criterion`` (the best-checkpoint rule) = mean of ``acc_degraded``, ``acc_restored`` and
``(ladder_srcc + 1) / 2``: each in [0, 1], 0.5 = chance.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..imageio import list_images
from .degradations import DegradationConfig, degrade
from .face_data import mix_seed

# Gaussian blur sigmas in pixels at a 64-pixel side (scaled with the side): 0 = the clean image.
BLUR_LADDER = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
VAL_COLUMNS = ("step", "criterion", "acc_degraded", "acc_restored", "ladder_srcc", "mean_clean", "mean_degraded",
               "mean_restored") + tuple(f"mean_blur_{s:g}" for s in BLUR_LADDER[1:])
MIN_SPLIT_IMAGES = 10
MAX_HASHED_IMAGES = 5000
MAX_SPLIT_VAL_IMAGES = 100
NEAR_DUPLICATE_BITS = 6


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N,3,H,W) -> (N,3,H,W) separable Gaussian blur with reflect padding; ``sigma=0`` returns the input.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> torch.equal(gaussian_blur(x, 0), x), gaussian_blur(x, 1.0).std() < x.std()
        (True, tensor(True))
    """
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ranking_accuracy(better: torch.Tensor, worse: torch.Tensor) -> float:
    """Share of pairs where ``better`` (N,) scores above ``worse`` (N,); ties count half.

    Example:
        >>> ranking_accuracy(torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.1, 0.5, 0.4]))
        0.5
    """
    return float(((better > worse).float() + 0.5 * (better == worse).float()).mean())


def ladder_srcc(scores: torch.Tensor, strengths: tuple[float, ...] = BLUR_LADDER) -> float:
    """Mean over images of Spearman's rho between the score and ``-strength``: (N,L) scores of N images
    at L strengths -> 1.0 when every image's score falls with every step. Images whose scores are all
    equal count as 0 (no ranking).

    Example:
        >>> ladder_srcc(torch.tensor([[0.9, 0.8, 0.5], [0.7, 0.6, 0.1]]), (0, 1, 2))
        1.0
        >>> ladder_srcc(torch.tensor([[0.1, 0.8, 0.9]]), (0, 1, 2))
        -1.0
    """
    from scipy.stats import spearmanr

    rhos = []
    for row in scores.double().cpu().numpy():
        rho = spearmanr(row, -np.asarray(strengths, dtype=np.float64)).statistic if np.ptp(row) > 0 else 0.0
        rhos.append(float(rho))
    return float(np.mean(rhos))


def _average_hash_bits(path: Path) -> np.ndarray:
    """(64,) bool: the 8x8 grey thumbnail above its mean (a perceptual "average hash")."""
    from PIL import Image

    with Image.open(path) as im:
        grey = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float64)
    return (grey > grey.mean()).ravel()


def near_duplicate_groups(paths: list[Path], max_distance: int = NEAR_DUPLICATE_BITS) -> list[int]:
    """A group id per file: files whose average hashes differ in at most ``max_distance`` of 64 bits
    (re-encoded, resized or lightly edited copies) share a group, transitively."""
    bits = np.stack([_average_hash_bits(p) for p in paths]).astype(np.int32)
    distance = bits @ (1 - bits).T + (1 - bits) @ bits.T
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(distance <= max_distance, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    return [root(i) for i in range(len(paths))]


def split_files(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded train / validation split of image files; near-duplicates (average hashes within 6 of 64
    bits: re-encoded, resized or lightly edited copies) always land on the same side. Returns
    ``(train, val)``: ``fraction`` of the files, at most 100, are held out; ``val`` is empty when
    ``fraction`` is 0 or fewer than 10 files are given. Above
    5000 files the hashing is skipped (pass ``--val DIR`` for a curated split of a large set).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for i in range(12):
        ...     pixels = np.random.default_rng(i).integers(0, 255, (16, 16, 3), np.uint8)
        ...     Image.fromarray(pixels).save(root / f"{i}.png")
        >>> train, val = split_files(sorted(root.glob("*.png")), 0.25, seed=0)
        >>> len(train), len(val), set(train).isdisjoint(val)
        (9, 3, True)
    """
    if fraction <= 0 or len(paths) < MIN_SPLIT_IMAGES:
        return list(paths), []
    keys = near_duplicate_groups(paths) if len(paths) <= MAX_HASHED_IMAGES else list(range(len(paths)))
    groups: dict[int, list[Path]] = {}
    for key, path in zip(keys, paths, strict=True):
        groups.setdefault(key, []).append(path)
    order = sorted(groups)
    g = torch.Generator().manual_seed(mix_seed(seed, 0x5A11D))
    order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    want = min(MAX_SPLIT_VAL_IMAGES, max(1, round(fraction * len(paths))))
    val: list[Path] = []
    for key in order:
        if len(val) >= want:
            break
        val.extend(groups[key])
    chosen = set(val)
    return [p for p in paths if p not in chosen], sorted(val)


def list_val_images(folder: str | Path) -> list[Path]:
    """The images of a ``--val`` folder (recursive); ValueError when it holds none."""
    paths, _ = list_images([Path(folder)])
    if not paths:
        raise ValueError(f"--val {folder}: no images found; pass a folder of held-out HQ faces")
    return paths


class Validator:
    """Fixed held-out images and their fixed degraded copies, scored by a metric network on demand.

    Args:
        images: (N,3,S,S) clean images in [0,1].
        degradations: the training degradations (drawn once, seeded).
        seed: seeds those draws.

    Example:
        >>> v = Validator(torch.rand(4, 3, 32, 32), DegradationConfig(), seed=0)
        >>> sharpness = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))  # a known-good "metric"
        >>> r = v.evaluate(sharpness, restorer=lambda lq: lq)
        >>> r["acc_degraded"], r["ladder_srcc"]
        (1.0, 1.0)
    """

    def __init__(self, images: torch.Tensor, degradations: DegradationConfig, *, seed: int):
        self.clean = images
        self.lq = degrade(images, degradations, generator=torch.Generator().manual_seed(mix_seed(seed, 0x7A1)))
        scale = images.shape[-1] / 64
        self.ladder = [gaussian_blur(images, s * scale) for s in BLUR_LADDER]

    def __len__(self) -> int:
        return self.clean.shape[0]

    @torch.no_grad()
    def evaluate(self, score: Callable[[torch.Tensor], torch.Tensor],
                 restorer: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Validation numbers for ``score`` ((N,3,S,S) in [0,1] -> (N,)); ``restorer`` maps degraded to restored."""
        clean, lq = score(self.clean), score(self.lq)
        restored = score(restorer(self.lq).clamp(0, 1))
        ladder = torch.stack([clean] + [score(x) for x in self.ladder[1:]], 1)
        out = {"acc_degraded": ranking_accuracy(clean, lq), "acc_restored": ranking_accuracy(clean, restored),
               "ladder_srcc": ladder_srcc(ladder), "mean_clean": float(clean.mean()),
               "mean_degraded": float(lq.mean()), "mean_restored": float(restored.mean())}
        for j, s in enumerate(BLUR_LADDER[1:], start=1):
            out[f"mean_blur_{s:g}"] = float(ladder[:, j].mean())
        out["criterion"] = (out["acc_degraded"] + out["acc_restored"] + (out["ladder_srcc"] + 1) / 2) / 3
        return out

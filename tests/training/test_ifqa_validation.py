"""Validation numbers on cases whose answer is known: a sharpness 'metric' must get them right, its
inverse exactly wrong, a constant one at chance; the split keeps near-duplicates on one side."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss.training.degradations import DegradationConfig
from ifqa_loss.training.ifqa_validation import (
    BLUR_LADDER,
    Validator,
    gaussian_blur,
    ladder_srcc,
    ranking_accuracy,
    split_files,
)


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute vertical + horizontal gradient: falls with every blur, for every textured image."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))


@pytest.fixture(scope="module")
def validator():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 64, 64, generator=g)  # noise: maximal texture, every blur removes some
    return Validator(images, DegradationConfig(), seed=0)


def test_a_sharpness_metric_ranks_everything_right(validator):
    r = validator.evaluate(sharpness, restorer=lambda lq: gaussian_blur(lq, 1.0))
    assert r["acc_degraded"] == 1.0 and r["acc_restored"] == 1.0 and r["ladder_srcc"] == 1.0
    assert r["criterion"] == 1.0
    means = [r["mean_clean"]] + [r[f"mean_blur_{s:g}"] for s in BLUR_LADDER[1:]]
    assert means == sorted(means, reverse=True)


def test_the_inverse_metric_ranks_everything_wrong_and_a_constant_one_is_at_chance(validator):
    r = validator.evaluate(lambda x: -sharpness(x), restorer=lambda lq: gaussian_blur(lq, 1.0))
    assert (r["acc_degraded"], r["acc_restored"], r["ladder_srcc"], r["criterion"]) == (0.0, 0.0, -1.0, 0.0)
    r = validator.evaluate(lambda x: torch.zeros(x.shape[0]), restorer=lambda lq: lq)
    assert (r["acc_degraded"], r["acc_restored"], r["ladder_srcc"], r["criterion"]) == (0.5, 0.5, 0.0, 0.5)


def test_degraded_copies_are_fixed_across_evaluations():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = Validator(images, DegradationConfig(), seed=3), Validator(images, DegradationConfig(), seed=3)
    assert torch.equal(a.lq, b.lq) and not torch.equal(a.lq, Validator(images, DegradationConfig(), seed=4).lq)


def test_ranking_and_ladder_helpers():
    assert ranking_accuracy(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])) == 0.75
    assert ladder_srcc(torch.tensor([[3.0, 2.0, 1.0]]), (0, 1, 2)) == 1.0
    assert ladder_srcc(torch.tensor([[1.0, 3.0, 2.0]]), (0, 1, 2)) == pytest.approx(-0.5)


def _save(array: np.ndarray, path, fmt="PNG", **kw):
    Image.fromarray(array).save(path, fmt, **kw)


def test_split_keeps_near_duplicates_together_and_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        base = rng.integers(0, 256, (8, 8, 3), np.uint8).repeat(8, 0).repeat(8, 1)  # blocky: hash-stable content
        _save(base, tmp_path / f"img{i:02d}.png")
        if i < 5:  # a re-encoded, resized copy of five of them
            buf = io.BytesIO()
            Image.fromarray(base).resize((48, 48), Image.BICUBIC).save(buf, "JPEG", quality=90)
            (tmp_path / f"img{i:02d}_copy.jpg").write_bytes(buf.getvalue())
    paths = sorted(tmp_path.iterdir())
    for seed in range(6):
        train, val = split_files(paths, 0.2, seed)
        assert set(train).isdisjoint(val) and len(train) + len(val) == len(paths) and val
        for i in range(5):
            pair = {tmp_path / f"img{i:02d}.png", tmp_path / f"img{i:02d}_copy.jpg"}
            assert pair <= set(train) or pair <= set(val), f"seed {seed}: near-duplicates {i} were split"
    assert split_files(paths, 0.2, 0) == split_files(paths, 0.2, 0)
    assert split_files(paths, 0.2, 0) != split_files(paths, 0.2, 1)
    assert split_files(paths[:9], 0.2, 0) == (paths[:9], [])  # too few to hold any out

"""Errors and warnings the losses raise inside a training loop name the real cause and the fix."""
import pytest
import torch

from ifqa_loss import IFQALoss
from ifqa_loss.preprocess import UnitRangeInSignedRangeWarning

from helpers import tiny_ifqa_metric


def test_overshoot_under_error_mode_offers_out_of_range_clamp():
    x = torch.rand(1, 3, 32, 32) * 1.073 - 0.032  # a plain loop's first step: about [-0.032, 1.041]
    with pytest.raises(ValueError) as error:
        IFQALoss(metric=tiny_ifqa_metric(), input_range=(0, 1))(x)
    message = str(error.value)
    assert 'out_of_range="clamp"' in message and "overshoot" in message
    assert f"[{x.min().item():.3f}, {x.max().item():.3f}]" in message


def test_clamp_mode_accepts_a_diverging_generator_and_refuses_0_255_data():
    loss_fn = IFQALoss(metric=tiny_ifqa_metric(), out_of_range="clamp")
    diverged = torch.rand(1, 3, 32, 32) * 6.3 - 2.3  # GFP-GAN from scratch, second step: about [-2.3, 4.0]
    torch.testing.assert_close(loss_fn(diverged), loss_fn(diverged.clamp(-1, 1)))
    with pytest.raises(ValueError, match="divide by 255"):
        loss_fn(torch.rand(1, 3, 32, 32) * 255)


def test_unit_range_images_under_the_default_range_warn():
    face_like = torch.rand(1, 3, 32, 32)
    with pytest.warns(UnitRangeInSignedRangeWarning):
        IFQALoss(metric=tiny_ifqa_metric())(face_like)

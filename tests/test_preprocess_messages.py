"""Input-check messages name what was seen and the real cause."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ifqa_loss.preprocess import UnitRangeInSignedRangeWarning, check_image_batch

from reference import SAMPLES


def _face(size=64):
    image = Image.open(SAMPLES / "face256.png").convert("RGB").resize((size, size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255


def test_overshoot_is_named_as_such_with_min_max_and_the_clamp_fix():
    x = torch.rand(1, 3, 32, 32) * 1.073 - 0.032  # a plain loop's first step: [-0.032, 1.041]
    with pytest.raises(ValueError) as error:
        check_image_batch(x, (0.0, 1.0), overshoot_hint='pass out_of_range="clamp"')
    message = str(error.value)
    assert "overshoot" in message and 'out_of_range="clamp"' in message
    assert f"{x.min().item():.3f}" in message and f"{x.max().item():.3f}" in message
    assert "pass the input_range" not in message


def test_signed_batch_under_unit_range_flag_names_the_flag():
    with pytest.raises(ValueError, match=r"pass input_range=\(-1, 1\)"):
        check_image_batch(_face() * 2 - 1, (0.0, 1.0))


def test_pixel_values_in_0_255_are_named():
    with pytest.raises(ValueError, match="divide by 255"):
        check_image_batch(_face() * 255, (-1.0, 1.0))


@pytest.mark.parametrize(("input_range", "conversion"), [((0.0, 1.0), "x.float() / 255"),
                                                         ((-1.0, 1.0), "x.float() / 127.5 - 1")])
def test_uint8_hint_gives_a_conversion_that_lands_in_the_range(input_range, conversion):
    with pytest.raises(TypeError) as error:
        check_image_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), input_range)
    assert str(error.value).endswith(conversion)
    x = torch.tensor([0, 255], dtype=torch.uint8)  # noqa: F841  (read by eval below)
    converted = eval(conversion)  # the hint's own expression reaches both ends of the range
    assert converted.tolist() == list(input_range)


def test_unit_range_batch_under_default_signed_range_warns():
    with pytest.warns(UnitRangeInSignedRangeWarning, match=r"input_range=\(0, 1\)"):
        check_image_batch(_face(), (-1.0, 1.0))


@pytest.mark.parametrize("make", [lambda: _face() * 2 - 1, lambda: torch.tanh(torch.randn(2, 3, 32, 32)),
                                  lambda: torch.zeros(1, 3, 32, 32)])
def test_real_signed_batches_do_not_warn(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitRangeInSignedRangeWarning)
        check_image_batch(make(), (-1.0, 1.0))

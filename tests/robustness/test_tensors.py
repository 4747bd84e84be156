"""Hostile tensors handed to the metric, the losses and the region builders: refused by name, or exact."""
from __future__ import annotations

import pytest
import torch

from ifqa_loss import IFQALoss, regions

from helpers import tiny_ifqa_metric
from robustness.case import Case, Refused, Works, params

GOOD = torch.full((1, 3, 32, 32), 0.5)


def score(x, **options):
    return lambda metric, loss: metric.score(x, **options)


def loss_of(x, **options):
    return lambda metric, loss: loss(x, **options)


def landmarks(points):
    return lambda metric, loss: regions.regions_from_landmarks(points, 32)


def with_nan(t: torch.Tensor, index=(0,)) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[index[0]] = float("nan")
    return t


def _tiny_weights_are_scale_free(metric, loss):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    weights = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    tiny, normal = loss(x, pixel_weights=weights * 1e-30), loss(x, pixel_weights=weights)
    torch.testing.assert_close(tiny, normal, rtol=1e-5, atol=0)
    return tiny


TEMPLATE_5 = regions.FFHQ_TEMPLATE_512[None] / 16  # 5 points at a 32-px side

CASES = [
    Case("image-nan", score(with_nan(GOOD)), Refused("NaN or Inf", "generator output")),
    Case("image-inf", score(GOOD.clone().fill_(float("inf"))), Refused("NaN or Inf", "generator output")),
    Case("image-out-of-range", score(GOOD * 3), Refused("values lie in \\[1.500, 1.500\\]", "input_range")),
    Case("image-tanh-range-as-01", score(GOOD * 2 - 1.6), Refused("outside input_range \\(0.0, 1.0\\)", "\\(-1, 1\\)")),
    Case("image-uint8", score((GOOD * 255).to(torch.uint8)),
         Refused("integer dtype torch.uint8", "x.float\\(\\) / 255")),
    Case("image-bool", score(GOOD > 0), Refused("integer dtype torch.bool|dtype", "float")),
    Case("image-one-channel", score(GOOD[:, :1]), Refused("\\(N,3,H,W\\)", "RGB")),
    Case("image-no-batch-dim", score(GOOD[0]), Refused("\\(N,3,H,W\\)", "x\\[None\\]")),
    Case("image-5d", score(GOOD[None]), Refused("\\(N,3,H,W\\)", "")),
    Case("image-empty-batch", score(GOOD[:0]), Refused("empty batch", "at least one image")),
    Case("image-not-a-tensor", score(GOOD.numpy()), Refused("must be a torch.Tensor", "")),
    Case("image-fp16-works", score(GOOD.half()), Works("cast to the weights' dtype")),
    Case("image-non-contiguous", score(GOOD.expand(2, 3, 32, 32).transpose(2, 3)), Works("any strides")),
    Case("image-channels-last", score(GOOD.contiguous(memory_format=torch.channels_last)), Works("any layout")),
    Case("loss-nan-image", loss_of(with_nan(GOOD)), Refused("NaN or Inf", "generator output")),
    Case("pixel-weights-nan", loss_of(GOOD, pixel_weights=with_nan(torch.ones(1, 1, 8, 8))),
         Refused("finite and >= 0", "")),
    Case("pixel-weights-negative", loss_of(GOOD, pixel_weights=-torch.ones(1, 1, 8, 8)),
         Refused("finite and >= 0", "")),
    Case("pixel-weights-all-zero", loss_of(GOOD, pixel_weights=torch.zeros(1, 1, 8, 8)),
         Refused("all zero", "every image needs some weight")),
    Case("pixel-weights-wrong-batch", loss_of(torch.cat([GOOD, GOOD]), pixel_weights=torch.ones(3, 1, 8, 8)),
         Refused("batch size 3", "pass N or 1 maps")),
    Case("pixel-weights-3d", loss_of(GOOD, pixel_weights=torch.ones(1, 8, 8)), Refused("\\(N,1,h,w\\)", "")),
    Case("pixel-weights-tiny-1e-30", _tiny_weights_are_scale_free, Works("same loss as the weights scaled up")),
    Case("pixel-weights-subnormal-1e-40", loss_of(GOOD, pixel_weights=torch.full((1, 1, 8, 8), 1e-40)),
         Works("still a finite loss")),
    Case("landmarks-nan", landmarks(with_nan(TEMPLATE_5)), Refused("sample\\(s\\) \\[0\\] hold NaN or Inf",
                                                                   "drop those samples")),
    Case("landmarks-inf-second-sample", landmarks(torch.cat([TEMPLATE_5, TEMPLATE_5 * float("inf")])),
         Refused("sample\\(s\\) \\[1\\] hold NaN or Inf", "template_regions")),
    Case("landmarks-wrong-count", landmarks(TEMPLATE_5[:, :4]), Refused("\\(N,5,2\\) or \\(N,68,2\\)", "")),
    Case("landmarks-outside-image", landmarks(TEMPLATE_5 + 1000), Works("a face off the image: all background")),
]


@pytest.fixture(scope="module")
def tiny():
    metric = tiny_ifqa_metric()
    return metric, IFQALoss(metric=metric)


@params(CASES)
def test_tensor_input(case: Case, tiny):
    metric, loss = tiny
    run = case.make
    if isinstance(case.expect, Refused):
        with pytest.raises((ValueError, TypeError)) as info:
            run(metric, loss)
        case.expect.check(str(info.value))
    else:
        out = run(metric, loss)
        values = out.values() if isinstance(out, dict) else [out]
        assert all(bool(torch.isfinite(v).all()) for v in values)

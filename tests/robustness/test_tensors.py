"""Hostile tensors handed to the metric, the losses and the region builders: refused by name, or exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifqa_loss import GFIQALoss, IFQALoss, batch_memory, load_metric, regions
from ifqa_loss.registry import get_spec

from helpers import tiny_ifqa_metric
from robustness.case import Case, Refused, Works, params

GOOD = torch.full((1, 3, 32, 32), 0.5)


def score(x, **options):
    return lambda metric, loss: metric.score(x, **options)


def loss_of(x, **options):
    return lambda metric, loss: loss(x, **options)


def landmarks(points):
    return lambda metric, loss: regions.regions_from_landmarks(points, 32)


def regions_with(name: str, damage):
    """Template masks for a batch of 2 with region ``name`` replaced by ``damage(mask)``, passed to the loss."""
    def run(metric, loss):
        masks = dict(regions.template_regions(32))
        masks[name] = damage(masks[name])
        return loss(torch.cat([GOOD, GOOD]), regions=masks)
    return run


def too_large(batch: int, available: int, grad: bool = False):
    """Score (or take the loss of) ``batch`` images while the device reports ``available`` bytes free."""
    def run(metric, loss):
        original = batch_memory.available_bytes
        batch_memory.available_bytes = lambda device: available
        try:
            x = GOOD.expand(batch, -1, -1, -1)
            if grad:
                return loss(x.clone().requires_grad_())
            with torch.inference_mode():
                return metric.score(x)
        finally:
            batch_memory.available_bytes = original
    return run


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
    Case("landmarks-far-outside-image", landmarks(TEMPLATE_5 + 1000),
         Refused("sample\\(s\\) \\[0\\] lie far outside the 32x32 image", "source_size")),
    Case("landmarks-slightly-outside", landmarks(TEMPLATE_5 + 20), Works("a face partly off the image")),
    # --- NaN/Inf: the message names the samples --------------------------------------------------------------
    Case("image-nan-in-sample-2-of-4", score(torch.cat([GOOD] * 2 + [with_nan(GOOD)] + [GOOD])),
         Refused("NaN or Inf values in sample\\(s\\) \\[2\\] of 4", "generator output")),
    Case("image-inf-in-samples-0-and-3", score(torch.cat([GOOD.clone().fill_(float("inf"))] + [GOOD] * 2 +
                                                         [with_nan(GOOD, (100,))])),
         Refused("sample\\(s\\) \\[0, 3\\] of 4", "generator output")),
    Case("loss-nan-in-sample-1", loss_of(torch.cat([GOOD, with_nan(GOOD, (7,))])),
         Refused("sample\\(s\\) \\[1\\] of 2", "generator output")),
    Case("loss-minus-inf-last-pixel", loss_of(torch.cat([GOOD, GOOD, with_nan(GOOD, (3 * 32 * 32 - 1,)) * -1])),
         Refused("sample\\(s\\) \\[2\\]", "generator output")),
    # --- region masks: the region and the expected (N,1,H,W) are named ---------------------------------------
    Case("regions-mask-3d", regions_with("mouth", lambda m: m[:, 0]), Refused("region 'mouth'.*\\(N,1,H,W\\)",
                                                                             "mask\\[:, None\\]")),
    Case("regions-mask-5d", regions_with("nose", lambda m: m[None]), Refused("region 'nose'.*\\(N,1,H,W\\)", "")),
    Case("regions-mask-three-channels", regions_with("skin", lambda m: m.expand(-1, 3, -1, -1)),
         Refused("region 'skin'.*\\(N,1,H,W\\).*\\(1, 3, 32, 32\\)", "")),
    Case("regions-mask-wrong-batch", regions_with("left_eye", lambda m: m.expand(3, -1, -1, -1)),
         Refused("region 'left_eye' holds 3 masks for a batch of 2", "N=2")),
    Case("regions-mask-bool", regions_with("mouth", lambda m: m > 0.5), Refused("region 'mouth'.*dtype torch.bool",
                                                                               "mask.float\\(\\)")),
    Case("regions-mask-int", regions_with("right_brow", lambda m: m.long()), Refused("region 'right_brow'.*int64",
                                                                                    "float")),
    Case("regions-mask-not-a-tensor", regions_with("nose", lambda m: m.numpy()), Refused("region 'nose'.*ndarray",
                                                                                        "\\(N,1,H,W\\)")),
    Case("regions-masks-of-two-sizes", regions_with("nose", lambda m: F.interpolate(m, size=(16, 16))),
         Refused("differ in size", "one ifqa_loss.regions call")),
    Case("regions-shared-by-batch-works", regions_with("nose", lambda m: m), Works("N=1 masks are shared")),
    # --- degenerate landmarks --------------------------------------------------------------------------------
    Case("landmarks-all-coincident", landmarks(torch.zeros(1, 5, 2)), Refused("sample\\(s\\) \\[0\\] coincide",
                                                                              "drop those samples")),
    Case("landmarks-second-sample-coincident", landmarks(torch.cat([TEMPLATE_5, torch.full((1, 5, 2), 9.0)])),
         Refused("sample\\(s\\) \\[1\\] coincide", "x,y pixels")),
    Case("landmarks-on-a-horizontal-line", landmarks(TEMPLATE_5 * torch.tensor([1.0, 0.0]) + 5),
         Refused("coincide", "")),
    Case("landmarks-68-collapsed", landmarks(torch.full((1, 68, 2), 16.0)), Refused("\\[0\\] coincide", "")),
    Case("landmarks-far-left-negative", landmarks(TEMPLATE_5 - 500), Refused("far outside", "source_size")),
    Case("landmarks-other-image-size", landmarks(TEMPLATE_5 * 16), Refused("far outside", "source_size=")),
    # --- batches too large for memory: caught before running -------------------------------------------------
    Case("batch-too-large-for-memory", too_large(64, available=64 << 20),
         Refused("a batch of 64 images needs about .* GiB .*only 0.1 GiB are available", "try a batch of at most")),
    Case("batch-larger-than-any-memory", too_large(8, available=1 << 20),
         Refused("not even one image fits", "free memory")),
    Case("batch-too-large-with-gradients", too_large(16, available=96 << 20, grad=True),
         Refused("with gradients", "at most")),
    Case("single-image-never-refused", too_large(1, available=1), Works("one image: nothing smaller to try")),
    Case("batch-that-fits", too_large(4, available=1 << 40), Works("enough memory")),
    # --- calls a newcomer gets wrong -------------------------------------------------------------------------
    Case("loss-positional-checkpoint", lambda metric, loss: IFQALoss("IFQA_Metric.pth"),
         Refused("keyword arguments only", "IFQALoss\\(checkpoint='IFQA_Metric.pth'\\)")),
    Case("loss-positional-path", lambda metric, loss: GFIQALoss(__import__("pathlib").Path("run/best.pth")),
         Refused("keyword arguments only", "GFIQALoss\\(checkpoint='run/best.pth'\\)")),
    Case("metric-name-unknown", lambda metric, loss: load_metric("niqe"),
         Refused("unknown metric 'niqe'; choose one of \\['gfiqa', 'gfiqa-resnet50', 'ifqa', 'ifqa\\+\\+'\\]$", "")),
    Case("metric-name-not-a-string", lambda metric, loss: load_metric(3), Refused("named by a string", "ifqa")),
    Case("metric-name-with-spaces-and-case", lambda metric, loss: get_spec(" IFQA "), Works("normalised")),
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
        with pytest.raises((ValueError, TypeError, MemoryError)) as info:
            run(metric, loss)
        case.expect.check(str(info.value))
    else:
        out = run(metric, loss)
        if not isinstance(out, (dict, torch.Tensor)):
            return
        values = out.values() if isinstance(out, dict) else [out]
        assert all(bool(torch.isfinite(v).all()) for v in values)

"""Precision modes and the fast-network choice of QualityMetric (the metric owns both)."""
import warnings

import pytest
import torch

from ifqa_loss import IFQALoss, load_metric
from ifqa_loss.metric import PRECISIONS, precision_scope
from ifqa_loss.nets.ifqa_unet_fast import FastIFQADiscriminator


def _tiny(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warn loudly
        return load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1, **options)


def _tf32_flags():
    return (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)


@pytest.mark.parametrize(("precision", "inside"), [("exact", ("ieee", "ieee")), ("tf32", ("tf32", "tf32"))])
def test_scope_sets_tf32_for_cuda_and_restores_the_callers_flags(precision, inside):
    # The flags are readable and settable without a GPU; the scope is what CUDA runs would see.
    before = _tf32_flags()
    with precision_scope(precision, "cuda"):
        assert _tf32_flags() == inside
    assert _tf32_flags() == before


def test_scope_restores_the_flags_after_an_error():
    before = _tf32_flags()
    with pytest.raises(RuntimeError), precision_scope("exact", "cuda"):
        raise RuntimeError("boom")
    assert _tf32_flags() == before


def test_cpu_scoring_leaves_global_flags_alone():
    before = _tf32_flags()
    seen = []
    metric = _tiny()
    metric.net.encoder128.register_forward_pre_hook(lambda *_: seen.append(_tf32_flags()))
    metric.with_options(fast=False).score(torch.rand(1, 3, 64, 64))
    assert seen == [before] and _tf32_flags() == before


def test_bf16_runs_under_autocast_and_returns_float32():
    metric = _tiny(precision="bf16")
    x = torch.rand(2, 3, 64, 64)
    logits = metric.logits(x)
    assert logits.dtype == torch.float32
    exact = _tiny().logits(x)
    assert not torch.equal(logits, exact) and (logits - exact).abs().max() < 0.1


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        _tiny(precision="fp8")
    assert PRECISIONS == ("exact", "tf32", "bf16")


def test_default_fast_choice_follows_the_decision_table():
    metric = _tiny()
    assert metric.uses_fast_net("cpu") and not metric.uses_fast_net("cuda")
    assert metric.with_options(compile=True).uses_fast_net("cuda")
    assert not metric.with_options(fast=False).uses_fast_net("cpu")


def test_fast_and_published_metrics_give_the_same_map_and_share_the_weights():
    metric = _tiny()
    x = torch.rand(2, 3, 64, 64)
    fast_map = metric.quality_map(x)
    assert isinstance(metric._fast_net, FastIFQADiscriminator)
    assert all(a is b for a, b in zip(metric._fast_net.parameters(), metric.net.parameters(), strict=False))
    assert list(metric.state_dict()) == [f"net.{k}" for k in metric.net.state_dict()]  # published names only
    torch.testing.assert_close(fast_map, metric.with_options(fast=False).quality_map(x), atol=1e-5, rtol=0)


def test_loss_defaults_to_the_per_device_loss_precision():
    loss = IFQALoss(metric=_tiny(), input_range=(0, 1))
    assert loss.metric.precision is None  # resolved per input device: "exact" on CPU
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    loss(x).backward()
    assert torch.isfinite(x.grad).all()

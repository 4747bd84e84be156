"""Frozen-metric hygiene shared by every quality loss (tiny networks; exactness lives in tests/nets)."""
import warnings

import pytest
import torch

from ifqa_loss import IFQALoss, IFQAPlusLoss

from helpers import tiny_ifqa_metric


class _Restorer(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.ifqa = loss


def test_metric_is_out_of_parameters_and_modules():
    parent = _Restorer(IFQALoss(metric=tiny_ifqa_metric()))
    assert [name for name, _ in parent.named_parameters()] == ["body.weight", "body.bias"]
    assert not any(type(m).__name__ == "QualityMetric" for m in parent.modules())


def test_user_init_and_requires_grad_cannot_reach_the_metric():
    metric = tiny_ifqa_metric()
    before = metric.net.encoder128.conv1.weight.clone()
    parent = _Restorer(IFQALoss(metric=metric))
    parent.apply(lambda m: torch.nn.init.zeros_(m.weight) if isinstance(m, torch.nn.Conv2d) else None)
    parent.requires_grad_(True)
    assert torch.equal(metric.net.encoder128.conv1.weight, before)
    assert not any(p.requires_grad for p in metric.parameters())


def test_channels_last_option_leaves_the_callers_metric_untouched():
    metric = tiny_ifqa_metric()
    pred = torch.rand(1, 3, 64, 64) * 2 - 1
    fast = IFQALoss(metric=metric, channels_last=True)
    assert fast.metric is not metric and fast.metric.net is metric.net  # shared weights, own run options
    assert not metric.channels_last
    torch.testing.assert_close(fast(pred), IFQALoss(metric=metric)(pred))


def test_parent_checkpoint_with_other_metric_weights_is_refused():
    saved = _Restorer(IFQALoss(metric=tiny_ifqa_metric(seed=1), include_in_state_dict=True)).state_dict()
    target = _Restorer(IFQALoss(metric=tiny_ifqa_metric(seed=2), include_in_state_dict=True))
    with pytest.raises(RuntimeError, match="never replaced"):
        target.load_state_dict(saved)


def test_parent_checkpoint_with_the_same_metric_weights_loads():
    saved = _Restorer(IFQALoss(metric=tiny_ifqa_metric(seed=1), include_in_state_dict=True)).state_dict()
    target = _Restorer(IFQALoss(metric=tiny_ifqa_metric(seed=1)))
    target.load_state_dict(saved, strict=True)
    torch.testing.assert_close(target.body.weight, saved["body.weight"])


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        IFQALoss("IFQA_Metric.pth")


def test_random_weights_warn_and_say_so():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loss = IFQALoss(random_weights=True, input_range=(0, 1))
    assert loss.metric.random_weights and "RANDOM WEIGHTS" in repr(loss.metric)
    assert loss(torch.rand(1, 3, 32, 32)).isfinite()


def test_random_weights_and_a_checkpoint_are_exclusive(tmp_path):
    with warnings.catch_warnings(), pytest.raises(ValueError, match="not both"):
        warnings.simplefilter("ignore")
        IFQALoss(random_weights=True, checkpoint=tmp_path / "x.pth")


def test_ifqa_plus_loss_defaults_to_ifqa_plus_plus(ifqa_vit_checkpoint):
    assert IFQAPlusLoss(checkpoint=ifqa_vit_checkpoint).metric.name == "ifqa++"


def test_sha256_pins_the_checkpoint_file(tmp_path):
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
    from ifqa_loss.weights import CheckpointError, save_checkpoint
    from ifqa_loss.weights.read import sha256_file

    path = save_checkpoint(tmp_path / "d.pth", IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), "ifqa")
    assert IFQALoss(checkpoint=path, sha256=sha256_file(path).upper()).metric.name == "ifqa"
    with pytest.raises(CheckpointError, match="not the pinned file"):
        IFQALoss(checkpoint=path, sha256="0" * 64)


def test_sha256_with_an_already_loaded_metric_is_refused():
    with pytest.raises(ValueError, match="sha256="):
        IFQALoss(metric=tiny_ifqa_metric(), sha256="0" * 64)

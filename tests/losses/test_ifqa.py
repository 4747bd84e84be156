import copy
import pickle

import pytest
import torch

from ifqa_loss import IFQALoss, regions

from helpers import tiny_ifqa_metric


@pytest.fixture
def metric():
    return tiny_ifqa_metric()


@pytest.fixture
def pred():
    torch.manual_seed(1)
    return (torch.rand(2, 3, 96, 96) * 2 - 1).requires_grad_()


def _map(metric, pred):
    with torch.no_grad():
        return metric.quality_map(pred, input_range=(-1, 1))


def test_gradients_reach_pred_and_never_the_metric(metric, pred):
    IFQALoss(metric=metric)(pred).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in metric.parameters())


def test_one_minus_is_the_mean_of_one_minus_the_map(metric, pred):
    loss = IFQALoss(metric=metric, reduction="none")(pred)
    torch.testing.assert_close(loss, (1 - _map(metric, pred)).mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)


def test_nonsaturating_is_the_mean_of_minus_log_map(metric, pred):
    loss = IFQALoss(metric=metric, mode="nonsaturating")(pred)
    torch.testing.assert_close(loss, -_map(metric, pred).log().mean(), atol=1e-5, rtol=0)


def test_pixel_weights_give_the_weighted_mean_at_any_resolution(metric, pred):
    weights = torch.rand(2, 1, 256, 256)
    loss = IFQALoss(metric=metric, reduction="sum")(pred, pixel_weights=weights)
    per_image = (weights * (1 - _map(metric, pred))).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))
    torch.testing.assert_close(loss, per_image.sum(), atol=1e-5, rtol=0)
    small = IFQALoss(metric=metric)(pred, pixel_weights=torch.ones(1, 1, 8, 8))
    torch.testing.assert_close(small, IFQALoss(metric=metric)(pred), atol=1e-6, rtol=0)


def test_region_weights_use_the_template_masks(metric, pred):
    rw = {"eyes": 2.0, "mouth": 2.0, "nose": 1.5, "skin": 1.0, "background": 0.0}
    loss = IFQALoss(metric=metric, region_weights=rw)(pred)
    weights = regions.region_weight_map(regions.template_regions(256), rw)
    per_image = (weights * (1 - _map(metric, pred))).sum(dim=(1, 2, 3)) / weights.sum()
    torch.testing.assert_close(loss, per_image.mean(), atol=1e-5, rtol=0)


def test_per_sample_regions_override_the_template(metric, pred):
    landmarks = torch.stack([regions.FFHQ_TEMPLATE_512, regions.FFHQ_TEMPLATE_512 + 30]) * (96 / 512)
    masks = regions.regions_from_landmarks(landmarks, size=96)
    loss_fn = IFQALoss(metric=metric, region_weights={"mouth": 1.0, "eyes": 0.0, "brows": 0.0, "nose": 0.0,
                                                       "skin": 0.0, "background": 0.0}, reduction="none")
    per_sample = loss_fn(pred, regions=masks)
    template = loss_fn(pred)
    assert torch.allclose(per_sample[0], template[0], atol=2e-3)  # same geometry as the template
    assert not torch.allclose(per_sample[1], template[1], atol=1e-4)


def test_saturated_map_gives_finite_nonsaturating_loss_in_fp16_autocast(metric):
    metric.net.decoder256[0].conv2.bias.data.fill_(-300.0)  # map == 0 everywhere: -log(0) would be inf
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    loss_fn = IFQALoss(metric=metric, mode="nonsaturating")
    with torch.autocast("cpu", dtype=torch.float16):
        loss, qmap = loss_fn(x, return_map=True)
    loss.backward()
    assert (qmap == 0).all()  # saturated: the naive -log(map) is inf here
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.item() > 110
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_is_close_to_fp32(metric, pred, dtype):
    loss_fn = IFQALoss(metric=metric)
    reference = loss_fn(pred)
    with torch.autocast("cpu", dtype=dtype):
        low = loss_fn(pred)
    assert low.dtype == torch.float32
    assert abs(low.item() - reference.item()) < 1e-2


def test_template_weights_are_cached_per_size_and_device(metric, pred):
    loss_fn = IFQALoss(metric=metric, region_weights={"eyes": 2.0})
    loss_fn(pred)
    cached = loss_fn._template_weights[(256, "cpu")]
    loss_fn(pred)
    assert loss_fn._template_weights[(256, "cpu")] is cached


class _Restorer(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.ifqa = loss


def test_parent_state_dict_excludes_the_metric_and_loads_strictly(metric):
    parent = _Restorer(IFQALoss(metric=metric))
    assert list(parent.state_dict()) == ["body.weight", "body.bias"]
    fresh = _Restorer(IFQALoss(metric=tiny_ifqa_metric(seed=5)))
    fresh.load_state_dict(parent.state_dict(), strict=True)
    torch.testing.assert_close(fresh.body.weight, parent.body.weight)
    assert not torch.equal(fresh.ifqa.metric.net.encoder128.conv1.weight, metric.net.encoder128.conv1.weight)


def test_include_in_state_dict_opts_in(metric):
    parent = _Restorer(IFQALoss(metric=metric, include_in_state_dict=True))
    keys = list(parent.state_dict())
    assert "ifqa.metric.net.encoder128.conv1.weight" in keys


def test_parent_train_does_not_flip_the_metric(metric):
    parent = _Restorer(IFQALoss(metric=metric))
    parent.train()
    assert parent.body.training and not any(m.training for m in parent.ifqa.metric.modules())


def test_to_dtype_deepcopy_and_pickle_of_the_parent(metric, pred):
    parent = _Restorer(IFQALoss(metric=metric, region_weights={"eyes": 2.0}))
    expected = parent.ifqa(pred)
    for clone in (copy.deepcopy(parent), pickle.loads(pickle.dumps(parent))):
        torch.testing.assert_close(clone.ifqa(pred), expected)
    parent.to(torch.float64)
    assert parent.ifqa(pred.double()).dtype == torch.float32
    assert next(parent.ifqa.metric.parameters()).dtype == torch.float64


def test_works_inside_distributed_data_parallel(metric, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_Restorer(IFQALoss(metric=metric)))
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        model.module.ifqa(torch.tanh(model.module.body(x))).backward()
        assert model.module.body.weight.grad is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda: torch.zeros(3, 64, 64), "add a batch dimension"),
        (lambda: torch.zeros(1, 1, 64, 64), r"\(N,3,H,W\)"),
        (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "x.float\\(\\) / 127.5 - 1"),
        (lambda: torch.full((1, 3, 64, 64), float("nan")), "NaN or Inf"),
        (lambda: torch.full((1, 3, 64, 64), 200.0), "input_range"),
        (lambda: torch.zeros(0, 3, 64, 64), "empty batch"),
        (lambda: torch.zeros(1, 3, 64, 64, device="meta"), "move one with .to"),
    ],
)
def test_bad_input_is_refused_with_the_fix(metric, make_input, message):
    with pytest.raises((ValueError, TypeError), match=message):
        IFQALoss(metric=metric)(make_input())


def test_unit_range_flag_is_honoured(metric):
    with pytest.raises(ValueError, match="input_range"):
        IFQALoss(metric=metric, input_range=(0, 1))(torch.full((1, 3, 32, 32), -0.5))


@pytest.mark.parametrize(
    ("weights", "message"),
    [(torch.ones(3, 1, 8, 8), "batch size 3"), (torch.zeros(2, 1, 8, 8), "all zero for image"),
     (torch.ones(2, 8, 8), r"\(N,1,h,w\)")],
)
def test_bad_pixel_weights_are_refused(metric, pred, weights, message):
    with pytest.raises(ValueError, match=message):
        IFQALoss(metric=metric)(pred, pixel_weights=weights)


def test_bad_options_are_refused_at_construction(metric):
    with pytest.raises(ValueError, match="mode"):
        IFQALoss(metric=metric, mode="hinge")
    with pytest.raises(ValueError, match="unknown region"):
        IFQALoss(metric=metric, region_weights={"forehead": 2.0})
    with pytest.raises(ValueError, match="input_range"):
        IFQALoss(metric=metric, input_range=(0, 255))


def test_eight_steps_of_l1_plus_ifqa_lower_the_ifqa_term_at_every_step(ifqa_checkpoint):
    """Plumbing check with the reference weights: the loss trains a tiny restorer, it is no quality claim."""
    torch.manual_seed(0)
    ifqa = IFQALoss(checkpoint=ifqa_checkpoint)
    restorer = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 3, padding=1)
    )
    optimizer = torch.optim.Adam(restorer.parameters(), lr=2e-3)
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    degraded = torch.nn.functional.avg_pool2d(target, 5, 1, 2)
    history = []
    for _ in range(8):  # published-size IFQA at 256 px: ~1.2 s a step on 2 cores
        out = torch.tanh(degraded + restorer(degraded))
        ifqa_term = ifqa(out)
        loss = torch.nn.functional.l1_loss(out, target) + ifqa_term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(ifqa_term.item())
    assert all(later < earlier for earlier, later in zip(history, history[1:], strict=False)), history
    assert all(p.grad is None for p in ifqa.parameters())


def test_clamp_mode_accepts_overshoot_and_refuses_a_wrong_range_flag(metric):
    loss_fn = IFQALoss(metric=metric, out_of_range="clamp")
    x = torch.rand(1, 3, 64, 64) * 2.6 - 1.3  # an unbounded generator overshooting [-1, 1]
    torch.testing.assert_close(loss_fn(x), IFQALoss(metric=metric)(x.clamp(-1, 1)))
    with pytest.raises(ValueError, match="input_range"):
        loss_fn(torch.rand(1, 3, 64, 64) * 255)


def test_check_values_off_skips_only_the_value_checks(metric):
    loss_fn = IFQALoss(metric=metric, check_values=False)
    assert torch.isfinite(loss_fn(torch.full((1, 3, 32, 32), 3.0)))  # out of range, accepted unchecked
    with pytest.raises(TypeError, match="integer dtype"):
        loss_fn(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))

"""The defences against metric gaming: EOT (augment=), ensembles (ensemble=) and online refresh (refresh=)."""
import copy

import pytest
import torch

from ifqa_loss import IFQALoss
from ifqa_loss.losses.augment import EOTConfig

from helpers import small_ifqa_metric


def images(n=2, size=48, seed=1, dtype=torch.float32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- EOT


def test_eot_draws_are_reproducible_with_a_seed_and_change_with_it():
    x = images()
    values = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        loss = IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), augment={"draws": 3, "seed": seed})
        values[name] = [loss(x).item() for _ in range(3)]  # successive calls draw new transformations
    assert values["a"] == values["b"]
    assert values["a"] != values["c"]
    assert len(set(values["a"])) == 3  # each call is a new draw


def test_eot_is_off_by_default_and_identity_at_zero_strength():
    metric, x = small_ifqa_metric(), images()
    plain = IFQALoss(metric=metric, input_range=(0, 1))
    assert plain.augment is None and plain.eot is None
    identity = EOTConfig(draws=1, shift=0, flip=False, scale=0, brightness=0, contrast=0, saturation=0, blur_sigma=0,
                         jpeg_quality=None)
    same = IFQALoss(metric=metric, input_range=(0, 1), augment=identity)
    torch.testing.assert_close(same(x), plain(x), rtol=1e-5, atol=1e-6)
    expected = 1 - metric.score(x, input_range=(0, 1)).mean()
    torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-6)


def test_eot_transformations_pass_gradcheck():
    """Shift, flip, scale, colour jitter and blur are differentiable: autograd agrees with finite differences."""
    from ifqa_loss.losses.augment import apply_eot, sample_eot_params

    config = EOTConfig(jpeg_quality=None, brightness=0.01)
    params = sample_eot_params(2, config, torch.Generator().manual_seed(5))
    params["flip"] = torch.tensor([True, False])
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2)
    assert torch.autograd.gradcheck(lambda t: apply_eot(t, params), (x.requires_grad_(True),))


def test_eot_loss_gradient_is_reproducible_and_reaches_every_image():
    grads = []
    for _ in range(2):
        loss = IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), augment={"draws": 2, "seed": 7})
        x = images(2).requires_grad_(True)
        loss(x).backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[0].flatten(1).abs().sum(1) > 0).all()


def test_eot_with_jpeg_gives_finite_gradients_to_every_image():
    loss = IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), augment={"draws": 4, "jpeg_prob": 1.0, "seed": 0})
    x = images(3).requires_grad_(True)
    loss(x).backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_eot_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown field"):
        IFQALoss(metric=small_ifqa_metric(), augment={"drawz": 2})
    with pytest.raises(ValueError, match="draws"):
        IFQALoss(metric=small_ifqa_metric(), augment={"draws": 0})


# ---------------------------------------------------------------- ensembles


def test_ensemble_mean_and_min_combine_the_members_per_image():
    a, b, x = small_ifqa_metric(0), small_ifqa_metric(1), images(3)
    per = torch.stack([IFQALoss(metric=m, input_range=(0, 1), reduction="none")(x) for m in (a, b)])
    mean = IFQALoss(metric=a, ensemble=[b], input_range=(0, 1), reduction="none")(x)
    worst = IFQALoss(metric=a, ensemble=[b], ensemble_combine="min", input_range=(0, 1), reduction="none")(x)
    torch.testing.assert_close(mean, per.mean(0))
    torch.testing.assert_close(worst, per.amax(0))  # the lowest score of each image = its highest loss
    assert not torch.equal(per[0], per[1])


def test_ensemble_members_follow_to_and_stay_out_of_parameters():
    loss = IFQALoss(metric=small_ifqa_metric(0), ensemble=[small_ifqa_metric(1)], input_range=(0, 1)).double()
    assert all(p.dtype == torch.float64 for m in loss.metrics for p in m.parameters())
    assert list(loss.parameters()) == [] and loss.state_dict() == {}


def test_ensemble_refuses_unknown_combination():
    with pytest.raises(ValueError, match="ensemble_combine"):
        IFQALoss(metric=small_ifqa_metric(), ensemble=[small_ifqa_metric(1)], ensemble_combine="max")


# ---------------------------------------------------------------- online refresh


class _Restorer(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.ifqa = loss


def test_refresh_is_off_by_default_and_update_says_how_to_turn_it_on():
    with pytest.raises(RuntimeError, match="refresh="):
        IFQALoss(metric=small_ifqa_metric()).update(images(), images(seed=2))


def test_refresh_learns_and_keeps_weights_within_the_stated_distance():
    shared = small_ifqa_metric()
    before = copy.deepcopy(shared.state_dict())
    loss = IFQALoss(metric=shared, input_range=(0, 1), refresh={"lr": 1e-2, "l2sp": 0.0, "max_shift": 0.02})
    real, fake = images(4, seed=1), images(4, seed=2) * 0.3  # dark "restorations"
    first = loss.update(real, fake)
    for _ in range(15):
        logs = loss.update(real, fake)
    assert logs["loss_restored"] < first["loss_restored"]  # it learns to tell them apart
    assert 0.015 < loss.refresher.distance() <= 0.02  # reached, and never passed, the bound
    for name, tensor in shared.state_dict().items():  # the caller's metric (e.g. a judge) is untouched
        assert torch.equal(tensor, before[name]), name
    assert not any(p.requires_grad for p in loss.metric.parameters())  # frozen again between updates


def test_l2sp_pulls_towards_the_starting_weights():
    real, fake = images(4, seed=1), images(4, seed=2) * 0.3
    shifts = []
    for l2sp in (0.0, 50.0):
        refresh = {"lr": 3e-3, "l2sp": l2sp, "max_shift": 1}
        loss = IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), refresh=refresh)
        for _ in range(8):
            loss.update(real, fake)
        shifts.append(loss.refresher.distance())
    assert shifts[1] < shifts[0]


def test_refreshed_metric_never_leaks_into_the_parent_state_dict_unless_asked():
    real, fake = images(2, seed=1), images(2, seed=2) * 0.3
    parent = _Restorer(IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), refresh={"lr": 1e-3}))
    parent.ifqa.update(real, fake)
    assert list(parent.state_dict()) == ["body.weight", "body.bias"]
    assert [n for n, _ in parent.named_parameters()] == ["body.weight", "body.bias"]
    # Asked: the refresh state rides along and restores the refreshed weights exactly.
    asked = _Restorer(IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), refresh={"lr": 1e-3},
                               include_in_state_dict=True))
    asked.ifqa.update(real, fake)
    state = asked.state_dict()
    assert set(state) == {"body.weight", "body.bias", "ifqa.refresh"}
    fresh = _Restorer(IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1), refresh={"lr": 1e-3},
                               include_in_state_dict=True))
    fresh.load_state_dict(state, strict=True)
    for (name, p), q in zip(asked.ifqa.metric.net.named_parameters(), fresh.ifqa.metric.net.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert fresh.ifqa.refresher.step == 1
    frozen = _Restorer(IFQALoss(metric=small_ifqa_metric(), input_range=(0, 1)))
    with pytest.raises(RuntimeError, match="refresh"):
        frozen.load_state_dict(state)


def test_refresh_state_refuses_another_starting_point():
    loss = IFQALoss(metric=small_ifqa_metric(0), input_range=(0, 1), refresh=True)
    other = IFQALoss(metric=small_ifqa_metric(1), input_range=(0, 1), refresh=True)
    with pytest.raises(ValueError, match="started from other weights"):
        other.refresher.load_state_dict(loss.refresher.state_dict())

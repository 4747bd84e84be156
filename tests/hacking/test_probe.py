"""hack_probe: pixel optimisation against one metric, judged by others (tiny 64 px IFQA networks)."""
import pytest
import torch

from ifqa_loss import IFQALoss
from ifqa_loss.hacking import hack_probe, optimise_pixels

from helpers import small_ifqa_metric


def images(n=3, size=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) * 0.6 + 0.2 for _ in range(n)]


def test_a_judge_equal_to_the_optimised_metric_agrees_exactly():
    a = small_ifqa_metric(0)
    twin = small_ifqa_metric(5)
    twin.net.load_state_dict(a.net.state_dict())  # an independent copy of the same weights
    report = hack_probe(a, [twin, small_ifqa_metric(1)], images(), steps=15, lr=0.02)
    judge = report["judges"][0]
    assert (judge["before"], judge["after"]) == (report["optimised"]["before"], report["optimised"]["after"])
    assert judge["gain_ratio"] == pytest.approx(1.0)
    assert report["optimised"]["after"] > report["optimised"]["before"] + 0.01  # the optimisation did work
    assert report["judges"][1]["gain_ratio"] != pytest.approx(1.0)
    assert 0 < report["psnr"] < 60 and 0 < report["ssim"] < 1


def test_scores_are_measured_without_augmentation_and_the_report_is_complete():
    a, b, start = small_ifqa_metric(0), small_ifqa_metric(1), images(2, size=64)
    gt = images(2, size=64, seed=5)
    report = hack_probe(a, [b], start, gt=gt, steps=3, augment="eot", seed=2)
    plain = a.score(torch.stack(start), input_range=(0, 1)).double().mean().item()
    assert report["optimised"]["before"] == pytest.approx(plain, abs=1e-7)
    assert report["settings"]["augment"] == "eot(draws=4)"
    assert set(report["gt"]) == {"psnr", "ssim"} and len(report["images"]) == 2
    assert report["gt"]["psnr"]["after"] != report["gt"]["psnr"]["before"]


def test_zero_steps_changes_nothing_and_psnr_is_null_not_infinite():
    report = hack_probe(small_ifqa_metric(0), [small_ifqa_metric(1)], images(1), steps=0)
    assert report["optimised"]["before"] == report["optimised"]["after"]
    assert report["psnr"] is None and report["ssim"] == pytest.approx(1.0)
    assert report["judges"][0]["gain_ratio"] is None


def test_images_of_different_sizes_are_optimised_in_their_own_batches():
    mixed = images(1, size=48) + images(1, size=64, seed=3)
    report = hack_probe(small_ifqa_metric(0), [small_ifqa_metric(1)], mixed, steps=2)
    assert len(report["images"]) == 2


def test_a_refreshing_loss_needs_real_images():
    loss = IFQALoss(metric=small_ifqa_metric(0), input_range=(0, 1), refresh=True)
    with pytest.raises(ValueError, match="real="):
        optimise_pixels(torch.stack(images(1)), loss, steps=1)
    out = optimise_pixels(torch.stack(images(1)), loss, steps=2, real=torch.stack(images(1, seed=4)))
    assert loss.refresher.step == 2 and out.shape == (1, 3, 48, 48)

"""HackingMonitor: the divergence rule on cases whose answer is known."""
import pytest
import torch

from ifqa_loss import IFQALoss
from ifqa_loss.hacking import HackingMonitor, HackingWarning, optimise_pixels

from helpers import small_ifqa_metric


class _Scripted:
    """A stand-in metric whose score is a scripted number (the rule is arithmetic on scores)."""

    def __init__(self, values):
        self.values = iter(values)
        self.net = torch.nn.Linear(1, 1)

    def score(self, x, input_range):
        return torch.full((x.shape[0],), next(self.values))


def test_flags_when_the_optimised_metric_rises_and_judges_stay_flat():
    monitor = HackingMonitor(_Scripted([0.2, 0.3, 0.6]), {"B": _Scripted([0.3, 0.31, 0.32])}, torch.zeros(2, 3, 8, 8),
                             every=5)
    assert monitor(0, lambda x: x)["flagged"] is False  # the baseline
    assert monitor(3, lambda x: x) is None  # not a measuring step
    with pytest.warns(HackingWarning):
        second = monitor(5, lambda x: x)  # +0.10 vs +0.01: 0.01 <= 0.25 * 0.10
    assert second["flagged"] is True
    third = monitor(10, lambda x: x)
    assert third["d_optimised"] == pytest.approx(0.4) and third["d_judge"] == pytest.approx(0.02)
    assert monitor.flagged


def test_does_not_flag_when_judges_follow():
    monitor = HackingMonitor(_Scripted([0.2, 0.5]), [_Scripted([0.3, 0.5])], torch.zeros(1, 3, 8, 8), every=1)
    monitor(0, lambda x: x)
    assert monitor(1, lambda x: x)["flagged"] is False and not monitor.flagged


def test_pixel_gaming_of_one_network_is_flagged_by_another(tmp_path):
    """A real loop: Adam on pixels against metric A, judged by an independent network B."""
    a, b = small_ifqa_metric(0), small_ifqa_metric(1)
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    lines = []
    monitor = HackingMonitor(a, {"B": b}, probe, gt=probe, every=10, log=lines.append)
    current = {"x": probe}
    monitor(0, lambda lq: current["x"])
    loss = IFQALoss(metric=a, input_range=(0, 1))
    with pytest.warns(HackingWarning, match="gaming"):
        def watch(step, x):
            current["x"] = x
            monitor(step + 1, lambda lq: current["x"])
        optimise_pixels(probe, loss, steps=40, lr=0.03, on_step=watch)
    last = monitor.history[-1]
    assert last["d_optimised"] > 0.05 and last["flagged"]
    assert len(monitor.history) == 5 and len(lines) == 5 and "DIVERGING" in lines[-1]
    monitor.write_csv(tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "step,optimised,B,d_optimised,d_judge,flagged,psnr"

"""GFPGANIFQAModel's step hook: `ifqa_opt: {refresh: ...}` refreshes the metric on (gt, output) and an attached
HackingMonitor measures the bare generator (GFP-GAN's (image, rgbs) output) on its probe set."""
import warnings

import torch

from ifqa_loss import IFQALoss
from ifqa_loss.hacking import HackingMonitor

from helpers import small_ifqa_metric


class _Generator(torch.nn.Module):
    def forward(self, x, return_rgb=True):
        return torch.tanh(x), []


def test_after_generator_step_refreshes_and_monitors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ifqa_loss.integrations.gfpgan import GFPGANIFQAModel

    model = object.__new__(GFPGANIFQAModel)  # the hook only needs these attributes of a built model
    model.opt = {"dist": False}
    model.net_g = _Generator()
    model.cri_ifqa = IFQALoss(metric=small_ifqa_metric(0), refresh={"lr": 1e-3})
    model.gt, model.output = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) - 0.5
    probe = torch.rand(2, 3, 64, 64) * 2 - 1
    model.hacking_monitor = HackingMonitor(small_ifqa_metric(0), {"B": small_ifqa_metric(1)}, probe, every=1,
                                           input_range=(-1, 1))
    model.after_generator_step(0)
    assert model.cri_ifqa.refresher.step == 1 and model.cri_ifqa.refresher.distance() > 0
    assert len(model.hacking_monitor.history) == 1

"""The defences set from a sweep file (the term's `loss:` options), and the ablation trainer's step hook."""
from __future__ import annotations

import warnings

import torch

from ifqa_loss.ablation import config_from_dict
from ifqa_loss.ablation.builtin import prepare_data, train_setting
from ifqa_loss.ablation.config import Setting
from ifqa_loss.ablation.evaluate import load_metrics
from ifqa_loss.losses.base import FrozenMetricLoss


def test_sweep_loss_options_turn_on_eot_and_refresh_and_leave_the_shared_metric_alone(builtin_config, monkeypatch):
    raw = builtin_config()
    raw["sweep"] = [{"metric": "ifqa", "weights": [0.5],
                     "loss": {"augment": {"draws": 2, "seed": 1}, "refresh": {"lr": 1e-3, "max_shift": 0.01}}}]
    cfg = config_from_dict(raw)
    updates, steps = [], []
    original = FrozenMetricLoss.update

    def counting(self, real, restored):
        logs = original(self, real, restored)
        updates.append((self.augment.draws, logs["distance"]))
        return logs

    monkeypatch.setattr(FrozenMetricLoss, "update", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = load_metrics(cfg, "cpu")
        before = {k: v.clone() for k, v in metrics["ifqa"].state_dict().items()}
        train_setting(cfg, Setting("ifqa", 0.5, "constant", 0), prepare_data(cfg), device=torch.device("cpu"),
                      metrics=metrics, lpips=None, progress=False, on_step=lambda step, net: steps.append(step))
    assert steps == [0, 1, 2]
    assert len(updates) == 3 and all(draws == 2 and 0 < d <= 0.01 for draws, d in updates)
    assert all(torch.equal(v, before[k]) for k, v in metrics["ifqa"].state_dict().items())  # evaluation stays frozen

import pytest
import torch

from ifqa_loss import IFQALoss, LossComposer
from ifqa_loss.losses.composer import LinearWarmup, StepSchedule, build_schedule

from helpers import tiny_ifqa_metric


def test_schedules():
    warm = LinearWarmup(steps=100, start=50)
    assert [warm(s) for s in (0, 50, 100, 150, 400)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    step = StepSchedule(milestones=(10, 20), gamma=0.5)
    assert [step(s) for s in (0, 9, 10, 19, 20, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert build_schedule(None)(12345) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        build_schedule({"type": "cosine"})


def test_total_is_the_scheduled_weighted_sum_and_logs_are_detached():
    pred = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    ifqa = IFQALoss(metric=tiny_ifqa_metric())
    composer = LossComposer({"l1": (torch.nn.L1Loss(), 1.0),
                             "ifqa": (ifqa, 0.2, {"type": "linear_warmup", "steps": 10})})
    total, logs = composer(5, l1=(pred, target), ifqa=pred)
    expected = torch.nn.functional.l1_loss(pred, target) + 0.2 * 0.5 * ifqa(pred)
    torch.testing.assert_close(total, expected)
    assert logs["weight/ifqa"] == pytest.approx(0.1) and not logs["ifqa"].requires_grad
    torch.testing.assert_close(logs["total"], expected.detach())
    total.backward()
    assert pred.grad is not None


def test_zero_weight_term_is_skipped():
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return x.mean()

    composer = LossComposer({"a": (torch.nn.L1Loss(), 1.0), "spy": (Spy(), 1.0, {"type": "linear_warmup", "steps": 5})})
    x = torch.ones(1, 3, 4, 4)
    _, logs = composer(0, a=(x, x * 0), spy=x)
    assert calls == [] and "spy" not in logs and logs["weight/spy"] == 0.0


def test_built_from_a_yaml_file(tmp_path, ifqa_checkpoint):
    path = tmp_path / "losses.yml"
    path.write_text(
        "l1: {type: L1Loss, weight: 1.0}\n"
        f"ifqa: {{type: IFQALoss, weight: 0.05, checkpoint: '{ifqa_checkpoint}', input_range: [-1, 1],\n"
        "       schedule: {type: step, milestones: [1000], gamma: 0.1}}\n"
    )
    composer = LossComposer.from_yaml(path)
    assert isinstance(composer.terms["ifqa"], IFQALoss) and composer.weight_at("ifqa", 2000) == pytest.approx(0.005)
    assert list(composer.state_dict()) == []  # the frozen metric never enters checkpoints


def test_inputs_must_name_every_term():
    composer = LossComposer({"l1": (torch.nn.L1Loss(), 1.0)})
    with pytest.raises(ValueError, match="missing \\['l1'\\], unknown \\['l2'\\]"):
        composer(0, l2=torch.zeros(1))


def test_unknown_loss_type_is_refused():
    with pytest.raises(ValueError, match="unknown type 'SSIM'"):
        LossComposer.from_config({"x": {"type": "SSIM"}})

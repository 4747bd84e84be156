"""Reward fine-tuning: the reward rises on a fixed probe batch, state is small and exact to resume, bf16, monitor
seam, LoRA, the example script in process and under torchrun (two gloo processes)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from diffusers import DDIMScheduler  # noqa: E402

from ifqa_loss import IFQALoss  # noqa: E402
from ifqa_loss.diffusion.models import tiny_unet  # noqa: E402
from ifqa_loss.diffusion.reward import RewardFineTuner, add_lora  # noqa: E402

from helpers import tiny_ifqa_metric  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "integrations" / "diffusion" / "reward_finetune.py"


def batch(seed, n=2, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def make_tuner(*, lora=0, reward=None, **kwargs):
    unet = tiny_unet(in_channels=6, sample_size=16, seed=0)
    if lora:
        unet.requires_grad_(False)
        add_lora(unet, rank=lora)
    reward = reward or IFQALoss(metric=tiny_ifqa_metric(), input_range=(-1, 1))
    options = dict(reward=reward, fidelity_weight=0.1, k=1, num_inference_steps=2, lr=3e-3,
                   sample_shape=lambda lq: (lq.shape[0], 3, 16, 16), seed=0)
    options.update(kwargs)
    return RewardFineTuner(unet, DDIMScheduler(clip_sample=False), **options)


def test_reward_steps_raise_the_reward_on_a_fixed_probe_batch():
    judge = IFQALoss(metric=tiny_ifqa_metric(seed=7), input_range=(-1, 1))  # reported, never trained on
    tuner = make_tuner(k=2)
    probe = batch(100, n=4)
    before = tuner.evaluate(probe, {"reward": tuner.reward, "judge": judge})
    for step in range(6):
        tuner.step(batch(step))
    after = tuner.evaluate(probe, {"reward": tuner.reward, "judge": judge})
    print(f"probe reward loss {before['reward']:.4f} -> {after['reward']:.4f}; "
          f"judge {before['judge']:.4f} -> {after['judge']:.4f}")
    assert after["reward"] < before["reward"]


def test_state_holds_no_metric_weights_and_resumes_exactly(tmp_path):
    tuner = make_tuner()
    for step in range(2):
        tuner.step(batch(step))
    tuner.save(tmp_path / "state.pth")
    for step in range(2, 4):
        tuner.step(batch(step))
    expected = {n: p.detach().clone() for n, p in tuner.model.named_parameters()}

    state = torch.load(tmp_path / "state.pth", weights_only=True)
    metric_tensors = list(tuner.reward.metric.state_dict().values())
    assert set(state["model"]) == {n for n, _ in tuner.model.named_parameters()}
    assert not any(k.startswith("metric") or "metric." in k for k in state["model"])
    assert not any(t.shape == m.shape and torch.equal(t, m) for t in state["model"].values() for m in metric_tensors)

    resumed = make_tuner()
    resumed.load(tmp_path / "state.pth")
    assert resumed.step_count == 2
    for step in range(2, 4):
        resumed.step(batch(step))
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name


def test_lora_trains_only_the_adapters_and_saves_only_them():
    tuner = make_tuner(lora=2)
    base = {n: p.detach().clone() for n, p in tuner.model.named_parameters() if not p.requires_grad}
    for step in range(2):
        tuner.step(batch(step))
    assert all(torch.equal(p, base[n]) for n, p in tuner.model.named_parameters() if n in base)
    keys = set(tuner.state_dict()["model"])
    assert keys and all("lora_" in k for k in keys)
    with pytest.raises(ValueError, match="add_lora"):
        make_tuner().load_state_dict(tuner.state_dict())


def test_cpu_bf16_autocast_step():
    tuner = make_tuner(autocast_dtype=torch.bfloat16)
    first = {n: p.detach().clone() for n, p in tuner.model.named_parameters()}
    log = tuner.step(batch(0))
    assert all(torch.isfinite(torch.tensor(v)) for v in log.values())
    assert any(not torch.equal(p, first[n]) for n, p in tuner.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in tuner.model.parameters())


class RecordingMonitor:
    """Stands in for the metric-gaming monitor: sees restorations of its own probe, can stop the run."""

    def __init__(self):
        self.calls = []

    def step(self, step, restore):
        image = restore(batch(50))
        self.calls.append((step, tuple(image.shape), image.requires_grad))
        return {"judge_gap": 0.0, "stop": step >= 2}


def test_monitor_seam_is_called_and_can_stop():
    monitor = RecordingMonitor()
    tuner = make_tuner(monitor=monitor, monitor_every=1)
    logs = []
    while not tuner.should_stop:
        logs.append(tuner.step(batch(len(logs))))
    assert monitor.calls == [(1, (2, 3, 16, 16), False), (2, (2, 3, 16, 16), False)]
    assert logs[-1]["monitor/stop"] is True and "monitor/judge_gap" in logs[0]


def test_refusals():
    with pytest.raises(ValueError, match="k must be"):
        make_tuner(k=3)
    with pytest.raises(ValueError, match="no trainable"):
        RewardFineTuner(tiny_unet(in_channels=6).requires_grad_(False), DDIMScheduler(), reward=lambda x: x.mean())


def _script():
    spec = importlib.util.spec_from_file_location("reward_finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_script_end_to_end_refuses_overwrite_and_resumes(tmp_path, capsys):
    script = _script()
    args = ["--out", str(tmp_path), "--size", "16", "--batch-size", "2", "--inference-steps", "2", "--seed", "3"]
    assert script.main(args + ["--steps", "2", "--lora", "2"]) == 0
    assert script.main(args + ["--steps", "3", "--lora", "2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert script.main(args + ["--steps", "3", "--lora", "2", "--resume"]) == 0
    summary = json.loads((tmp_path / "summary_rank0.json").read_text())
    assert summary["step"] == 3 and len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


def test_torchrun_two_gloo_processes_stay_in_sync(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPT), "--out", str(tmp_path), "--steps", "2", "--size", "16", "--batch-size", "2",
               "--inference-steps", "2", "--k", "2"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too, not only the launcher
        proc.communicate()
        pytest.fail("torchrun did not finish within 240 s (rendezvous or a hung rank)")
    assert proc.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"summary_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["step"] == 2
    assert ranks[0]["trainable_checksum"] == ranks[1]["trainable_checksum"]  # different data, averaged gradients
    assert (tmp_path / "state.pth").exists()

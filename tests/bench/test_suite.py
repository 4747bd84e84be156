import copy
import json

import pytest
from PIL import Image

from ifqa_loss.bench import report as bench_report
from ifqa_loss.bench import suite
from ifqa_loss.bench.generator import RestorationGenerator
from ifqa_loss.bench.losses import measure_losses
from ifqa_loss.bench.timing import adaptive, interleaved, paired_ratio, ratio_text, summarize


def test_generator_restores_at_its_size():
    import torch

    gen = RestorationGenerator(out_size=32, channel_multiplier=1)
    assert gen(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def _tiny_config() -> suite.Config:
    return suite.Config(
        losses=("l1", "ifqa", "naive-ifqa"), variants=("fp32", "bf16"), batch_sizes=(1, 2), input_sizes=(64,),
        warmup=0, repeats=2, max_rounds=2, forward_repeats=1, goal_rounds=2, goal_batch=1, goal_size=64,
        generator_size=32, generator_batch=1, time_budget_s=1e9,  # rounds must not depend on the machine's load
        generator_losses=("ifqa",), ifqa_widths=(4, 8, 8, 16, 16),
    )


@pytest.fixture
def tiny_config():
    return _tiny_config()


@pytest.fixture(scope="module")
def tiny_report():
    """One tiny run, read by the tests below (each copies it before changing anything)."""
    return suite.run(_tiny_config(), log=lambda msg: None)


def test_tiny_run_produces_well_formed_markdown_json_and_png(tiny_report, tmp_path):
    report = copy.deepcopy(tiny_report)
    rows = report["losses"]
    assert {(r["loss"], r["variant"]) for r in rows} == {
        ("l1", "fp32"), ("ifqa", "fp32"), ("ifqa", "bf16"), ("naive-ifqa", "fp32"), ("naive-ifqa", "bf16")}
    assert len(rows) == 5 * 2  # two batch sizes each
    for r in rows:
        assert r["forward_backward_ms"]["n"] == 2 and r["forward_backward_ms"]["median"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["forward_backward_ms"]["median"] / 1e3))
    assert set(report["naive_comparison"]["ratios"]) == {"fp32", "bf16"}  # bf16 because the variants have it
    assert all(0 < r["low"] <= r["estimate"] <= r["high"] for r in report["naive_comparison"]["ratios"].values())
    assert [g["step"] for g in report["generator"]] == ["generator only", "+ ifqa"]
    assert report["generator"][0]["overhead_ratio"] == 1.0 and report["generator"][1]["ratio"]["floor"] == 1.0
    assert report["run"]["load_average_1min"]["max"] >= 0 and report["run"]["wall_s"] > 0
    saved = {(r["loss"], r["variant"], r["batch"]): r["saved_for_backward_mib"] for r in rows}
    # IFQALoss keeps fewer activations than the naive drop-in (fast network, no weight gradients)
    assert 0 < saved[("ifqa", "fp32", 2)] < saved[("naive-ifqa", "fp32", 2)]

    text = bench_report.markdown(report)
    table = [line for line in text.splitlines() if line.startswith("| ifqa | bf16 |")]
    assert len(table) == 2 and all(line.count("|") == 11 for line in table)
    assert "IFQALoss time / naive time" in text and "generator only" in text and "load average" in text
    assert all(r["peak_memory_mib"] >= 0 for r in report["generator"])

    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert json.loads(path.read_text())["environment"]["torch"]
    png = tmp_path / "plot.png"
    bench_report.plot(report, str(png))
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 600


def test_cli_runs_the_benchmark_and_writes_json(tmp_path, capsys, monkeypatch):
    from ifqa_loss.cli import main

    monkeypatch.setattr(suite, "default_config", lambda device: suite.Config(
        losses=("l1",), input_sizes=(32,), batch_sizes=(1,), warmup=0, repeats=1, ifqa_widths=(4, 8, 8, 16, 16),
        max_rounds=1, goal_size=32, goal_batch=1, goal_rounds=1, generator_size=32, generator_losses=()))
    out = tmp_path / "r.json"
    assert main(["bench", "--device", "cpu", "--json", str(out)]) == 0
    assert "| l1 | fp32 | 1 | 32 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["losses"][0]["loss"] == "l1"


def test_gfiqa_loss_is_timed_when_asked_for():
    from helpers import TINY_GFIQA

    cfg = suite.Config(losses=("gfiqa",), input_sizes=(48,), batch_sizes=(2,), warmup=0, repeats=1, max_rounds=1,
                       gfiqa_kwargs=dict(TINY_GFIQA))
    rows = measure_losses(cfg, log=lambda msg: None)
    assert [(r["loss"], r["batch"]) for r in rows] == [("gfiqa", 2)] and rows[0]["images_per_s"] > 0


def test_naive_comparison_times_bf16_only_when_the_variants_ask_for_it(tiny_config):
    from ifqa_loss.bench.losses import compare_with_naive

    tiny_config.variants = ("fp32",)  # the CPU default: emulated bf16 on a CPU is not a fast path
    result = compare_with_naive(tiny_config, log=lambda msg: None)
    assert set(result["ratios"]) == {"fp32"} and set(result["forward_backward_ms"]) == {"ifqa fp32", "naive fp32"}


def test_unknown_loss_is_refused(capsys):
    assert suite.main(["--device", "cpu", "--losses", "ssim"]) == 2
    assert "unknown loss" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        suite.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--repeats", "--warmup", "--generator-size", "--generator-batch", "--batch-sizes"):
        assert option in text
    assert len([line for line in text.splitlines() if line.strip().startswith("--")]) >= 14  # none bare


def test_cuda_defaults_sweep_gpu_sized_batches():
    cfg = suite.default_config("cuda")
    assert cfg.batch_sizes == (8, 64, 256) and cfg.goal_batch == 64
    assert (cfg.generator_size, cfg.generator_batch) == (512, 8)


def test_interleaved_timing_flags_a_noisy_contender():
    import time

    calls = iter([0.0, 0.0, 0.05, 0.0, 0.0])  # one slow call among fast ones
    result = interleaved({"jittery": lambda: time.sleep(next(calls)), "steady": lambda: None}, rounds=5, warmup=0)
    assert result["jittery"]["n"] == 5 and result["jittery"]["max"] >= 50
    assert summarize([10, 10, 10, 10])["noisy"] is False and summarize([10, 10, 30, 40])["noisy"] is True


def _sleeper(seconds):
    import time

    return lambda: time.sleep(seconds)


def _scripted(monkeypatch, **series):
    """Steps whose "timings" (ms) come from fixed series: adaptive() decisions without the machine's noise."""
    import itertools
    import time

    from ifqa_loss.bench import timing

    def timed_call(step):
        time.sleep(0.002)
        return step()

    monkeypatch.setattr(timing, "timed_call", timed_call)
    cycles = {name: itertools.cycle(values) for name, values in series.items()}
    return {name: (lambda it=it: next(it)) for name, it in cycles.items()}


def test_adaptive_rounds_stop_once_the_ratio_is_conclusive(monkeypatch):
    steps = _scripted(monkeypatch, slow=[20.0, 21.0, 19.0, 20.5], fast=[10.0, 10.5, 9.5, 10.0])
    out = adaptive(steps, ratios={"r": ("slow", "fast", 1.0)}, min_rounds=3, max_rounds=40, warmup=0)
    assert out["stopped"] == "conclusive" and out["rounds"] == 3
    assert out["ratios"]["r"]["low"] <= 2.0 <= out["ratios"]["r"]["high"]


def test_adaptive_rounds_stop_at_the_time_budget_and_say_so(monkeypatch):
    steps = _scripted(monkeypatch, a=[1.0, 30.0, 4.0, 20.0], b=[5.0])  # too noisy to become conclusive
    out = adaptive(steps, ratios={"a/b": ("a", "b", None)}, min_rounds=3, max_rounds=100000, warmup=0, budget_s=0.3)
    assert out["stopped"] == "block budget spent" and out["ratios"]["a/b"]["status"] == "wide"
    assert 3 <= out["rounds"] < 100000


def test_an_impossible_overhead_is_flagged_not_shown():
    # the step "with a loss" measured faster than without it: a measurement error
    r = paired_ratio([9.0, 9.1, 8.9, 9.0], [10.0, 10.1, 9.9, 10.0], floor=1.0)
    assert r["status"] == "impossible"
    text = ratio_text(r)
    assert text.startswith("not shown") and "measurement error" in text
    one_round = paired_ratio([9.0], [10.0], floor=1.0)  # no interval, still never shown as a result
    assert ratio_text(one_round).startswith("not shown") and "1 round" in ratio_text(one_round)
    within = paired_ratio([9.5, 10.6, 9.8, 10.2], [10.0, 10.0, 10.0, 10.0], floor=1.0)
    assert within["status"] != "impossible" and not ratio_text(within).startswith("0.")


def test_report_lists_inconclusive_figures_with_the_load(tiny_report):
    report = copy.deepcopy(tiny_report)
    report["generator"][1]["ratio"] = paired_ratio([9.0, 9.1, 8.9], [10.0, 10.0, 10.0], floor=1.0)
    text = bench_report.markdown(report)
    section = text.split("### Inconclusive figures")[1]
    assert "generator step + ifqa / generator only: inconclusive" in section and "load average" in section
    assert "not shown: measured 0.90x" in text


def test_default_cpu_config_is_budgeted_and_sweeps_two_batch_sizes():
    cfg = suite.default_config("cpu")
    assert cfg.time_budget_s <= 170 and len(cfg.batch_sizes) >= 2
    assert set(cfg.losses) <= {"l1", "lpips-alex", "ifqa", "naive-ifqa"}  # heavy and newer rows are opt-in


def test_a_spent_budget_skips_the_generator_step_and_says_so(tiny_config):
    tiny_config.variants = ("fp32",)
    tiny_config.time_budget_s = 0.0
    report = suite.run(tiny_config, log=lambda msg: None)
    assert "generator" not in report and "time budget was spent" in report["generator_skipped"]
    assert all(r["rounds"] == 1 for r in report["losses"])  # one round each once the time is spent
    text = bench_report.markdown(report)
    assert "not measured: the 0 s time budget" in text and "inconclusive" in text

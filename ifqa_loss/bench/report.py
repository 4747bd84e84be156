"""The benchmark report: environment, a Markdown summary and a plot (batch size on x, spread as error bars)."""
from __future__ import annotations

import datetime
import os
import platform
import sys

import torch

from .timing import inconclusive_reasons, ratio_text


def environment(device: str) -> dict:
    """Where and with what the numbers were measured (portable: no /proc reads)."""
    import psutil

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "logical_cpus": psutil.cpu_count(),
        "command": " ".join(sys.argv),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = os.getloadavg()[0]  # a shared machine makes CPU numbers noisy
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine() or "CPU"
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def _ms(summary: dict) -> str:
    return f"{summary['median']:.1f} ({summary['min']:.1f}–{summary['max']:.1f})"


def load_text(report: dict) -> str:
    """The load average seen during the run, for the report and every inconclusive figure."""
    run = report.get("run", {}).get("load_average_1min")
    if not run or run.get("start") is None:
        return "load average not available"
    return f"1-min load average {run['start']:.1f} at start, up to {max(run['max'], run['start']):.1f} during the run"


def headline_ratios(report: dict) -> dict[str, tuple[dict, int, str]]:
    """``{name: (paired ratio, rounds, why the rounds stopped)}`` of every headline figure in the report."""
    out = {}
    naive = report.get("naive_comparison")
    if naive:
        for variant, r in naive["ratios"].items():
            out[f"IFQALoss {variant} / naive drop-in"] = (r, naive["rounds"], naive.get("stopped", ""))
    for row in report.get("generator") or []:
        if row.get("ratio"):
            out[f"generator step {row['step']} / generator only"] = (row["ratio"], row["rounds"], row["stopped"])
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    run = report.get("run", {})
    wall = f" Wall time {run['wall_s']:.0f} s (budget {run['time_budget_s']:.0f} s)." if run else ""
    lines = [
        f"## Benchmark — {env['device_name']} ({env['device']}), torch {env['torch']}, {env['date']}",
        "",
        f"Command: `{env['command']}`. {env['threads']} threads, {load_text(report)}.{wall} Networks have random "
        "weights (timing does not depend on them). Times: median (min–max) of the timed runs, taken round-robin "
        "across contenders; ratios: geometric mean of the per-round ratios with a 95% t-interval. Peak mem: the "
        "CUDA allocator's peak, or sampled process RSS on CPU (coarse); saved MiB: the tensors autograd keeps for "
        "the backward (the same on every device).",
        "",
        "### Loss cost (forward, and forward + backward to the input)",
        "",
        "| loss | variant | batch | input | forward ms | fwd+bwd ms | images/s | peak mem MiB | saved MiB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["losses"]:
        lines.append(f"| {r['loss']} | {r['variant']} | {r['batch']} | {r['input']} | {_ms(r['forward_ms'])} | "
                     f"{_ms(r['forward_backward_ms'])} | {r['images_per_s']:.1f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['saved_for_backward_mib']:.0f} | {r['note']} |")
    naive = report.get("naive_comparison")
    if naive:
        lines += ["", f"### IFQALoss vs the naive drop-in (batch {naive['batch']}, {naive['input']} input, "
                      f"{naive['rounds']} paired rounds)", "", "| contender | fwd+bwd ms |", "|---|---:|"]
        lines += [f"| {label} | {_ms(s)} |" for label, s in naive["forward_backward_ms"].items()]
        lines += ["", "IFQALoss time / naive time: " + ", ".join(
            f"{v} **{ratio_text(r)}** ({naive['images_per_s'][v]:.1f} images/s)" for v, r in naive["ratios"].items())
            + "."]
    if report.get("generator"):
        first = report["generator"][0]
        lines += ["", f"### Overhead on a GFPGANv1Clean-sized generator step ({first['size']}px, "
                      f"batch {first['batch']}, fp32, loss weight 0.1, {first['rounds']} paired rounds)", "",
                  "| step | ms | ratio to generator only | peak mem MiB |", "|---|---:|---|---:|"]
        lines += [f"| {r['step']} | {_ms(r['step_ms'])} | {ratio_text(r['ratio']) if r.get('ratio') else '1.00'} | "
                  f"{r['peak_memory_mib']:.0f} |" for r in report["generator"]]
    if report.get("generator_skipped"):
        lines += ["", "### Overhead on a generator step", "", f"{report['generator_skipped']} ({load_text(report)})."]
    headlines = headline_ratios(report)
    reasons = inconclusive_reasons({k: v[0] for k, v in headlines.items()},
                                   {k: (v[1], v[2]) for k, v in headlines.items()}, load_text(report))
    if reasons:
        lines += ["", "### Inconclusive figures", ""] + [f"- {w}" for w in reasons]
    elif headlines:
        lines += ["", f"All {len(headlines)} headline ratios are conclusive (95% interval within "
                      f"±{next(iter(headlines.values()))[0]['target']:.0%})."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    """PNG: images/s and peak memory against batch size (error bars: min–max), generator-step overhead bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_mem, ax_ov) = plt.subplots(1, 3, figsize=(16, 4.5))
    series: dict[str, list[dict]] = {}
    for r in report["losses"]:
        series.setdefault(f"{r['loss']} {r['variant']} @{r['input']}", []).append(r)
    for label, rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["batch"])
        batches = [r["batch"] for r in rows]
        rate = [r["images_per_s"] for r in rows]
        # images/s from the slowest and fastest timed run: the spread as asymmetric error bars
        low = [v - r["batch"] / (r["forward_backward_ms"]["max"] / 1e3) for v, r in zip(rate, rows, strict=False)]
        high = [r["batch"] / (r["forward_backward_ms"]["min"] / 1e3) - v for v, r in zip(rate, rows, strict=False)]
        ax_tp.errorbar(batches, rate, yerr=[low, high], marker="o", capsize=3, label=label)
        ax_mem.plot(batches, [r["peak_memory_mib"] for r in rows], marker="o", label=label)
    batches = sorted({r["batch"] for r in report["losses"]})
    for ax in (ax_tp, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    sweep = f"{len(batches)} batch sizes" if len(batches) > 1 else "one batch size: no sweep"
    ax_tp.set(xlabel="batch size", ylabel="images/s (forward + backward)", yscale="log",
              title=f"Loss throughput ({sweep})")
    ax_tp.legend(fontsize=7)
    ax_mem.set(xlabel="batch size", ylabel="peak memory MiB (fwd + bwd)", title="Loss peak memory")
    gen = report.get("generator") or []
    labels, values, errors, colors, hatches = [], [], [[], []], [], []
    for r in gen:
        ratio = r.get("ratio") or {"estimate": 1.0, "low": 1.0, "high": 1.0, "status": "conclusive"}
        impossible = ratio["status"] == "impossible"
        value = 0.0 if impossible else ratio["estimate"]  # an impossible figure is not drawn as a result
        labels.append(f"{r['step']}\n{r['peak_memory_mib']:.0f} MiB" + ("\nmeasurement error" if impossible else
                                                                       "\ninconclusive" if ratio["status"] == "wide"
                                                                       else ""))
        values.append(value)
        errors[0].append(0.0 if impossible else value - ratio["low"])
        errors[1].append(0.0 if impossible else ratio["high"] - value)
        colors.append("tab:orange" if ratio["status"] == "conclusive" else "lightgray")
        hatches.append("" if ratio["status"] == "conclusive" else "//")
    bars = ax_ov.bar(labels, values, yerr=errors, capsize=3, color=colors)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    ax_ov.axhline(1.0, color="gray", lw=0.8)
    if values:  # an interval from two noisy rounds can reach 1e5: keep the bars readable, the interval clipped
        ax_ov.set_ylim(0, max(2.0, 1.5 * max(values)))
    else:
        import textwrap

        ax_ov.set_xticks([])
        ax_ov.set_yticks([])
        ax_ov.text(0.5, 0.5, textwrap.fill(report.get("generator_skipped", "not measured"), 45), ha="center",
                   va="center", fontsize=8, transform=ax_ov.transAxes)
    ax_ov.set(xlabel="training step (peak memory below)", ylabel="step time / generator-only step (95% CI)",
              title="Overhead on a generator step")
    env = report["environment"]
    fig.suptitle(f"{env['device_name']} — torch {env['torch']} — {env['date']} — {load_text(report)} — "
                 "RANDOM WEIGHTS (timing does not depend on them)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

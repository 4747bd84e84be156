"""The benchmark report: environment, a Markdown summary and a plot (batch size on x, spread as error bars)."""
from __future__ import annotations

import datetime
import os
import platform
import sys

import torch

from .timing import noise_warnings


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


def markdown(report: dict) -> str:
    env = report["environment"]
    load = f", load average {env['load_average_1min']:.1f}" if "load_average_1min" in env else ""
    lines = [
        f"## Benchmark — {env['device_name']} ({env['device']}), torch {env['torch']}, {env['date']}",
        "",
        f"Command: `{env['command']}`. {env['threads']} threads{load}. Times: median (min–max) of the "
        "timed runs, taken round-robin across contenders. Peak mem: the CUDA allocator's peak, or sampled "
        "process RSS on CPU (coarse); saved MiB: the tensors autograd keeps for the backward (the same on "
        "every device).",
        "",
        "### Loss cost (forward, and forward + backward to the input)",
        "",
        "| loss | variant | batch | input | forward ms | fwd+bwd ms | images/s | peak mem MiB | saved MiB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    noisy = {}
    for r in report["losses"]:
        lines.append(f"| {r['loss']} | {r['variant']} | {r['batch']} | {r['input']} | {_ms(r['forward_ms'])} | "
                     f"{_ms(r['forward_backward_ms'])} | {r['images_per_s']:.1f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['saved_for_backward_mib']:.0f} | {r['note']} |")
        noisy[f"{r['loss']} {r['variant']} batch {r['batch']} {r['input']}px"] = r["forward_backward_ms"]
    naive = report.get("naive_comparison")
    if naive:
        lines += ["", f"### IFQALoss vs the naive drop-in (batch {naive['batch']}, {naive['input']} input, "
                      f"{naive['rounds']} rounds)", "", "| contender | fwd+bwd ms |", "|---|---:|"]
        lines += [f"| {label} | {_ms(s)} |" for label, s in naive["forward_backward_ms"].items()]
        lines += ["", "IFQALoss time / naive time: " + ", ".join(
            f"{v} **{r:.2f}x** ({naive['images_per_s'][v]:.1f} images/s)" for v, r in naive["ratios"].items()) + "."]
        noisy.update(naive["forward_backward_ms"])
    if report.get("generator"):
        first = report["generator"][0]
        lines += ["", f"### Overhead on a GFPGANv1Clean-sized generator step ({first['size']}px, "
                      f"batch {first['batch']}, fp32, loss weight 0.1)", "",
                  "| step | ms | ratio to generator only | peak mem MiB |", "|---|---:|---:|---:|"]
        lines += [f"| {r['step']} | {_ms(r['step_ms'])} | {r['overhead_ratio']:.2f} | {r['peak_memory_mib']:.0f} |"
                  for r in report["generator"]]
        noisy.update({f"generator {r['step']}": r["step_ms"] for r in report["generator"]})
    warnings = noise_warnings(noisy)
    if warnings:
        lines += ["", "### Warning: noisy timings", ""] + [f"- {w}" for w in warnings]
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
    for ax in (ax_tp, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in report["losses"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax_tp.set(xlabel="batch size", ylabel="images/s (forward + backward)", yscale="log", title="Loss throughput")
    ax_tp.legend(fontsize=7)
    ax_mem.set(xlabel="batch size", ylabel="peak memory MiB (fwd + bwd)", title="Loss peak memory")
    gen = report.get("generator") or []
    base = gen[0]["step_ms"]["median"] if gen else 1.0
    ratios = [r["overhead_ratio"] for r in gen]
    spread = [[v - r["step_ms"]["min"] / base for v, r in zip(ratios, gen, strict=False)],
              [r["step_ms"]["max"] / base - v for v, r in zip(ratios, gen, strict=False)]]
    ax_ov.bar([f"{r['step']}\n{r['peak_memory_mib']:.0f} MiB" for r in gen], ratios, yerr=spread, capsize=3,
              color="tab:orange")
    ax_ov.axhline(1.0, color="gray", lw=0.8)
    ax_ov.set(ylabel="step time / generator-only step", title="Overhead on a generator step (peak memory below)")
    env = report["environment"]
    fig.suptitle(f"{env['device_name']} — torch {env['torch']} — {env['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

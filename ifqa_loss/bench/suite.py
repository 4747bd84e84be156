"""``ifqa-loss bench``: what each face-quality loss costs, alone and on a restoration generator's training step.

Run ``ifqa-loss bench`` or ``python -m ifqa_loss.bench.suite`` (``--help`` for options). Timing does not
depend on weight values, so every network here has random weights and no checkpoint is needed.
Three measurements (modules in this package):

* **losses** (losses.py): per loss, variant and batch size: forward ms, forward + backward-to-input ms,
  images/s and peak memory (memory.py).
* **IFQALoss vs the naive drop-in** (losses.py): the official module used as is (fp32, NCHW,
  parameters requiring grad), round-robin with IFQALoss fp32 and bf16.
* **generator step** (generator.py): a GFPGANv1Clean-sized generator's training step with and without each loss.

All timings are round-robin rounds (timing.py) that continue until each headline ratio (IFQALoss / naive
drop-in, each loss's generator-step overhead) has a 95 % interval within ``--ratio-target`` or the run's
``--time-budget`` is spent; a tqdm bar on stderr shows the time used and left. The report (report.py) lists
the ratios that stayed inconclusive and why, never prints a physically impossible one, and states the load
average seen during the run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from .generator import measure_generator_step
from .losses import ALL_LOSSES, ALL_VARIANTS, applicable, compare_with_naive, measure_losses, naive_comparison_from_rows
from .report import environment, markdown, plot
from .timing import Budget


@dataclass
class Config:
    device: str = "cpu"
    # lpips-vgg costs ~14 s per fwd+bwd at 512 on a 2-core CPU: CUDA defaults and --full only.
    losses: tuple[str, ...] = ("l1", "lpips-alex", "ifqa", "naive-ifqa")
    variants: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1, 2)
    input_sizes: tuple[int, ...] = (256,)
    # CPU defaults fit a 3-minute budget on 2 cores: one IFQA fwd+bwd at batch 2 takes ~2 s there, a generator
    # step at 128 px ~4 s; rounds stop as soon as the headline ratios are conclusive.
    warmup: int = 1  # untimed calls per contender; the peak-memory call counts as the first
    repeats: int = 3  # minimum timed rounds
    max_rounds: int = 30
    forward_repeats: int = 2
    ratio_target: float = 0.10
    time_budget_s: float = 165.0  # the whole run, imports and network builds included
    goal_rounds: int = 5
    goal_batch: int = 2
    goal_size: int = 256
    generator_size: int = 128
    generator_batch: int = 1
    generator_losses: tuple[str, ...] = ("ifqa", "naive-ifqa")
    ifqa_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)  # tests shrink these
    vit_dims: dict = field(default_factory=dict)  # IFQAViT overrides; tests shrink these
    gfiqa_kwargs: dict = field(default_factory=dict)  # GFIQA overrides; tests shrink these


def default_config(device: str) -> Config:
    if device == "cpu":
        return Config()
    # GPU-sized: a batch sweep at 256 (IFQA's input size), the naive comparison at batch 64,
    # the generator step at 512 with batch 8 (GFPGANv1Clean training).
    return Config(device=device, losses=("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa"),
                  variants=("fp32", "bf16"), batch_sizes=(8, 64, 256), input_sizes=(256,), warmup=3, repeats=10,
                  forward_repeats=10, time_budget_s=600.0, max_rounds=100, goal_rounds=10, goal_batch=64,
                  generator_size=512, generator_batch=8,
                  generator_losses=("l1", "lpips-vgg", "ifqa", "naive-ifqa"))


def full_config(device: str) -> Config:
    cuda = device != "cpu"
    variants = ALL_VARIANTS if cuda else tuple(v for v in ALL_VARIANTS if v != "fp16")  # CPU fp16 is emulated
    return Config(device=device, losses=ALL_LOSSES, variants=variants,
                  batch_sizes=(8, 64, 256) if cuda else (1, 2, 4), input_sizes=(256, 512), warmup=3 if cuda else 1,
                  repeats=10 if cuda else 5, forward_repeats=5, time_budget_s=3600.0, goal_rounds=10 if cuda else 5,
                  goal_batch=64 if cuda else 2,
                  generator_size=512, generator_batch=8 if cuda else 1,
                  generator_losses=("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa"))


def run(cfg: Config, log=print, naive_comparison: bool = True, generator: bool = True,
        progress: bool = False, start: float | None = None) -> dict:
    """Measure ``cfg``; blocks share ``cfg.time_budget_s`` (counted from ``start``, default now) by weight."""
    report = {"environment": environment(cfg.device), "config": asdict(cfg)}
    bar = tqdm(total=int(cfg.time_budget_s), unit="s", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {bar} {n_fmt}/{total_fmt} s of the budget [{elapsed} used, ~{remaining} left]"
               ) if progress else None
    budget = Budget(cfg.time_budget_s, progress=bar)
    if start is not None:
        budget.start = start
    variants = [v for v in cfg.variants if any(applicable(name, v) for name in cfg.losses)]
    in_sweep = ("bf16" not in cfg.variants and {"ifqa", "naive-ifqa"} <= set(cfg.losses)
                and cfg.goal_batch in cfg.batch_sizes and cfg.goal_size in cfg.input_sizes)
    # weights of the blocks still to run: one per loss block, the naive comparison 1, the generator step 3
    plan = {"losses": len(variants) * len(cfg.batch_sizes) * len(cfg.input_sizes),
            "naive": 1 if naive_comparison and not in_sweep else 0, "generator": 3 if generator else 0}

    def share(block: str):
        def seconds() -> float:  # this block's part of what is left, by weight among the blocks still to run
            weight = 1 if block == "losses" else plan[block]
            left_weight = sum(plan.values())
            return budget.left() * weight / max(1, left_weight)
        return seconds

    try:
        log(f"losses on {cfg.device}:")
        loss_seconds = _counting(share("losses"), plan, "losses")
        report["losses"] = measure_losses(cfg, log, budget=budget, block_seconds=loss_seconds)
        plan["losses"] = 0
        if naive_comparison:
            derived = naive_comparison_from_rows(cfg, report["losses"])
            if derived is None:
                log("IFQALoss vs the naive drop-in:")
                derived = compare_with_naive(cfg, log, budget=budget, block_seconds=share("naive"))
            report["naive_comparison"] = derived
        plan["naive"] = 0
        if generator and budget.left() <= 0:
            report["generator_skipped"] = (f"not measured: the {cfg.time_budget_s:.0f} s time budget was spent before "
                                           "the generator step (each of its calls takes several loss calls' time); "
                                           "re-run on a quieter machine or with a larger --time-budget")
            log(f"generator training step: {report['generator_skipped']}")
        elif generator:
            log("generator training step, alone and with each loss:")
            report["generator"] = measure_generator_step(cfg, log, budget=budget, block_seconds=share("generator"))
    finally:
        if bar is not None:
            budget.tick("done")
            bar.close()
    start_load = report["environment"].get("load_average_1min")
    loads = budget.loads + ([start_load] if start_load is not None else []) or [float("nan")]
    report["run"] = {"wall_s": budget.elapsed(), "time_budget_s": cfg.time_budget_s,
                     "load_average_1min": {"start": start_load, "max": max(loads),
                                           "end": budget.loads[-1] if budget.loads else start_load}}
    return report


def idle_cores() -> int:
    """Threads to use: ``OMP_NUM_THREADS`` if set, else logical CPUs minus the rounded 1-min load (at least 1).

    Example:
        >>> 1 <= idle_cores() <= (os.cpu_count() or 1)
        True
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - round(load)))


def _counting(seconds, plan: dict, key: str):
    """``seconds`` for one block of ``key``, then one block fewer left in ``plan``."""
    def once() -> float:
        value = seconds()
        plan[key] = max(0, plan[key] - 1)
        return value
    return once


def _csv(kind):
    return lambda text: tuple(kind(v) for v in text.split(",") if v)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifqa-loss bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda[:N] (default: cuda when visible); CUDA defaults sweep batches 8/64/256")
    parser.add_argument("--full", action="store_true", help="sweep every loss, variant, batch and size (slow)")
    parser.add_argument("--losses", type=_csv(str), help=f"comma list from {','.join(ALL_LOSSES)}")
    parser.add_argument("--variants", type=_csv(str), help=f"comma list from {','.join(ALL_VARIANTS)}")
    parser.add_argument("--batch-sizes", type=_csv(int), help="comma list of batch sizes for the loss sweep")
    parser.add_argument("--input-sizes", type=_csv(int), help="comma list of square input sizes (pixels)")
    parser.add_argument("--repeats", type=int,
                        help="minimum timed rounds per measurement, round-robin across contenders (default 3 CPU, "
                             "10 CUDA); more are added until the headline ratios are conclusive")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="wall-clock budget of the whole run (default 165 CPU, 600 CUDA); blocks stop adding "
                             "rounds when their share is spent and the report says which ratios stayed inconclusive")
    parser.add_argument("--ratio-target", type=float, metavar="FRACTION",
                        help="a headline ratio is conclusive when its 95%% interval is within this relative "
                             "distance of the estimate (default 0.10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--threads", type=int,
                        help="CPU threads (default: the idle cores seen at start — logical CPUs minus the rounded "
                             "1-min load average, at least 1 — unless OMP_NUM_THREADS is set: on a busy machine more "
                             "threads than idle cores make every step several times slower)")
    parser.add_argument("--warmup", type=int, help="untimed runs before timing (default 1 CPU, 3 CUDA)")
    parser.add_argument("--generator-size", type=int, help="generator step image size (default 256 CPU, 512 CUDA)")
    parser.add_argument("--generator-batch", type=int, help="generator step batch size (default 1 CPU, 8 CUDA)")
    parser.add_argument("--no-naive-comparison", action="store_true",
                        help="skip IFQALoss vs the naive drop-in of the official module")
    parser.add_argument("--no-generator", action="store_true", help="skip the generator training-step overhead")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG: throughput and peak memory vs batch size, generator-step overhead")
    return parser


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    cfg = full_config(args.device) if args.full else default_config(args.device)
    overrides = {"losses": args.losses, "variants": args.variants, "batch_sizes": args.batch_sizes,
                 "input_sizes": args.input_sizes, "repeats": args.repeats, "warmup": args.warmup,
                 "generator_size": args.generator_size, "generator_batch": args.generator_batch,
                 "time_budget_s": args.time_budget, "ratio_target": args.ratio_target}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    unknown = [name for name in cfg.losses if name not in ALL_LOSSES] + [
        v for v in cfg.variants if v not in ALL_VARIANTS]
    if unknown:
        print(f"error: unknown loss/variant {unknown}; losses: {ALL_LOSSES}; variants: {ALL_VARIANTS}", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    if args.device == "cpu" or args.threads:
        torch.set_num_threads(args.threads or idle_cores())
    try:  # called in-process (tests, notebooks): the caller's thread count comes back afterwards
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # third-party deprecation notes stay out of the report
            report = run(cfg, log=lambda msg: tqdm.write(msg, file=sys.stderr),  # above the progress bar
                         naive_comparison=not args.no_naive_comparison, generator=not args.no_generator,
                         progress=not args.no_progress, start=start)
    finally:
        torch.set_num_threads(threads_before)
    sys.stdout.write(markdown(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

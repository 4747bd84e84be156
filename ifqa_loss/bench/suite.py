"""``ifqa-loss bench``: what each face-quality loss costs, alone and on a restoration generator's training step.

Run ``ifqa-loss bench`` or ``python -m ifqa_loss.bench.suite`` (``--help`` for options). Timing does not
depend on weight values, so every network here has random weights and no checkpoint is needed.
Three measurements (modules in this package):

* **losses** (losses.py): per loss, variant and batch size: forward ms, forward + backward-to-input ms,
  images/s and peak memory (memory.py).
* **IFQALoss vs the naive drop-in** (losses.py): the official module used as is (fp32, NCHW,
  parameters requiring grad), round-robin with IFQALoss fp32 and bf16.
* **generator step** (generator.py): a GFPGANv1Clean-sized generator's training step with and without each loss.

All timings are round-robin repeats via ``torch.utils.benchmark`` (timing.py); the report
(report.py) gives the spread and warns when it is too wide to conclude.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field

import torch

from .generator import measure_generator_step
from .losses import ALL_LOSSES, ALL_VARIANTS, compare_with_naive, measure_losses
from .report import environment, markdown, plot


@dataclass
class Config:
    device: str = "cpu"
    # lpips-vgg costs ~14 s per fwd+bwd at 512 on a 2-core CPU: CUDA defaults and --full only.
    losses: tuple[str, ...] = ("l1", "lpips-alex", "ifqa", "naive-ifqa")
    variants: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (2,)
    input_sizes: tuple[int, ...] = (256,)
    # CPU defaults finish in about 5 minutes on 2 cores: one IFQA fwd+bwd at batch 2 takes ~2 s there.
    warmup: int = 1
    repeats: int = 3
    goal_rounds: int = 5
    goal_batch: int = 2
    goal_size: int = 256
    generator_size: int = 256
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
                  goal_rounds=10, goal_batch=64, generator_size=512, generator_batch=8,
                  generator_losses=("l1", "lpips-vgg", "ifqa", "naive-ifqa"))


def full_config(device: str) -> Config:
    cuda = device != "cpu"
    variants = ALL_VARIANTS if cuda else tuple(v for v in ALL_VARIANTS if v != "fp16")  # CPU fp16 is emulated
    return Config(device=device, losses=ALL_LOSSES, variants=variants,
                  batch_sizes=(8, 64, 256) if cuda else (1, 2, 4), input_sizes=(256, 512), warmup=3 if cuda else 1,
                  repeats=10 if cuda else 5, goal_rounds=10 if cuda else 5, goal_batch=64 if cuda else 2,
                  generator_size=512, generator_batch=8 if cuda else 1,
                  generator_losses=("l1", "lpips-alex", "lpips-vgg", "ifqa", "naive-ifqa"))


def run(cfg: Config, log=print, naive_comparison: bool = True, generator: bool = True) -> dict:
    report = {"environment": environment(cfg.device), "config": asdict(cfg)}
    log(f"losses on {cfg.device}:")
    report["losses"] = measure_losses(cfg, log)
    if naive_comparison:
        log("IFQALoss vs the naive drop-in:")
        report["naive_comparison"] = compare_with_naive(cfg, log)
    if generator:
        log("generator training step, alone and with each loss:")
        report["generator"] = measure_generator_step(cfg, log)
    return report


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
                        help="timed runs per measurement, round-robin across contenders (default 3 CPU, 10 CUDA)")
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
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    cfg = full_config(args.device) if args.full else default_config(args.device)
    overrides = {"losses": args.losses, "variants": args.variants, "batch_sizes": args.batch_sizes,
                 "input_sizes": args.input_sizes, "repeats": args.repeats, "warmup": args.warmup,
                 "generator_size": args.generator_size, "generator_batch": args.generator_batch}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    unknown = [name for name in cfg.losses if name not in ALL_LOSSES] + [
        v for v in cfg.variants if v not in ALL_VARIANTS]
    if unknown:
        print(f"error: unknown loss/variant {unknown}; losses: {ALL_LOSSES}; variants: {ALL_VARIANTS}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # third-party deprecation notes stay out of the report
        report = run(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                     naive_comparison=not args.no_naive_comparison, generator=not args.no_generator)
    sys.stdout.write(markdown(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ifqa-loss bench``: gradient overhead and throughput of every loss (options parsed by ``ifqa_loss.bench``)."""
from __future__ import annotations

import argparse

from .common import fail


def run_bench(args: argparse.Namespace) -> int:
    try:
        from ..bench.overhead import main as bench_main
    except ImportError as exc:
        return fail(f"the benchmarks need extra packages ({exc}): pip install 'ifqa-loss[bench]'")
    return bench_main(args.extra_args)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", add_help=False, help="time every loss and its generator-step overhead "
                                   "(no checkpoint needed; 'ifqa-loss bench --help' for options)")
    parser.set_defaults(func=run_bench, passthrough=True)

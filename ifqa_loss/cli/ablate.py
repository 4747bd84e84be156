"""``ifqa-loss ablate``: run a loss-weight sweep (built in or your own command); ``ablate report`` merges shards."""
from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_OK, fail


def _errors():
    from ..ablation.config import SweepConfigError
    from ..ablation.evaluate import LPIPSBackboneMissing
    from ..ablation.external import ExternalCommandError
    from ..weights import CheckpointError

    return SweepConfigError, ExternalCommandError, LPIPSBackboneMissing, CheckpointError, OSError, ImportError


def ablate(args: argparse.Namespace) -> int:
    from ..ablation import load_config, run_sweep
    from ..ablation.config import parse_shard

    if not args.config:
        return fail("ablate needs --config SWEEP.yaml (see integrations/ablation/sweep_tiny.yaml), "
                    "or `ablate report RUN_DIR` to merge finished shards")
    try:
        cfg = load_config(args.config)
        shard = parse_shard(args.shard) if args.shard else None
        out = args.out or f"runs/{cfg.name}"
        result = run_sweep(cfg, out, shard=shard, progress=not args.quiet,
                           log=lambda msg: print(msg, file=sys.stderr))
    except _errors() as exc:
        return fail(str(exc))
    print(json.dumps({"run_dir": out, **result}, indent=2))
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    from ..ablation import write_report

    try:
        path = write_report(args.run_dir, args.shards, require_complete=not args.partial)
    except _errors() as exc:
        return fail(str(exc))
    print(path.read_text())
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="loss-weight sweep: train/evaluate every weight x schedule x seed, tables and plots",
        description="Run the sweep in --config into --out (resumable; --shard i/n runs one share for array jobs). "
                    "`ifqa-loss ablate report RUN_DIR [SHARD_DIR ...]` writes the tables once all shards are done.")
    parser.add_argument("--config", help="sweep YAML file (see integrations/ablation/sweep_tiny.yaml)")
    parser.add_argument("--out", help="run folder (default runs/<name>); rerunning resumes it, a sweep file with "
                        "more seeds/weights extends it")
    parser.add_argument("--shard", help="i/n: run only share i of n (0-based), e.g. "
                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=ablate)
    sub = parser.add_subparsers(dest="ablate_command")
    rep = sub.add_parser("report", help="merge finished settings (shards) into results.csv/json/md, plots, samples")
    rep.add_argument("run_dir", help="run folder (the report is written here)")
    rep.add_argument("shards", nargs="*", help="more run folders to merge (shards run without a shared disk)")
    rep.add_argument("--partial", action="store_true", help="report the finished settings even if some are missing")
    rep.set_defaults(func=report)

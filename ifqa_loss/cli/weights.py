"""``ifqa-loss weights import|list``: install verified checkpoints into the weights cache and list them."""
from __future__ import annotations

import argparse

from .common import EXIT_OK, fail, printable


def import_weights(args: argparse.Namespace) -> int:
    from ..weights import CheckpointError, import_checkpoint

    try:
        entry = import_checkpoint(args.path, metric=args.metric, sha256=args.sha256)
    except (CheckpointError, ValueError) as exc:
        return fail(str(exc))
    pinned = ("  provenance: sha256 matches the --sha256 you pinned" if args.sha256 else
              "  NOT checked: provenance (a file of the right layout with other values is accepted); compare the\n"
              "  source sha256 with the one the authors publish, or pin it with --sha256")
    print(f"imported {entry['metric']}: {printable(args.path)}\n  source sha256 {entry['source_sha256']}\n"
          f"  stored as {entry['file']} (sha256 {entry['sha256']}, checked on every load)\n"
          f"  checked: layout ({entry['num_tensors']} tensors: names, shapes, dtypes, finite values, config)\n"
          + pinned)
    return EXIT_OK


def list_weights(args: argparse.Namespace) -> int:
    from ..weights import CheckpointError, cache_dir, installed

    try:
        rows = installed()
    except CheckpointError as exc:
        return fail(str(exc))
    print(f"weights folder: {cache_dir()}")
    for row in rows:
        state = row["path"] if row["installed"] else "not installed (ifqa-loss weights import PATH)"
        print(f"  {row['metric']:<14} {state}" + (f"  sha256 {row['sha256'][:16]}…" if row["sha256"] else ""))
    return EXIT_OK


def register(subparsers) -> None:
    from ..registry import METRICS

    parser = subparsers.add_parser("weights", help="install and list checkpoints")
    actions = parser.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="check a downloaded checkpoint's layout and store a safetensors copy")
    imp.add_argument("path", help="the downloaded file, e.g. ~/Downloads/IFQA_Metric.pth")
    imp.add_argument("--metric", choices=sorted(METRICS), help="default: identified from the file")
    imp.add_argument("--sha256", metavar="HEX", help="refuse the file unless its sha256 is this (pins provenance)")
    imp.set_defaults(func=import_weights)
    lst = actions.add_parser("list", help="show installed checkpoints")
    lst.set_defaults(func=list_weights)

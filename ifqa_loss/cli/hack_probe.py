"""``ifqa-loss hack-probe``: how far can one metric be gamed, and do other metrics notice? (docs/hacking.md)"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from .common import EXIT_OK, default_device, device_argument, fail, printable


def _read_folder(folder: str, what: str) -> dict[str, object]:
    """``{relative path without suffix: (3,H,W) image}`` of every image under ``folder``."""
    from ..imageio import list_images, read_image

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{what} {printable(folder)}: no such folder; pass a folder of images")
    paths, problems = list_images([root])
    if problems:
        raise ValueError(f"{what} {printable(folder)}: {problems[0]}")
    if not paths:
        raise ValueError(f"{what} {printable(folder)} holds no image (PNG, JPEG, ...); pass a folder of images")
    return {str(p.relative_to(root).with_suffix("")): read_image(p) for p in paths}


def _lpips(device):
    """LPIPS-alex when its torchvision backbone is installed, else ``(None, why)`` (nothing is downloaded)."""
    from ..ablation.evaluate import LPIPSBackboneMissing, load_lpips

    try:
        return load_lpips(device=device), "LPIPS-alex (lpips package, torchvision AlexNet backbone)"
    except LPIPSBackboneMissing as exc:
        return None, f"not measured: {exc}"


def _write_json(path: str, report: dict) -> None:
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)  # a reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hack_probe_command(args: argparse.Namespace) -> int:
    import torch

    from ..hacking.probe import hack_probe, strict_json
    from ..metric import load_metric

    if args.steps < 0:
        return fail(f"--steps must be >= 0, got {args.steps}")
    if args.lr <= 0:
        return fail(f"--lr must be > 0, got {args.lr}")
    if args.json != "-" and not Path(args.json).parent.is_dir() and str(Path(args.json).parent):
        return fail(f"--json {printable(args.json)}: its folder does not exist; create it or choose another path")
    images = _read_folder(args.images, "--images")
    gt = None
    if args.gt:
        truth = _read_folder(args.gt, "--gt")
        missing = [k for k in images if k not in truth]
        if missing:
            return fail(f"--gt has no image for {missing[:3]} ({len(missing)} of {len(images)}); ground truth is "
                        "matched by relative path and file name without suffix")
        wrong = [k for k in images if truth[k].shape != images[k].shape]
        if wrong:
            return fail(f"--gt images differ in size from their --images counterparts: {wrong[:3]}")
        gt = [truth[k] for k in images]
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        optimised = load_metric(checkpoint=args.optimise, device=args.device)
        judges = [load_metric(checkpoint=path, device=args.device) for path in args.judge]
    lpips, lpips_note = _lpips(args.device)
    report = hack_probe(optimised, judges, list(images.values()), gt=gt, steps=args.steps, lr=args.lr,
                        augment=None if args.augment == "none" else "eot", seed=args.seed, lpips=lpips,
                        names={"optimised": args.optimise, "judges": list(args.judge)}, device=args.device)
    report.setdefault("lpips", None)
    report["lpips_note"] = lpips_note
    for row, name in zip(report["images"], images, strict=True):
        row["file"] = name
    _write_json(args.json, strict_json(report))
    if args.json != "-":
        judged = ", ".join(f"{j['name']} {j['before']:.3f} -> {j['after']:.3f}" for j in report["judges"])
        print(f"optimised {report['optimised']['before']:.3f} -> {report['optimised']['after']:.3f}; judges: {judged}; "
              f"PSNR to start {report['psnr'] if report['psnr'] is None else round(report['psnr'], 2)} dB; "
              f"wrote {printable(args.json)}", file=sys.stderr)
    return EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "hack-probe", help="optimise image pixels against one metric and see whether other metrics agree",
        description="The worst case of metric gaming: Adam on the pixels of --images against the --optimise "
        "checkpoint (no restorer prior), then every --judge's score and the distortion, before and after. Scores "
        "are measured without augmentation whatever --augment the optimisation used. See docs/hacking.md.")
    add = p.add_argument
    add("--optimise", required=True, metavar="CKPT", help="checkpoint of the metric that is optimised")
    add("--judge", required=True, action="append", metavar="CKPT",
        help="checkpoint of a metric that only judges (repeat for several; reported in this order)")
    add("--images", required=True, metavar="DIR", help="folder of starting images (e.g. degraded faces)")
    add("--gt", metavar="DIR", help="folder of their ground truth (same relative names): PSNR/SSIM to it too")
    add("--steps", type=int, default=60, help="Adam steps on the pixels (default 60)")
    add("--lr", type=float, default=0.01, help="Adam learning rate on [0,1] pixels (default 0.01)")
    add("--augment", choices=("none", "eot"), default="none",
        help="optimise through EOT (IFQALoss(augment='eot')): does the defence hold?")
    add("--json", required=True, metavar="OUT", help="where to write the JSON report ('-': stdout)")
    add("--seed", type=int, default=0, help="seed of the EOT draws")
    add("--device", type=device_argument, default=default_device(), help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=hack_probe_command)

"""``ifqa-loss train-ifqa``: train or fine-tune the IFQA metric (docs/ifqa_training.md)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .common import EXIT_INTERRUPTED, EXIT_OK, default_device, fail


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _degradations(text: str | None):
    """The default degradations with the fields of a JSON object (or file) replaced."""
    from ..training.degradations import DegradationConfig

    defaults = DegradationConfig().to_dict()
    if not text:
        return DegradationConfig()
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        overrides = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--degradations is neither a JSON object nor a JSON file ({exc})") from exc
    if not isinstance(overrides, dict):
        raise ValueError("--degradations must be a JSON object of DegradationConfig fields")
    known = {f.name for f in dataclasses.fields(DegradationConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"--degradations: unknown fields {unknown}; known: {sorted(known)}")
    return DegradationConfig(**{**defaults, **overrides})


def config_from_args(args: argparse.Namespace):
    """An :class:`~ifqa_loss.training.ifqa.IFQATrainConfig` from parsed options (ValueError names the bad one)."""
    from ..training.ifqa import IFQATrainConfig

    return IFQATrainConfig(
        data=args.data, out=args.out, size=args.size, steps=args.steps, batch_size=args.batch_size, lr_g=args.lr_g,
        lr_d=args.lr_d, schedule=args.schedule, warmup=args.warmup, min_lr_ratio=args.min_lr_ratio,
        ema_decay=args.ema_decay, fake_degraded_prob=args.fake_degraded_prob, val=args.val,
        val_fraction=args.val_fraction, val_every=args.val_every, l1_weight=args.l1_weight,
        adv_weight=args.adv_weight, d_widths=args.d_widths,
        d_bottleneck=args.d_bottleneck, g_width=args.g_width, g_depth=args.g_depth, g_blocks=args.g_blocks,
        fprs_prob=args.fprs_prob, fprs_parts=args.fprs_parts, fprs_part_prob=args.fprs_part_prob,
        fprs_soft=args.fprs_soft, emphasis_weight=args.emphasis_weight, emphasis_parts=args.emphasis_parts,
        mask_source=args.mask_source, landmarks=args.landmarks, parsing=args.parsing, mask_jitter=args.mask_jitter,
        hflip=not args.no_hflip, degradations=_degradations(args.degradations), seed=args.seed, device=args.device,
        amp=not args.no_amp, workers=args.workers, log_every=args.log_every, snapshot_every=args.snapshot_every,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, init_from=args.init_from,
        resume=args.resume, tensorboard=not args.no_tensorboard, progress=not args.quiet,
    )


def train_ifqa(args: argparse.Namespace) -> int:
    from ..training.ifqa import train
    from ..weights import CheckpointError

    try:
        cfg = config_from_args(args)
        result = train(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(json.dumps(result, indent=2))
    return EXIT_INTERRUPTED if result.get("interrupted") else EXIT_OK


def register(subparsers) -> None:
    from ..training.face_data import MASK_SOURCES
    from ..training.ifqa_config import SCHEDULES, IFQATrainConfig

    d = IFQATrainConfig(data="", out="")
    p = subparsers.add_parser("train-ifqa", help="train or fine-tune the IFQA metric (adversarial, FPRS, emphasis)",
                              description="Train the IFQA per-pixel discriminator against a restoration U-Net on "
                              "aligned HQ faces. Multi-GPU: torchrun --nproc_per_node K -m ifqa_loss train-ifqa ...")
    add = p.add_argument
    add("--data", required=True, help="folder of aligned high-quality faces (searched recursively)")
    add("--out", required=True, help="run folder: last.pth, best.pth, log.csv, val.csv, snapshots/, tensorboard/, "
        "config.json; a folder holding a run needs --resume")
    add("--size", type=int, default=d.size, help=f"training side; faces are resized to it (default {d.size})")
    add("--steps", type=int, default=d.steps, help="total steps; a resumed run continues up to it")
    add("--batch-size", type=int, default=d.batch_size, help="faces per step and process")
    add("--lr-g", type=float, default=d.lr_g, help="generator Adam learning rate")
    add("--lr-d", type=float, default=d.lr_d, help="discriminator Adam learning rate")
    add("--schedule", choices=SCHEDULES, default=d.schedule,
        help=f"learning rates after the warm-up: cosine decay to --min-lr-ratio, or constant (default {d.schedule})")
    add("--warmup", type=float, default=d.warmup, help=f"linear warm-up, fraction of --steps (default {d.warmup})")
    add("--min-lr-ratio", type=float, default=d.min_lr_ratio, help="cosine floor, fraction of the learning rates")
    add("--ema-decay", type=float, default=d.ema_decay,
        help=f"EMA of the discriminator, validated and saved as the metric; 0 = off (default {d.ema_decay})")
    add("--fake-degraded-prob", type=float, default=d.fake_degraded_prob,
        help=f"share of fakes that are the degraded input instead of its restoration (default {d.fake_degraded_prob})")
    add("--val", help="folder of held-out HQ images for validation (default: a seeded split of --data)")
    add("--val-fraction", type=float, default=d.val_fraction,
        help=f"share of --data held out when --val is not given; 0 = no validation (default {d.val_fraction})")
    add("--val-every", type=int, default=d.val_every, help=f"validate every N steps (default {d.val_every})")
    add("--l1-weight", type=float, default=d.l1_weight, help="generator L1 weight")
    add("--adv-weight", type=float, default=d.adv_weight, help="generator adversarial weight")
    add("--d-widths", type=_ints, default=d.d_widths, help="5 discriminator widths (published 64,128,256,512,1024)")
    add("--d-bottleneck", type=int, default=d.d_bottleneck, help="discriminator bottleneck blocks (published 4)")
    add("--g-width", type=int, default=d.g_width, help="restoration U-Net width")
    add("--g-depth", type=int, default=d.g_depth, help="restoration U-Net levels")
    add("--g-blocks", type=int, default=d.g_blocks, help="residual blocks per U-Net level")
    add("--fprs-prob", type=float, default=d.fprs_prob, help="probability that a face gets FPRS")
    add("--fprs-parts", type=_names, default=d.fprs_parts, help="swapped parts, e.g. eyes,nose,mouth (brows, ...)")
    add("--fprs-part-prob", type=float, default=d.fprs_part_prob, help="probability of swapping each part")
    add("--fprs-soft", action="store_true", help="keep feathered mask edges (fractional targets)")
    add("--emphasis-weight", type=float, default=d.emphasis_weight, help="loss weight on the emphasised parts")
    add("--emphasis-parts", type=_names, default=d.emphasis_parts, help="emphasised parts (default eyes,nose,mouth)")
    add("--mask-source", choices=MASK_SOURCES, default=d.mask_source,
        help="where the facial parts come from: the aligned-face template or per-image annotations")
    add("--landmarks", help="JSON {image: 5/68 [x,y] points, or GFP-GAN loc_* boxes} for --mask-source landmarks/boxes")
    add("--parsing", help="folder of CelebAMask-HQ label maps (PNG) for --mask-source parsing")
    add("--mask-jitter", type=float, default=d.mask_jitter, help="template shift/scale jitter (fraction of the side)")
    add("--no-hflip", action="store_true", help="no horizontal flips")
    add("--degradations", help="JSON object or file of DegradationConfig fields, e.g. '{\"jpeg_range\": [30, 60]}'")
    add("--seed", type=int, default=d.seed, help="seeds initialisation, batch order and every per-step draw")
    add("--device", default=default_device(), help="cpu or cuda (default: cuda if available)")
    add("--no-amp", action="store_true", help="full precision on CUDA")
    add("--workers", type=int, default=d.workers, help="data-loading processes")
    add("--log-every", type=int, default=d.log_every, help="log.csv / TensorBoard row every N steps")
    add("--snapshot-every", type=int, default=d.snapshot_every, help="PNG of quality maps every N steps")
    add("--checkpoint-every", type=int, default=d.checkpoint_every, help="write OUT/last.pth every N steps")
    add("--keep-checkpoints", action="store_true", help="also keep step_XXXXXXX.pth at every checkpoint")
    add("--init-from", help="start the discriminator from these weights (e.g. the published IFQA_Metric.pth)")
    add("--resume", action="store_true", help="continue OUT/last.pth exactly; changed training options (learning "
        "rates, weights, --steps, ...) are applied and recorded in config.json, architecture options must match")
    add("--no-tensorboard", action="store_true", help='log.csv / val.csv only (TensorBoard: pip install '
        '"ifqa-loss[tensorboard]")')
    add("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_ifqa)

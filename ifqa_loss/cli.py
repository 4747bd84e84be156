"""``ifqa-loss`` command line: score images, manage weights.

Exit codes: 0 success, 1 some inputs were skipped (reported on stderr), 2 nothing
could be done (bad arguments, missing or wrong checkpoint).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2


def _score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoints import CheckpointError
    from .imageio import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, save_map_images
    from .metrics import load_metric

    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return EXIT_FAILED
    if args.maps:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --maps needs matplotlib: pip install 'ifqa-loss[viz]'", file=sys.stderr)
            return EXIT_FAILED
    paths = args.paths or [str(Path(__file__).parent / "samples")]
    images, problems = list_images(paths)
    if not images and not problems:
        print(f"error: no images ({' '.join(IMAGE_SUFFIXES)}) under {' '.join(paths)}", file=sys.stderr)
        return EXIT_FAILED
    try:
        metric = load_metric(args.metric, checkpoint=args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED

    if args.maps and not metric.has_map:
        print(f"error: {metric.name} predicts a MOS per image and has no map; drop --maps", file=sys.stderr)
        return EXIT_FAILED
    results: list[dict] = []
    used_stems: set[str] = set()
    progress = tqdm(total=len(images), desc=f"{metric.name} scoring", unit="img", file=sys.stderr, disable=args.quiet)

    def flush(batch: list[tuple[Path, torch.Tensor, torch.Tensor]]) -> None:
        with torch.inference_mode():
            outputs = metric.net(torch.cat([prepared for _, _, prepared in batch])).float()
        for (path, image, _), output in zip(batch, outputs, strict=True):
            results.append({"path": str(path), "score": round(output.mean().item(), 6)})
            if args.maps:
                stem, n = path.stem, 1
                while stem in used_stems:  # the same file name in different folders
                    stem, n = f"{path.stem}_{n}", n + 1
                used_stems.add(stem)
                save_map_images(output.cpu(), image, args.maps, stem)
        progress.update(len(batch))  # counted when scored, not when read
        batch.clear()

    batch: list[tuple[Path, torch.Tensor, torch.Tensor]] = []
    for path in images:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            problems.append(str(exc))
            progress.update(1)
            continue
        with torch.inference_mode():
            prepared = metric.prepare(image[None].to(args.device))
        batch.append((path, image, prepared))
        if len(batch) == args.batch_size:
            flush(batch)
    if batch:
        flush(batch)
    progress.close()

    _write_results(results, args.format)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} input(s) skipped, {len(results)} scored", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def _write_results(results: list[dict], fmt: str) -> None:
    if fmt == "json":
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["path", "score"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(results)
    else:
        width = max([len(r["path"]) for r in results] + [4])
        print(f"{'path':<{width}}  score")
        for r in results:
            print(f"{r['path']:<{width}}  {r['score']:.4f}")
        if results:
            mean = sum(r["score"] for r in results) / len(results)
            print(f"{'mean (' + str(len(results)) + ' images)':<{width}}  {mean:.4f}")


def _weights_import(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, import_checkpoint

    try:
        entry = import_checkpoint(args.path, metric=args.metric)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"imported {entry['metric']}: {args.path}\n  source sha256 {entry['source_sha256']}\n"
          f"  stored as {entry['file']} (sha256 {entry['sha256']})")
    return EXIT_OK


def _weights_list(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, cache_dir, installed

    try:
        rows = installed()
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"weights folder: {cache_dir()}")
    for row in rows:
        state = row["path"] if row["installed"] else "not installed (ifqa-loss weights import PATH)"
        print(f"  {row['metric']:<8} {state}" + (f"  sha256 {row['sha256'][:16]}…" if row["sha256"] else ""))
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks.overhead import main as bench_main
    except ImportError as exc:
        print(f"error: the benchmarks need extra packages ({exc}): pip install 'ifqa-loss[bench]'", file=sys.stderr)
        return EXIT_FAILED
    return bench_main(args.bench_args)


def _train_gfiqa(args: argparse.Namespace) -> int:
    from .gfiqa_train import LossWeights, TrainConfig, train

    try:
        model_kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
        weights = LossWeights(**json.loads(args.loss_weights)) if args.loss_weights else LossWeights()
    except (json.JSONDecodeError, TypeError) as exc:
        print(f"error: --model-kwargs/--loss-weights must be JSON objects of valid fields ({exc})", file=sys.stderr)
        return EXIT_FAILED
    cfg = TrainConfig(images=args.images, meta=args.meta, out=args.out, model=args.model, model_kwargs=model_kwargs,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step,
                      seed=args.seed, device=args.device, workers=args.workers, prior=args.prior,
                      encoder_weights=args.encoder_weights, resume=args.resume, loss_weights=weights,
                      progress=not args.quiet)
    try:
        result = train(cfg, log=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _eval_gfiqa(args: argparse.Namespace) -> int:
    from .gfiqa_train import evaluate

    try:
        result = evaluate(args.checkpoint, args.images, args.meta, split=args.split, seed=args.seed,
                          device=args.device, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{result['split']} ({result['images']} images): SRCC {result['srcc']:.4f}  PLCC {result['plcc']:.4f}  "
          f"RMSE {result['rmse']:.4f}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .registry import METRICS

    parser = argparse.ArgumentParser(prog="ifqa-loss", description="Face-quality metrics and losses (IFQA, IFQA++).")
    parser.add_argument("--version", action="version", version=f"ifqa-loss {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score face images (files and folders, recursive)")
    score.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample faces)")
    score.add_argument("--metric", default="ifqa", choices=sorted(METRICS))
    score.add_argument("--checkpoint", help="weight file; default: the installed one (ifqa-loss weights list)")
    score.add_argument("--batch-size", type=int, default=8)
    score.add_argument("--device", default="cpu")
    score.add_argument("--maps", metavar="DIR", help="write each per-pixel map (PNG) and an overlay on the face here")
    score.add_argument("--format", choices=["table", "csv", "json"], default="table")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=_score)

    bench = sub.add_parser("bench", add_help=False, help="time every loss and its generator-step overhead "
                           "(no checkpoint needed; 'ifqa-loss bench --help' for options)")
    bench.set_defaults(func=_bench)  # its options are parsed by benchmarks.overhead

    tr = sub.add_parser("train-gfiqa", help="train GFIQA (or the ResNet50 baseline) on GFIQA-20k-style data")
    tr.add_argument("--images", required=True, help="image folder")
    tr.add_argument("--meta", required=True, help="CSV: image name, MOS in [0,1] (pyiqa layout or name,mos)")
    tr.add_argument("--out", required=True, help="folder for best.pth, last.pth, log.csv, result.json")
    tr.add_argument("--model", choices=["gfiqa", "resnet50"], default="gfiqa")
    tr.add_argument("--model-kwargs", help='JSON architecture arguments, e.g. \'{"num_injected": 8}\'')
    tr.add_argument("--loss-weights", help='JSON λs, e.g. \'{"perceptual": 0.0}\' (fields l2 perceptual identity '
                    'latent quality)')
    tr.add_argument("--prior", help="GFPGANv1.3/1.4.pth: its stylegan_decoder is the StyleGAN2 prior")
    tr.add_argument("--encoder-weights", help="torchvision ResNet50 ImageNet state dict")
    tr.add_argument("--epochs", type=int, default=25)
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--lr", type=float, default=5e-5)
    tr.add_argument("--lr-step", type=int, default=10, help="multiply the learning rate by 0.1 every N epochs")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    tr.add_argument("--workers", type=int, default=4)
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_train_gfiqa)

    ev = sub.add_parser("eval-gfiqa", help="SRCC / PLCC / RMSE of a trained GFIQA checkpoint")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--images", required=True)
    ev.add_argument("--meta", required=True)
    ev.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    ev.add_argument("--seed", type=int, default=0, help="the split seed used for training")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ev.set_defaults(func=_eval_gfiqa)

    weights_parser = sub.add_parser("weights", help="install and list checkpoints")
    weights = weights_parser.add_subparsers(dest="action", required=True)
    imp = weights.add_parser("import", help="verify a downloaded checkpoint and store a safetensors copy")
    imp.add_argument("path")
    imp.add_argument("--metric", choices=sorted(METRICS), help="default: identified from the file's keys")
    imp.set_defaults(func=_weights_import)
    lst = weights.add_parser("list", help="show installed checkpoints")
    lst.set_defaults(func=_weights_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

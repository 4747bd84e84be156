"""``ifqa-loss score``: score image files and folders, optionally writing each quality map."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from .common import EXIT_OK, EXIT_SKIPPED, default_device, fail


def score_images(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..imageio import IMAGE_SUFFIXES, ImageReadError, list_images, read_image
    from ..metric import load_metric
    from ..weights import CheckpointError

    if args.batch_size < 1:
        return fail("--batch-size must be >= 1")
    if args.maps:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail("--maps needs matplotlib: pip install 'ifqa-loss[viz]'")
    paths = args.paths or [str(Path(__file__).parent.parent / "samples")]
    images, problems = list_images(paths)
    if not images and not problems:
        return fail(f"no images ({' '.join(IMAGE_SUFFIXES)}) under {' '.join(paths)}")
    try:
        metric = load_metric(args.metric, checkpoint=args.checkpoint, device=args.device,
                             random_weights=args.random_weights)
    except (CheckpointError, ValueError) as exc:
        return fail(str(exc))
    if metric.random_weights:
        print("WARNING: --random-weights: the scores below are MEANINGLESS (wiring test only)", file=sys.stderr)
    if args.maps and not metric.has_map:
        return fail(f"{metric.name} predicts a MOS per image and has no map; drop --maps")

    scorer = _BatchScorer(metric, args.maps)
    progress = tqdm(total=len(images), desc=f"{metric.name} scoring", unit="img", file=sys.stderr,
                    disable=args.quiet)
    for path in images:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            problems.append(str(exc))
            progress.update(1)
            continue
        progress.update(scorer.add(path, image, args.batch_size))
    progress.update(scorer.flush())
    progress.close()

    write_results(scorer.results, args.format)
    if scorer.non_square:
        size = metric.input_size
        print(f"note: {scorer.non_square} non-square image(s) were stretched to {size}x{size} (aspect ratio not kept, "
              "as the official test.py does); score aligned, square face crops for meaningful results",
              file=sys.stderr)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} input(s) skipped, {len(scorer.results)} scored", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


class _BatchScorer:
    """Collects images brought to the metric's native size and scores them a batch at a time."""

    def __init__(self, metric, maps_dir: str | None):
        self.metric, self.maps_dir = metric, maps_dir
        self.results: list[dict] = []
        self._pending: list[tuple[Path, torch.Tensor, torch.Tensor]] = []
        self._used_stems: set[str] = set()
        self.non_square = 0

    def add(self, path: Path, image: torch.Tensor, batch_size: int) -> int:
        """Queue one (3,H,W) [0,1] image; returns how many images were scored by this call."""
        self.non_square += image.shape[-1] != image.shape[-2]
        with torch.inference_mode():  # resize per image (sizes differ), then batch at the native size
            prepared = self.metric.prepare(image[None].to(next(self.metric.parameters()).device))
        self._pending.append((path, image, prepared))
        return self.flush() if len(self._pending) >= batch_size else 0

    def flush(self) -> int:
        if not self._pending:
            return 0
        from ..imageio import save_map_images

        batch = torch.cat([prepared for _, _, prepared in self._pending])
        with torch.inference_mode():  # prepared input is already [-1,1] at native size
            if self.metric.has_map:
                outputs = self.metric.quality_map(batch, input_range=(-1.0, 1.0)).float()
                scores = outputs.mean(dim=(1, 2, 3))
            else:
                outputs = scores = self.metric.score(batch, input_range=(-1.0, 1.0))
        for (path, image, _), output, score in zip(self._pending, outputs, scores, strict=True):
            self.results.append({"path": str(path), "score": round(score.item(), 6)})
            if self.maps_dir:
                save_map_images(output.cpu(), image, self.maps_dir, self._unique_stem(path), score=score.item())
        scored = len(self._pending)
        self._pending.clear()
        return scored

    def _unique_stem(self, path: Path) -> str:
        stem, n = path.stem, 1
        while stem in self._used_stems:  # the same file name in different folders
            stem, n = f"{path.stem}_{n}", n + 1
        self._used_stems.add(stem)
        return stem


def write_results(results: list[dict], fmt: str) -> None:
    """Print ``[{"path", "score"}]`` as ``table`` (with the mean), ``csv`` or ``json`` on stdout."""
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


def register(subparsers) -> None:
    from ..registry import METRICS

    parser = subparsers.add_parser("score", help="score face images (files and folders, recursive)")
    parser.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample faces)")
    parser.add_argument("--metric", choices=sorted(METRICS),
                        help="default: the metric the checkpoint records, else ifqa")
    parser.add_argument("--checkpoint", help="weight file; default: the installed one (ifqa-loss weights list)")
    parser.add_argument("--random-weights", action="store_true",
                        help="RANDOM weights instead of a checkpoint: meaningless scores, to try the pipeline only")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda[:N] (default: cuda if available)")
    parser.add_argument("--maps", metavar="DIR", help="write each per-pixel map (PNG) and an overlay on the face here")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="stdout format")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=score_images)

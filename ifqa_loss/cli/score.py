"""``ifqa-loss score``: score image files and folders, optionally writing each quality map.

Nothing computed is lost: each score is written to stdout (and flushed) as soon as its
batch is done, a file that cannot be read, is too large, or whose map cannot be written
is reported on stderr and skipped, and an interrupted run still ends a valid JSON/CSV.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .common import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, default_device, device_argument, fail, printable

# Map file names are "<stem>_overlay.png": a longer stem is shortened (with a hash, to stay unique) so the
# name fits the usual 255-byte limit.
MAX_STEM_BYTES = 160
# One row per map written: which input each map file belongs to (names change to stay unique).
MAPS_INDEX = "maps_index.csv"
RANDOM_WEIGHTS_LABEL = "RANDOM WEIGHTS: not a quality judgement"


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options before any image is read, with the fix; None when nothing is."""
    if args.batch_size < 1:
        return "--batch-size must be >= 1"
    if args.max_pixels < 1:
        return "--max-pixels must be >= 1"
    if args.maps:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return "--maps needs matplotlib: pip install 'ifqa-loss[viz]'"
        problem = _check_writable_folder(Path(args.maps))
        if problem:
            return f"--maps {printable(args.maps)}: {problem}; choose a folder you can write to"
    return None


def _read(path: Path, args: argparse.Namespace) -> torch.Tensor:
    """The image as the chosen preprocessing reads it; raises ImageReadError (too many pixels, unreadable)."""
    from ..imageio import check_pixel_count, read_image, read_image_official

    check_pixel_count(path, args.max_pixels)
    with warnings.catch_warnings():  # the pixel limit above is the one that applies
        warnings.simplefilter("ignore", _decompression_bomb_warning())
        return read_image_official(path) if args.preprocess == "official" else read_image(path)


def score_images(args: argparse.Namespace) -> int:
    from ..imageio import IMAGE_SUFFIXES, list_images
    from ..metric import load_metric
    from ..weights import CheckpointError

    problem = _argument_problem(args)
    if problem:
        return fail(problem)
    paths = args.paths or [str(Path(__file__).parent.parent / "samples")]
    images, problems = list_images(paths)
    for problem in problems:
        _skip(problem)
    if not images:
        return fail(f"no images ({' '.join(IMAGE_SUFFIXES)}) to score under {' '.join(map(printable, paths))}")
    try:
        with warnings.catch_warnings():  # said below in one line, without Python's source line
            warnings.filterwarnings("ignore", message=".*RANDOM weights")
            metric = load_metric(args.metric, checkpoint=args.checkpoint, device=args.device,
                                 random_weights=args.random_weights)
    except (CheckpointError, ValueError) as exc:
        return fail(str(exc))
    if metric.random_weights:
        print("WARNING: --random-weights: the scores below are MEANINGLESS (wiring test only)", file=sys.stderr)
    if args.maps and not metric.has_map:
        return fail(f"{metric.name} predicts a MOS per image and has no map; drop --maps")

    try:
        with _terminate_as_interrupt():
            scorer = _score_all(images, metric, args, problems)
    except BrokenPipeError:  # the reader went away (`| head -1`): stop quietly, as other tools do
        _quiet_stdout()
        return EXIT_OK
    if scorer.renamed:
        print(f"note: {scorer.renamed} map name(s) were changed to stay unique (the same file name in several "
              f"folders, or a name like a_1 already taken); {Path(args.maps) / MAPS_INDEX} says which input each "
              "map belongs to", file=sys.stderr)
    if scorer.non_square:
        size = metric.input_size
        print(f"note: {scorer.non_square} non-square image(s) were stretched to {size}x{size} (aspect ratio not kept, "
              "as the official test.py does); score aligned, square face crops for meaningful results",
              file=sys.stderr)
    if not scorer.scored:
        return fail(f"none of the {len(images)} image(s) could be scored (see the messages above)")
    if problems:
        print(f"{len(problems)} input(s) skipped, {scorer.scored} scored", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def _score_all(images: list[Path], metric, args: argparse.Namespace, problems: list[str]) -> _BatchScorer:
    from tqdm import tqdm

    from ..imageio import ImageReadError

    writer = ResultWriter(args.format, sys.stdout, width=max(len(printable(p)) for p in images))
    scorer = _BatchScorer(metric, args.maps, writer, problems)
    progress = tqdm(total=len(images), desc=f"{metric.name} scoring", unit="img", file=sys.stderr,
                    disable=args.quiet)
    official = args.preprocess == "official"
    try:
        for path in images:
            try:
                image = _read(path, args)
            except ImageReadError as exc:
                _skip(str(exc), problems)
                progress.update(1)
                continue
            prepared = official_input(metric, image) if official else None
            image = image.float() / 255 if official else image
            progress.update(scorer.add(path, image, args.batch_size, prepared))
        progress.update(scorer.flush())
    finally:  # also on Ctrl-C, SIGTERM or an unexpected error: what was scored stays a valid, complete document
        progress.close()
        with contextlib.suppress(BrokenPipeError):
            writer.close()
        scorer.close()
    return scorer


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM ends the run like Ctrl-C (the document is closed, exit 130) instead of killing it mid-row."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot complain about the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def official_input(metric, image: torch.Tensor) -> torch.Tensor:
    """(3,H,W) uint8 from :func:`~ifqa_loss.imageio.read_image_official` -> (1,3,S,S) network input in [-1,1].

    IFQA / IFQA++: the official ``test.py`` preprocessing (:func:`~ifqa_loss.preprocess.official_network_input`).
    Metrics without an official script (GFIQA) use their own float preprocessing.
    """
    from ..preprocess import official_network_input

    param = next(metric.parameters())
    if not metric.spec.published:
        return metric.prepare((image.float() / 255)[None].to(param.device))
    x = official_network_input(image[None], metric.input_size, metric.spec.resize_mode)
    return x.to(device=param.device, dtype=param.dtype)


def _decompression_bomb_warning():
    from PIL import Image

    return Image.DecompressionBombWarning


def _skip(problem: str, problems: list[str] | None = None) -> None:
    """Report a skipped input at once (it is never lost behind later work) and count it; on a line of its own,
    never on the progress bar's."""
    from tqdm import tqdm

    tqdm.write(f"skipped: {printable(problem)}", file=sys.stderr)
    sys.stderr.flush()
    if problems is not None:
        problems.append(problem)


def _check_writable_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot take the map files (``None`` when it can): tried before any scoring."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ifqa-write-test-"):
            pass
    except FileExistsError:
        return "is a file, not a folder"
    except OSError as exc:
        return f"cannot be written ({exc.strerror})"
    return None


@contextlib.contextmanager
def _interrupt_after_block():
    """Hold back Ctrl-C and SIGTERM until the block ends, so a row is never cut in half (main thread only;
    restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


class ResultWriter:
    """Writes ``{"path", "score"}`` rows to ``stream`` as they come, flushing each one.

    ``table`` (column width fixed up front from the paths, mean at the end), ``csv``, or
    ``json`` (one array, closed by :meth:`close` also after an interruption). Paths whose
    names are not valid UTF-8 are written with ``\\xNN`` escapes instead of failing.
    """

    def __init__(self, fmt: str, stream, width: int = 4):
        self.fmt, self.stream, self.width = fmt, stream, max(width, 4)
        self.count, self.total, self._closed = 0, 0.0, False
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            self._csv.writerow(["path", "score"])
        elif fmt == "json":
            stream.write("[")
        else:
            stream.write(f"{'path':<{self.width}}  score\n")
        stream.flush()

    def write(self, path: str | os.PathLike, score: float) -> None:
        shown = printable(path)
        with _interrupt_after_block():
            if self.fmt == "csv":
                self._csv.writerow([shown, score])
            elif self.fmt == "json":
                self.stream.write(("," if self.count else "") + "\n  " + json.dumps({"path": shown, "score": score}))
            else:
                self.stream.write(f"{shown:<{self.width}}  {score:.4f}\n")
            self.count += 1
            self.total += score
            self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _interrupt_after_block():
            if self.fmt == "json":
                self.stream.write("\n]\n" if self.count else "]\n")
            elif self.fmt == "table" and self.count:
                label = f"mean ({self.count} images)"
                self.stream.write(f"{label:<{self.width}}  {self.total / self.count:.4f}\n")
            self.stream.flush()


class _BatchScorer:
    """Brings each image to the metric's native size at once (so only the small prepared copy waits for
    its batch, never the decoded photo) and scores a batch at a time."""

    def __init__(self, metric, maps_dir: str | None, writer: ResultWriter, problems: list[str]):
        self.metric, self.maps_dir, self.writer, self.problems = metric, maps_dir, writer, problems
        self.scored = 0
        self.non_square = 0
        self._pending: list[tuple[Path, torch.Tensor | None, torch.Tensor]] = []
        self._used_stems: set[str] = set()
        self._index = None  # maps_index.csv, opened with the first map
        self.renamed = 0

    def add(self, path: Path, image: torch.Tensor, batch_size: int, prepared: torch.Tensor | None = None) -> int:
        """Queue one (3,H,W) [0,1] image (``prepared``: its network input, if already made); returns how many
        images were scored by this call."""
        self.non_square += image.shape[-1] != image.shape[-2]
        if prepared is None:
            with torch.inference_mode():  # resize per image (sizes differ), then batch at the native size
                prepared = self.metric.prepare(image[None].to(next(self.metric.parameters()).device))
        # The overlay needs the photo: keep it as 8-bit (a quarter of the float copy), and only with --maps.
        kept = (image * 255.0 + 0.5).to(torch.uint8) if self.maps_dir else None
        self._pending.append((path, kept, prepared))
        return self.flush() if len(self._pending) >= batch_size else 0

    def flush(self) -> int:
        if not self._pending:
            return 0
        from ..imageio import save_map_images

        pending, self._pending = self._pending, []
        batch = torch.cat([prepared for _, _, prepared in pending])
        try:
            with torch.inference_mode():  # prepared input is already [-1,1] at native size
                if self.metric.has_map:
                    outputs = self.metric.quality_map(batch, input_range=(-1.0, 1.0)).float()
                    scores = outputs.mean(dim=(1, 2, 3))
                else:
                    outputs = scores = self.metric.score(batch, input_range=(-1.0, 1.0))
        except (RuntimeError, MemoryError) as exc:  # out of memory: this batch is lost, the run and its results not
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            for path, _, _ in pending:
                _skip(f"{path}: scoring its batch failed ({reason}); retry with a smaller "
                      "--batch-size or on another device", self.problems)
            return len(pending)
        for (path, kept, _), output, score in zip(pending, outputs, scores, strict=True):
            value = round(score.item(), 6)
            if not math.isfinite(value):  # never print NaN as a score
                _skip(f"{path}: the metric returned {value} (non-finite); the weights or --device precision "
                      "are at fault", self.problems)
                continue
            self.writer.write(path, value)
            self.scored += 1
            if self.maps_dir:
                try:
                    stem = self._unique_stem(path)
                    label = RANDOM_WEIGHTS_LABEL if getattr(self.metric, "random_weights", False) else None
                    written = save_map_images(output.cpu(), kept.float() / 255.0, self.maps_dir, stem, score=value,
                                              label=label)
                    self._record(path, value, written, renamed=stem != path.stem)
                except OSError as exc:  # the score is already written; only this map is missing
                    _skip(f"{printable(path)}: scored, but its map could not be written ({exc.strerror or exc})",
                          self.problems)
        return len(pending)

    def _record(self, path: Path, score: float, written: tuple[Path, Path], renamed: bool) -> None:
        """One row of the maps index: input path, score, map and overlay file names, whether the name changed."""
        import csv

        if self._index is None:
            self._index = open(Path(self.maps_dir) / MAPS_INDEX, "w", newline="", encoding="utf-8",
                               errors="backslashreplace")
            self._index_writer = csv.writer(self._index)
            self._index_writer.writerow(["input", "score", "map", "overlay", "renamed"])
        self._index_writer.writerow([printable(path), score, written[0].name, written[1].name, int(renamed)])
        self._index.flush()
        self.renamed += renamed

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    def _unique_stem(self, path: Path) -> str:
        base = path.stem
        if len(os.fsencode(base)) > MAX_STEM_BYTES:
            digest = hashlib.sha1(os.fsencode(base)).hexdigest()[:10]
            base = os.fsdecode(os.fsencode(base)[:MAX_STEM_BYTES]).rstrip("\udcff") + "-" + digest
        stem, n = base, 1
        # the same file name in different folders, a.png next to an earlier a_1.png, or names differing only in
        # case (one file on case-insensitive file systems)
        while stem.casefold() in self._used_stems:
            stem, n = f"{base}_{n}", n + 1
        self._used_stems.add(stem.casefold())
        return stem


def register(subparsers) -> None:
    from ..imageio import DEFAULT_MAX_PIXELS
    from ..registry import METRICS

    parser = subparsers.add_parser("score", help="score face images (files and folders, recursive)")
    parser.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample faces)")
    parser.add_argument("--metric", choices=sorted(METRICS),
                        help="default: the metric the checkpoint records, else ifqa")
    parser.add_argument("--checkpoint", help="weight file; default: the installed one (ifqa-loss weights list)")
    parser.add_argument("--random-weights", action="store_true",
                        help="RANDOM weights instead of a checkpoint: meaningless scores, to try the pipeline only")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--device", type=device_argument, default=default_device(),
                        help="cpu or cuda[:N] (default: cuda if available)")
    parser.add_argument("--maps", metavar="DIR", help="write each per-pixel map (PNG) and an overlay on the face here")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"skip images with more pixels (decompression bombs; default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="stdout format")
    parser.add_argument("--preprocess", choices=["official", "float"], default="official",
                        help="official (default): decode and resize exactly as the official test.py (cv2.imread "
                        "semantics, uint8 cv2 resize); float: the losses' differentiable float resize")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=score_images)


__all__ = ["EXIT_FAILED", "ResultWriter", "register", "score_images"]

"""``ifqa-loss`` command line: one module per command, each exposing ``register(subparsers)``.

Exit codes: 0 success, 1 some inputs were skipped (reported on stderr), 2 nothing
could be done (bad arguments, missing or wrong checkpoint, no input could be scored),
130 interrupted; refusals print ``error: ...`` on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED, fail

# Command modules, in the order `ifqa-loss --help` lists them.
COMMANDS = ("score", "weights", "bench", "gfiqa", "train_ifqa", "ablate", "hack_probe")

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SKIPPED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ifqa-loss`` parser with every command module's subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="ifqa-loss", description="Face-quality metrics and losses (IFQA, IFQA++, "
                                     "GFIQA): score images, manage weights, benchmark, train.")
    parser.add_argument("--version", action="version", version=f"ifqa-loss {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (argparse exits with 2 on bad arguments)."""
    from ..imageio import ImageReadError
    from ..weights import CheckpointError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.extra_args = extra  # parsed by the command itself (bench)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    shown = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return args.func(args)
    # Refusals a command did not word itself: bad files, bad values, the file system. They name the problem,
    # so the user gets `error: ...` and exit 2, not a traceback. Anything else is a bug and keeps its traceback.
    except (CheckpointError, ImageReadError) as exc:
        return fail(str(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return fail(f"{exc.strerror or exc}{where}")
    except ValueError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        warnings.formatwarning = shown


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: ``warning: message`` on one line, without Python's source line."""
    return f"warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())

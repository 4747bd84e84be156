"""What every command shares: exit codes and the one way to refuse."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2


def fail(message: str) -> int:
    """Print ``error: message`` on stderr and return the exit code for "nothing could be done"."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

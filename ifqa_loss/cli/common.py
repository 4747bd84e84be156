"""What every command shares: exit codes, the one way to refuse, device parsing, printable paths."""
from __future__ import annotations

import argparse
import os
import re
import sys

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C


def fail(message: str) -> int:
    """Print ``error: message`` on stderr and return the exit code for "nothing could be done" (control characters
    of file names in the message are escaped; its own line breaks stay)."""
    print(f"error: {escape_controls(message, keep=chr(10))}", file=sys.stderr)
    return EXIT_FAILED


# Characters that move the cursor, end a line or reorder text on a terminal: C0/C1 controls, DEL, the Unicode
# line/paragraph separators and bidirectional overrides. A file name holding one could fake rows or messages.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str, keep: str = "") -> str:
    r"""``text`` with control characters written as ``\xNN`` / ``\uNNNN`` (those in ``keep`` stay).

    Example:
        >>> print(escape_controls("a\nb\x1b[31m.png"))
        a\nb\x1b[31m.png
    """
    def escaped(match: re.Match) -> str:
        char = match.group()
        if char in keep:
            return char
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
            f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _CONTROLS.sub(escaped, text)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_argument(text: str) -> str:
    """argparse ``type=`` for ``--device``: a device that exists here and holds data (not ``meta``).

    Example:
        >>> device_argument("cpu")
        'cpu'
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu or cuda[:N]") from None
    if device.type == "meta":
        raise argparse.ArgumentTypeError("the meta device holds no data and cannot score; use cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here (no GPU, or torch built without "
                                             "CUDA); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"{text!r}: use cpu or cuda[:N]")
    return text


def printable(path: str | os.PathLike) -> str:
    """A path as text any UTF-8 stream can write on one line: undecodable bytes of a file name appear as
    ``\\xNN``, control characters (newlines, terminal escapes) as ``\\n`` / ``\\xNN``.

    Example:
        >>> printable(b"caf\\xe9.png".decode("utf-8", "surrogateescape"))
        'caf\\\\xe9.png'
    """
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        raw = os.fspath(path).encode("utf-8", "backslashreplace")
    return escape_controls(raw.decode("utf-8", "backslashreplace"))

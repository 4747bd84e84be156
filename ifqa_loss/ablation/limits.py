"""Sweep files are data: bounded YAML reading and finite, in-range numbers, checked before anything runs.

Limits: the file at most :data:`MAX_BYTES`; at most :data:`MAX_DEPTH` levels of nesting; at most
:data:`MAX_NODES` values once aliases are followed (a YAML "billion laughs" stops there instead of
expanding without bound). Errors are ``ValueError`` naming the field (``sweep[0].weights[1]``).
"""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "read_yaml", "check_tree", "number"]

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a sweep file within the limits above; only regular files are read (no FIFOs or devices).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "s.yaml").write_text("a: &x [1, 2]\\nb: *x\\n")
        ...     read_yaml(Path(d) / "s.yaml")
        {'a': [1, 2], 'b': [1, 2]}
    """
    import yaml

    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: no such sweep file ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a regular file (a folder, FIFO or device); give the sweep YAML file")
    if info.st_size > MAX_BYTES:
        raise ValueError(f"{path}: {info.st_size} bytes; a sweep file may have at most {MAX_BYTES} bytes")
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply; a sweep file may nest at most {MAX_DEPTH} levels") from None
    check_tree(raw)
    return raw


def check_tree(value: Any, where: str = "", depth: int = 0, budget: list[int] | None = None) -> None:
    """Walk a parsed sweep: nesting depth, total values (aliases counted each time), finite floats.

    Example:
        >>> check_tree({"train": {"lr": float("nan")}})
        Traceback (most recent call last):
        ...
        ValueError: train.lr must be a finite number, got nan
    """
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"the sweep expands to more than {MAX_NODES} values (YAML aliases repeated?); "
                         "write the values out or use fewer aliases")
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or 'the sweep'} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            check_tree(item, f"{where}.{key}" if where else str(key), depth + 1, budget)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_tree(item, f"{where}[{i}]", depth + 1, budget)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value}")


def number(value: Any, where: str, *, low: float | None = None, high: float | None = None, integer: bool = False,
           low_open: bool = False) -> None:
    """``value`` is a finite number (an int if ``integer``) with ``low <= value <= high`` (``low < value``).

    Example:
        >>> number(0, "train.lr", low=0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: train.lr must be a number > 0, got 0
    """
    kinds = int if integer else (int, float)
    bounds = " ".join(p for p in ((f"> {low:g}" if low_open else f">= {low:g}") if low is not None else "",
                                  f"<= {high:g}" if high is not None else "") if p)
    wanted = f"{'an integer' if integer else 'a number'}{' ' + bounds if bounds else ''}"
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ValueError(f"{where} must be {wanted}, got {value!r}")

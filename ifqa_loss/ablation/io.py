"""Files of a run folder: atomic writes, strict JSON, paths stored relative to the run folder.

The one home of file writing for ``runner`` and ``report`` (they used to import each other).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_atomic", "strict", "dumps", "read_run_config", "portable_path", "resolve_path"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one, never a part.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_atomic(Path(d) / "done.json", "{}")
        ...     sorted(p.name for p in Path(d).iterdir())
        ['done.json']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def strict(value: Any) -> Any:
    """``value`` with NaN/±Infinity as ``None`` and numpy scalars/arrays as Python numbers/lists.

    Example:
        >>> strict({"p": float("nan"), "d": [np.float64(1.5), float("inf")]})
        {'p': None, 'd': [1.5, None]}
    """
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs) -> str:
    """JSON any language reads: no NaN/Infinity tokens (they become ``null``), ``allow_nan=False`` enforced.

    Example:
        >>> dumps({"p": float("nan")})
        '{"p": null}'
    """
    return json.dumps(strict(value), allow_nan=False, **kwargs)


def read_run_config(run_dir: Path) -> dict:
    """A run folder's ``config.json``, read with :func:`ifqa_loss.safeio.read_json`'s limits (regular UTF-8 file,
    size, nesting, strict JSON); :class:`~.schema.SweepConfigError` naming the file and the fix when unreadable.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "config.json").write_text('{"seeds": [0], "seeds": [1]}')
        ...     read_run_config(Path(d))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ifqa_loss.ablation.schema.SweepConfigError: ...config.json' names 'seeds' twice: keep one entry; restore it ...
    """
    from ..safeio import read_json
    from .schema import SweepConfigError

    stored = Path(run_dir) / "config.json"
    try:
        raw = read_json(stored, "run configuration")
    except (OSError, ValueError) as exc:  # ValueError: safeio.UnreadableInput, which names the file
        detail = f"{stored} cannot be read ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
        raise SweepConfigError(f"{detail}; restore it from config.yaml (or rerun the sweep) or choose a new "
                               "--out") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{stored} holds a {type(raw).__name__}, not a sweep configuration; restore it from "
                               "config.yaml (or rerun the sweep) or choose a new --out")
    return raw


def portable_path(path: str, run_dir: Path) -> str:
    """``path`` as stored in ``config.json``: relative to the run folder when it lies inside it or beside it.

    A run folder moved or mounted elsewhere (with its data alongside) still resolves; paths far away
    (other mounts) stay absolute.

    Example:
        >>> portable_path("/data/runs/faces", Path("/data/runs/sweep"))
        '../faces'
    """
    if not path or "{" in path or not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path, Path(run_dir).absolute())
    except ValueError:  # another drive (Windows)
        return path
    return relative if relative.count("..") <= 2 else path


def resolve_path(path: str, run_dir: Path) -> str:
    """The inverse of :func:`portable_path`: a stored relative path taken from the run folder.

    Example:
        >>> resolve_path("../faces", Path("/data/runs/sweep"))
        '/data/runs/faces'
    """
    if not path or "{" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(Path(run_dir).absolute(), path))

"""What ``train-gfiqa`` checks before it trains: the run folder, a resumed run's state, the JSON options, the
numbers, and every image of the meta file (readable, a regular file, not a decompression bomb).

Each refusal is a ``ValueError`` that names the problem and the fix; nothing in ``--out`` is written or
changed before all of them pass.
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import math
import os
from pathlib import Path

from ..registry import get_spec
from ..safeio import UnreadableInput, parse_json

RUN_FILES = ("last.pth", "best.pth", "log.csv", "result.json", "split.csv")
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "best")
LOG_HEADER = ["epoch", "lr", "train_loss", "val_srcc", "val_plcc", "val_rmse", "seconds"]


def check_out_folder(out: str | os.PathLike, resume: bool) -> Path | None:
    """The ``last.pth`` to resume from (``None``: a new run). Refuses an ``--out`` that is a file (left untouched)
    and one holding a run unless ``resume``, naming what it holds."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise ValueError(f"--out {str(out)!r} is a broken symbolic link: point it at a folder or choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder: choose a folder for the run (the file was "
                         "left as it is)")
    held = [name for name in RUN_FILES if (out / name).exists()]
    last = out / "last.pth"
    if held and not resume:
        raise ValueError(f"--out {str(out)!r} already holds a train-gfiqa run ({describe_run(out, held)}): pass "
                         "--resume to continue it, or choose another --out (nothing was changed)")
    if resume and held and not last.is_file():
        raise ValueError(f"--resume: {str(out)!r} holds {', '.join(held)} but no last.pth to resume from (the run "
                         "ended before its first epoch was saved): choose another --out, or move those files away")
    return last if resume and last.is_file() else None


def describe_run(out: Path, held: list[str]) -> str:
    """``"last.pth, log.csv (3 epochs), ..."``: what a run folder holds."""
    parts = []
    for name in held:
        if name == "log.csv":
            epochs = len(read_log(out / name))
            parts.append(f"log.csv ({epochs} epoch{'s' if epochs != 1 else ''})")
        else:
            parts.append(name)
    return ", ".join(parts)


def read_log(path: Path) -> list[list[str]]:
    """The data rows of a run's ``log.csv`` (no header); unreadable rows are dropped."""
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8", errors="replace"))))
    except OSError:
        return []
    return [r for r in rows[1:] if r and r[0].strip().isdigit()]


def log_before(path: Path, start_epoch: int) -> None:
    """Keep only the rows of epochs before ``start_epoch`` (a run stopped between writing an epoch's row and
    saving its checkpoint repeats that epoch on resume: its row must not appear twice)."""
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if int(r[0]) < start_epoch]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LOG_HEADER)
        writer.writerows(kept)
    os.replace(tmp, path)


def check_resume_state(state: dict, path: Path, metric: str, config: dict) -> None:
    """Refuse a checkpoint that cannot continue this run: no optimiser/scheduler state or counters, another
    model, or other architecture arguments than ``config`` (the network built from ``--model-kwargs``)."""
    spec = get_spec(metric)
    missing = [key for key in RESUME_KEYS if key not in state]
    if spec.checkpoint_key not in state:
        missing.insert(0, spec.checkpoint_key)
    if missing:
        raise ValueError(f"{path} cannot be resumed: it holds no {', '.join(repr(k) for k in missing)} (optimiser "
                         "state and counters; a best.pth or an exported checkpoint has none): resume from the "
                         "last.pth train-gfiqa wrote, or start a new run in another --out")
    if not isinstance(state["epoch"], int) or not isinstance(state["best"], dict):
        raise ValueError(f"{path} cannot be resumed: its 'epoch'/'best' counters are damaged; start a new run")
    recorded = state.get("metric")
    if isinstance(recorded, str) and recorded != spec.name:
        raise ValueError(f"{path} holds a {recorded!r} run, not {spec.name!r}: resume with the --model it was "
                         "trained with")
    stored = _plain(state.get("config", {}))
    now = _plain(config)
    if isinstance(stored, dict) and stored != now:
        diff = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in diff)
        asked = ", ".join(f"{k}={now.get(k)!r}" for k in diff)
        raise ValueError(f"{path} was trained with other architecture arguments ({was}) than this command builds "
                         f"({asked}): resume with the run's --model-kwargs, or start a new run in another --out")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def parse_model_kwargs(text: str | dict | None, metric: str) -> dict:
    """``--model-kwargs`` JSON (or its dict): an object of the model's architecture arguments, each valid."""
    from ..weights.verify import _config_value_problem

    if not text:
        return {}
    value = dict(text) if isinstance(text, dict) else _json_object(text, "--model-kwargs")
    spec = get_spec(metric)
    parameters = inspect.signature(getattr(spec.build, "architecture", spec.build)).parameters
    valid = sorted(k for k in parameters if k != "self")
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ValueError(f"--model-kwargs: unknown field(s) {unknown} for {spec.name!r}; valid fields: "
                         f"{', '.join(valid)}")
    for key, item in value.items():
        problem = _config_value_problem(tuple(item) if isinstance(item, list) else item, parameters[key].default)
        if problem:
            raise ValueError(f"--model-kwargs: {key}={item!r} is {problem}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


def parse_loss_weights(text: str | None, cls):
    """``--loss-weights`` JSON: an object of ``cls``'s fields (λs), each a finite number >= 0."""
    if not text:
        return cls()
    value = _json_object(text, "--loss-weights")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ValueError(f"--loss-weights: unknown field(s) {unknown}; valid fields: {', '.join(valid)}")
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item) or item < 0:
            raise ValueError(f"--loss-weights: {key}={item!r} must be a finite number >= 0")
    return cls(**{k: float(v) for k, v in value.items()})


def _json_object(text: str, option: str) -> dict:
    try:
        value = parse_json(text, option, max_depth=8)
    except UnreadableInput as exc:
        raise ValueError(f"{exc}; write a JSON object, e.g. '{{\"name\": 1}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object ({{\"field\": value}}), got a {type(value).__name__}")
    return value


def check_numbers(cfg) -> None:
    """Epochs, batch size, learning rate and its step, workers: finite and in range, named when not."""
    checks = [("--epochs", cfg.epochs, 1, 10**6), ("--batch-size", cfg.batch_size, 1, 1 << 16),
              ("--lr-step", cfg.lr_step, 1, 10**6), ("--workers", cfg.workers, 0, 256)]
    for option, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{option} must be a whole number in [{low}, {high}], got {value!r}")
    for option, value in (("--lr", cfg.lr), ("lr_gamma", cfg.lr_gamma)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 10:
            raise ValueError(f"{option} must be a finite number in (0, 10], got {value!r}")


def check_images(root: str | os.PathLike, rows: list[dict], max_pixels: int) -> None:
    """Every image of the meta file exists, is a regular image file and declares at most ``max_pixels`` pixels
    (read from the header: a decompression bomb is refused before decoding); the message names the file."""
    from ..imageio import ImageReadError, check_pixel_count

    root = Path(root)
    missing = [r["name"] for r in rows if not (root / r["name"]).exists()]
    if missing:
        raise ValueError(f"{len(missing)} images of the meta file are missing under {root}: {missing[:3]}; fix the "
                         "names or --images")
    for row in rows:
        try:
            check_pixel_count(root / row["name"], max_pixels)
        except ImageReadError as exc:
            raise ValueError(f"{exc}; remove {row['name']!r} from the meta file (or replace it) and rerun") from None

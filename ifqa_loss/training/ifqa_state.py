"""The state of a ``train-ifqa`` run on disk: networks, checkpoints, the run folder and its lock.

A run folder is never overwritten: starting in a folder that holds a run needs ``--resume``; two
trainers on one folder are refused (a lock file names the holder); a resumed run drops the log rows
written after its checkpoint (a kill between checkpoint and log leaves them), so every step is
logged once; options changed on resume are applied and recorded in ``config.json``'s history.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import torch

from ..nets.ifqa_unet import IFQADiscriminator
from ..nets.restorer_unet import RestorationUNet
from .ifqa_config import PUBLISHED_D_WIDTHS, IFQATrainConfig, config_changes

CHECKPOINT_FORMAT = "ifqa-loss/train-ifqa/1"
RUN_FILES = ("last.pth", "log.csv", "val.csv", "config.json")


def build_networks(cfg: IFQATrainConfig) -> tuple[RestorationUNet, IFQADiscriminator]:
    """Generator and discriminator initialised from ``cfg.seed`` (the global RNG is left as it was).

    Example:
        >>> cfg = IFQATrainConfig(data="", out="", size=64, d_widths=(4, 8, 8, 16, 16), d_bottleneck=1, g_width=4,
        ...                       g_depth=2)
        >>> g, d = build_networks(cfg)
        >>> d.config, g(torch.rand(1, 3, 64, 64)).shape
        ({'widths': (4, 8, 8, 16, 16), 'num_bottleneck': 1, 'input_size': 64}, torch.Size([1, 3, 64, 64]))
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = RestorationUNet(**cfg.g_config)
        discriminator = IFQADiscriminator(**cfg.d_config)
    return generator, discriminator


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``train-ifqa`` checkpoint (tensors and plain data only): ``D``, ``G``, optimisers, ``step``, ...

    Example:
        >>> state = load_training_checkpoint("runs/ifqa/last.pth")   # doctest: +SKIP
        >>> state["step"], state["config"]                           # doctest: +SKIP
        (200000, {'widths': [64, 128, 256, 512, 1024], 'num_bottleneck': 4})
    """
    from ..weights import read_training_state

    payload = read_training_state(path)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a train-ifqa checkpoint (no format {CHECKPOINT_FORMAT!r})")
    return payload


def init_discriminator(discriminator: IFQADiscriminator, path: str | os.PathLike) -> None:
    """Load IFQA weights (e.g. the published ``IFQA_Metric.pth``) into ``discriminator`` to fine-tune it.

    Example:
        >>> d = IFQADiscriminator()                      # doctest: +SKIP
        >>> init_discriminator(d, "IFQA_Metric.pth")     # doctest: +SKIP
    """
    from ..weights import read_state_dict

    state_dict = read_state_dict(path)
    ours = discriminator.state_dict()
    wrong = [k for k, v in state_dict.items() if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    missing = [k for k in ours if k not in state_dict]
    if wrong or missing or len(state_dict) != len(ours):
        raise ValueError(
            f"{path} does not fit the discriminator {discriminator.config}: {len(missing)} missing, "
            f"{len(wrong)} wrong shapes (e.g. {(missing + wrong)[:2]}). Fine-tuning IFQA_Metric.pth needs the "
            f"published widths {PUBLISHED_D_WIDTHS} and d_bottleneck=4"
        )
    discriminator.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------- the run folder
class RunFolder:
    """Claims ``out`` for one trainer: refuses a file, a folder holding a run (without ``resume``) and a
    folder another trainer holds. Use as a context manager; the lock is released on exit.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> with RunFolder(out, resume=False):
        ...     _ = (out / "last.pth").write_bytes(b"")
        >>> with RunFolder(out, resume=False):
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: ...holds a run (last.pth)...
    """

    def __init__(self, out: str | os.PathLike, *, resume: bool):
        self.out, self.resume = Path(out), resume
        self.lock_path = self.out / ".train-ifqa.lock"
        self._lock = None

    def _check(self) -> None:
        held = [name for name in RUN_FILES if (self.out / name).exists()]
        if self.resume and not (self.out / "last.pth").is_file():
            what = f" (it holds {', '.join(held)} but no checkpoint yet)" if held else ""
            raise ValueError(f"--resume: {self.out / 'last.pth'} does not exist{what}; start without --resume"
                             + (" in a new --out" if held else ""))
        if not self.resume and held:
            step = _checkpoint_step(self.out / "last.pth")
            at = f" at step {step}" if step is not None else ""
            raise ValueError(f"--out {self.out} holds a run{at} ({', '.join(held)}): pass --resume to continue it, "
                             f"or choose a new --out (nothing was overwritten)")

    def __enter__(self) -> RunFolder:
        from filelock import FileLock, Timeout

        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file, not a run folder: choose a folder path (the file is left "
                             f"as it is)")
        self._check()  # before creating anything; again under the lock, where it counts
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.lock_path), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            self._lock = None
            holder = _read_holder(self.out / ".train-ifqa.holder")
            raise ValueError(f"another train-ifqa is writing to {self.out}{holder}: wait for it to finish or stop "
                             f"it, or choose another --out") from None
        try:
            self._check()
        except BaseException:
            self.__exit__()
            raise
        (self.out / ".train-ifqa.holder").write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            (self.out / ".train-ifqa.holder").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None


def _read_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f" (pid {info['pid']}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['started']))})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _checkpoint_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(load_training_checkpoint(path)["step"])
    except Exception:  # an unreadable checkpoint still holds a run; its step is just unknown
        return None


def truncate_log(path: Path, step: int) -> int:
    """Drop the rows of a CSV log (first column ``step``) after ``step``; returns how many were dropped.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "log.csv"
        >>> _ = p.write_text("step,x\\n10,1\\n20,2\\n30,3\\n")
        >>> truncate_log(p, 20), p.read_text().splitlines()
        (1, ['step,x', '10,1', '20,2'])
    """
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0
    keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    dropped = len(rows) - len(keep)
    if dropped:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)
    return dropped


def write_config(out: Path, cfg: IFQATrainConfig, step: int, previous: dict | None) -> dict[str, list]:
    """Write ``config.json``: the options in force plus ``history`` (one entry per start or resume, with
    the options changed at that step). Returns the changes (``{}`` for a new run).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = write_config(out, IFQATrainConfig(data="d", out=str(out)), 0, None)
        >>> old = json.loads((out / "config.json").read_text())
        >>> write_config(out, IFQATrainConfig(data="d", out=str(out), lr_d=5e-4, resume=True), 40, old)
        {'lr_d': [0.001, 0.0005]}
        >>> [h["step"] for h in json.loads((out / "config.json").read_text())["history"]]
        [0, 40]
    """
    changes = config_changes(previous, cfg) if previous is not None else {}
    history = list(previous.get("history", [])) if previous is not None else []
    history.append({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": changes})
    payload = {**cfg.to_dict(), "history": history}
    tmp = out / f".config.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out / "config.json")
    return changes

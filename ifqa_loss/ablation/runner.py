"""Run a sweep into one folder: every setting (or one shard of them), resumable, then the report.

Run folder layout::

    RUN_DIR/config.json, config.yaml     the resolved sweep; paths relative to RUN_DIR where they lie near it
    RUN_DIR/environment.json             package versions, git commits, device, command (environments/: later
                                         invocations, i.e. resumes and other shards)
    RUN_DIR/samples/{lq,gt}_NNN.png      the held-out faces shown in samples.png
    RUN_DIR/settings/<id>/               per setting: per_image.json, train_log.csv, samples/, done.json
    RUN_DIR/results.{csv,json,md}, results_per_seed.csv, plots/*.png, samples.png    (report.py, plots.py)

A setting counts as finished only when its ``done.json`` exists; it is written last, atomically
(write to a temporary file, then ``os.replace``), so an interrupted sweep resumes with the next
unfinished setting. Shards (``shard=(i, n)``) run disjoint settings into the same folder
(or separate folders that ``ablate report`` merges). Each finished setting records the sha256 of its
definition (``SweepConfig.setting_definition``): a sweep file that adds seeds, weights, schedules or
terms extends the folder (finished settings are kept); one that changes what a finished setting
means (its loss, schedule, model, data, training or evaluation) is refused, naming the settings.
Paths are not part of a definition, so a folder moved or mounted elsewhere reports and resumes.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .config import PATH_FIELDS, Setting, SweepConfig, SweepConfigError, plan_settings, shard_settings
from .io import dumps, portable_path, read_run_config, write_atomic

__all__ = ["run_sweep", "is_done", "setting_dir", "environment", "stored_config"]

PACKAGES = ("ifqa-loss", "torch", "torchvision", "kornia", "lpips", "numpy", "scipy", "matplotlib", "basicsr", "gfpgan")


def setting_dir(run_dir: Path, setting: Setting) -> Path:
    return Path(run_dir) / "settings" / setting.id


def is_done(run_dir: Path, setting: Setting) -> bool:
    return (setting_dir(run_dir, setting) / "done.json").is_file()


def _git_commit(folder: Path) -> dict | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty), "folder": str(folder)}


def environment(device: torch.device) -> dict:
    """Versions, git commits (of ifqa-loss and of the working folder) and the device, for the run folder."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "python": platform.python_version(), "platform": platform.platform(), "packages": versions,
        "git": {"ifqa_loss": _git_commit(Path(__file__).resolve().parent), "cwd": _git_commit(Path.cwd())},
        "device": str(device), "command": sys.argv,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def stored_config(cfg: SweepConfig, run_dir: Path) -> dict:
    """``cfg`` as ``config.json`` holds it: paths relative to the run folder where they lie near it."""
    raw = cfg.to_dict()
    for section, key in PATH_FIELDS:
        raw[section][key] = portable_path(raw[section][key], run_dir)
    for options in [*raw["metrics"].values(), *raw["judges"].values()]:
        if options.get("checkpoint"):
            options["checkpoint"] = portable_path(str(options["checkpoint"]), run_dir)
    return raw


def _check_run_dir(cfg: SweepConfig, run_dir: Path) -> bool:
    """Refuse a folder whose finished settings this sweep defines differently; True if config.json must change."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SweepConfigError(f"--out {run_dir} is a file, not a folder; give a run folder (new or to resume) "
                               "— the file was left untouched")
    stored = run_dir / "config.json"
    if not stored.is_file():
        if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / "settings").is_dir():
            raise SweepConfigError(f"--out {run_dir} is a folder with other files and no ablation run; choose an "
                                   "empty or new folder")
        return True
    planned = {s.id: s for s in plan_settings(cfg)}
    changed = []
    for done in sorted((run_dir / "settings").glob("*/done.json")):
        try:
            record = json.loads(done.read_text())
        except (OSError, ValueError):
            continue  # unreadable: treated as unfinished and rerun
        setting = planned.get(done.parent.name)
        if setting is not None and record.get("definition") != cfg.setting_definition(setting):
            changed.append(setting.id)
    if changed:
        raise SweepConfigError(f"{run_dir} holds finished settings that this sweep file defines differently: "
                               f"{changed[:6]}{' ...' if len(changed) > 6 else ''} (loss, schedule, model, data, "
                               "training or evaluation changed, or an older ifqa-loss wrote them); resume with the "
                               "same definitions, or choose a new --out")
    return read_run_config(run_dir) != stored_config(cfg, run_dir)


def _prepare_run_dir(cfg: SweepConfig, run_dir: Path, device: torch.device, update: bool) -> None:
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    if update:  # new, or extended (more seeds / weights / terms): the plan the report reads
        raw = stored_config(cfg, run_dir)
        write_atomic(run_dir / "config.json", dumps(raw, indent=2))
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    # The first invocation's environment is the run's; later ones (resumes, shards) are kept beside it.
    env = dumps(environment(device), indent=2)
    if not (run_dir / "environment.json").exists():
        write_atomic(run_dir / "environment.json", env)
    else:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")  # noqa: UP017
        write_atomic(run_dir / "environments" / f"{stamp}-{os.getpid()}.json", env)


def _resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(requested)


@contextlib.contextmanager
def _distributed(device: torch.device):
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); a no-op otherwise."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _save_samples(folder: Path, prefix: str, images: torch.Tensor) -> None:
    for i, image in enumerate(images):
        _save_png(image, folder / f"{prefix}_{i:03d}.png")


def _finish_setting(cfg: SweepConfig, run_dir: Path, setting: Setting, evaluator, restored: torch.Tensor,
                    gt: torch.Tensor, names: list[str], samples: int, extra: dict) -> None:
    """Evaluate, write the setting's files, and mark it done (last, atomically)."""
    from ..imageio import colorize

    folder = setting_dir(run_dir, setting)
    scores, sets = evaluator.evaluate(restored, gt)
    shown = restored[:samples]
    _save_samples(folder / "samples", "restored", shown)
    maps = evaluator.quality_map(shown) if samples else None
    if maps is not None:
        from PIL import Image

        name, values = maps
        for i, q in enumerate(values):
            Image.fromarray(colorize(q)).save(folder / "samples" / f"map_{i:03d}.png")
        write_atomic(folder / "samples" / "maps.json", dumps({"metric": name, "range": [0, 1], "colormap": "viridis",
                                                             "scores": values.mean((1, 2, 3)).tolist()}))
    record = {"setting": {"id": setting.id, "group": setting.group, "metric": setting.metric,
                          "weight": setting.weight, "schedule": setting.schedule, "seed": setting.seed},
              "definition": cfg.setting_definition(setting), "images": names, "metric_order": evaluator.names,
              "kinds": evaluator.kinds, "lower_is_better": evaluator.lower_is_better,
              "notes": {**evaluator.notes, **evaluator.set_notes(len(names))},
              "metrics": scores, "set_metrics": sets}
    write_atomic(folder / "per_image.json", dumps(record))
    summary = {**{k: float(v.mean()) for k, v in scores.items()}, **sets}
    write_atomic(folder / "done.json", dumps({**record["setting"], "definition": record["definition"],
                                              "mean": summary, **extra}, indent=2))


def run_sweep(cfg: SweepConfig, run_dir: str | os.PathLike, *, shard: tuple[int, int] | None = None,
              progress: bool = True, log=lambda msg: print(msg, file=sys.stderr)) -> dict:
    """Run every unfinished setting of ``cfg`` (or of one shard) into ``run_dir``; report when all are done.

    Returns ``{"ran": [ids], "skipped": [ids finished before], "report": path or None}``.
    """
    import torch.distributed as dist

    from .evaluate import Evaluator

    run_dir = Path(run_dir)
    settings = plan_settings(cfg)
    mine = shard_settings(settings, shard) if shard else settings
    device = _resolve_device(cfg.train.device)
    if cfg.mode == "external" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SweepConfigError("external mode runs your own command: start `ifqa-loss ablate` once, not under "
                               "torchrun (launch torchrun inside external.command if your trainer needs it)")
    update = _check_run_dir(cfg, run_dir)  # on every rank, before any joins the process group
    ran, skipped = [], []
    with _distributed(device):
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            _prepare_run_dir(cfg, run_dir, device, update)
        todo = [s for s in mine if not is_done(run_dir, s)]
        skipped = [s.id for s in mine if s not in todo]
        if skipped:
            log(f"resuming: {len(skipped)} of {len(mine)} settings already done")
        if todo:
            evaluator = Evaluator(cfg, device=device)
            if cfg.mode == "builtin":
                ran = _run_builtin(cfg, run_dir, todo, evaluator, device, rank, progress)
            else:
                ran = _run_external(cfg, run_dir, todo, evaluator, progress)
    report = None
    if rank == 0 and all(is_done(run_dir, s) for s in settings):
        from .report import write_report

        report = str(write_report(run_dir))
        log(f"report: {report}")
    elif rank == 0:
        left = sum(not is_done(run_dir, s) for s in settings)
        log(f"{left} of {len(settings)} settings not finished yet (other shards?); once all are done: "
            f"ifqa-loss ablate report {run_dir}")
    return {"ran": ran, "skipped": skipped, "report": report}


def _run_builtin(cfg, run_dir: Path, todo: list[Setting], evaluator, device, rank: int, progress: bool) -> list[str]:
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from .builtin import prepare_data, restore, train_setting

    data = prepare_data(cfg)
    n = min(cfg.evaluation.samples, len(data.val))
    if rank == 0:
        _save_samples(run_dir / "samples", "lq", data.val_lq[:n])
        _save_samples(run_dir / "samples", "gt", data.val[:n])
    ran = []
    for setting in tqdm(todo, desc="sweep", unit="setting", disable=not progress or rank != 0):
        start = time.perf_counter()
        net, train_log = train_setting(cfg, setting, data, device=device, metrics=evaluator.metrics,
                                       lpips=evaluator.lpips, progress=progress)
        if rank == 0:
            folder = setting_dir(run_dir, setting)
            folder.mkdir(parents=True, exist_ok=True)
            buffer = io.StringIO()  # replaced whole: a rerun of an interrupted setting logs each step once
            writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in train_log for k in row)),
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(train_log)
            write_atomic(folder / "train_log.csv", buffer.getvalue())
            torch.save(net.state_dict(), folder / "restorer.pth")
            restored = restore(net, data.val_lq, cfg.model, device=device, batch_size=cfg.evaluation.batch_size)
            _finish_setting(cfg, run_dir, setting, evaluator, restored, data.val, data.val_names, n,
                            {"train_seconds": time.perf_counter() - start, "steps": cfg.train.steps})
        if dist.is_initialized():
            dist.barrier()
        ran.append(setting.id)
    return ran


def _run_external(cfg, run_dir: Path, todo: list[Setting], evaluator, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    from .external import load_folder, read_restored, run_command

    gt, stems = load_folder(cfg.external.gt, "external.gt")
    n = min(cfg.evaluation.samples, len(gt))
    if cfg.external.lq:
        lq, _ = load_folder(cfg.external.lq, "external.lq")
        _save_samples(run_dir / "samples", "lq", lq[:n])
    _save_samples(run_dir / "samples", "gt", gt[:n])
    ran = []
    for setting in tqdm(todo, desc="sweep", unit="setting", disable=not progress):
        start = time.perf_counter()
        out = setting_dir(run_dir, setting).resolve()
        run_command(cfg, setting, out, run_dir.resolve())
        restored = read_restored(cfg, setting, out, run_dir.resolve(), stems, tuple(gt.shape[-2:]))
        _finish_setting(cfg, run_dir, setting, evaluator, restored, gt, stems, n,
                        {"train_seconds": time.perf_counter() - start})
        ran.append(setting.id)
    return ran

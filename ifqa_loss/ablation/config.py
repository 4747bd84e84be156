"""The sweep file: YAML loading (bounded by :mod:`ifqa_loss.safeio`) and validation with errors that name the fix.

A sweep is a base objective (``base``: L1, LPIPS, ...) plus one quality term per setting
(``sweep``: IFQA / IFQA++ / GFIQA at a list of weights and schedules), each trained with
every seed in ``seeds``, judged by held-out ``judges``. The weight-0 baseline is always part of
the plan. The dataclasses live in :mod:`.schema` (re-exported here). See
``integrations/ablation/sweep_tiny.yaml`` for a complete file.
"""
from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from .schema import (
    BASE_LOSS_TYPES,
    METRIC_LOSSES,
    MODES,
    PATH_FIELDS,
    DataConfig,
    EvaluationConfig,
    ExternalConfig,
    LPIPSConfig,
    ModelConfig,
    Setting,
    SweepConfig,
    SweepConfigError,
    SweepTerm,
    TrainConfig,
    check_finite,
    number,
    parse_shard,
    plan_settings,
    shard_settings,
)

__all__ = ["SweepConfig", "Setting", "SweepConfigError", "config_from_dict", "load_config", "check_net_class",
           "plan_settings", "parse_shard", "shard_settings", "PATH_FIELDS", "METRIC_LOSSES", "LPIPSConfig",
           "ModelConfig", "MAX_SWEEP_BYTES", "MAX_SWEEP_DEPTH", "MAX_SWEEP_VALUES"]

# A sweep file is a few dozen lines: its limits are far tighter than safeio's defaults for other inputs.
MAX_SWEEP_BYTES = 1 << 20
MAX_SWEEP_DEPTH = 32
MAX_SWEEP_VALUES = 100_000  # values once YAML aliases are expanded (a "billion laughs" file stops here)


def _build(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if where == "evaluation" and "test" in unknown:
        import warnings

        warnings.warn(f"evaluation.test ({raw['test']!r}) is ignored: the test is a one-sample t-test over per-seed "
                      "deltas (the seed is the unit of replication, not the image); delete the field",
                      UserWarning, stacklevel=4)
        raw = {k: v for k, v in raw.items() if k != "test"}
        unknown.remove("test")
    if unknown:
        raise SweepConfigError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise SweepConfigError(f"{where}: {exc}") from exc


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SweepConfigError(message)


def _number(value, where: str, **bounds) -> None:
    try:
        number(value, where, **bounds)
    except ValueError as exc:
        raise SweepConfigError(str(exc)) from None


def config_from_dict(raw: dict, *, base_dir: str | os.PathLike = ".", check_imports: bool = True) -> SweepConfig:
    """Validate a parsed sweep file; relative paths are taken from ``base_dir`` (the file's folder).

    ``check_imports``: resolve ``model.net`` to an ``nn.Module`` subclass now (importing its module runs
    that module's top-level code, as any import does; nothing is called). The report turns it off.

    Example:
        >>> cfg = config_from_dict({"sweep": [{"metric": "ifqa", "weights": [0.1]}], "data": {"hq": "faces"},
        ...                         "metrics": {"ifqa": {"random_weights": True}}})
        >>> cfg.sweep[0].weights, len(plan_settings(cfg))
        ([0.1], 2)
    """
    if not isinstance(raw, dict):
        raise SweepConfigError("the sweep file must be a YAML mapping (name, seeds, base, sweep, metrics, data, ...)")
    try:
        check_finite(raw)
    except ValueError as exc:
        raise SweepConfigError(str(exc)) from None
    try:
        raw = json.loads(json.dumps(raw))  # a private copy: aliases (shared objects) become separate values
    except (TypeError, ValueError) as exc:
        raise SweepConfigError(f"the sweep holds a value that is not plain data (numbers, strings, lists, "
                               f"mappings): {exc}") from None
    known = {f.name for f in fields(SweepConfig)}
    unknown = sorted(set(raw) - known)
    _check(not unknown, f"unknown top-level field(s) {unknown}; valid fields are {sorted(known)}")
    nested = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "lpips": LPIPSConfig,
              "evaluation": EvaluationConfig, "external": ExternalConfig}
    for key, cls in nested.items():
        raw[key] = _build(cls, raw.get(key), key)
    terms = raw.get("sweep", [{}])
    if isinstance(terms, dict):
        terms = [terms]
    _check(isinstance(terms, list) and terms, "sweep must be a list of terms, e.g. [{metric: ifqa, weights: [0, 0.1]}]")
    raw["sweep"] = [_build(SweepTerm, t, f"sweep[{i}]") for i, t in enumerate(terms)]
    for key in ("metrics", "judges", "base"):
        _check(isinstance(raw.get(key, {}), dict), f"{key} must be a mapping of names to options")
    cfg = SweepConfig(**raw)
    _validate(cfg)
    if cfg.mode == "builtin" and check_imports:
        check_net_class(cfg.model.net)
    _resolve_paths(cfg, Path(base_dir))
    return cfg


def check_net_class(path: str) -> type:
    """``model.net`` -> the class, refused unless it is an ``nn.Module`` subclass; nothing is called.

    Importing ``pkg.module`` runs that module's top-level code (as any Python import does): name only
    modules you trust.

    Example:
        >>> check_net_class("ifqa_loss.nets.restorer_unet.RestorationUNet").__name__
        'RestorationUNet'
        >>> try:
        ...     check_net_class("os.system")
        ... except SweepConfigError as exc:
        ...     print(str(exc)[:50])
        model.net 'os.system' is a builtin_function_or_met
    """
    import importlib

    from torch import nn

    _check(isinstance(path, str) and re.fullmatch(r"[A-Za-z_][\w.]*[.:][A-Za-z_]\w*", path or "") is not None,
           f"model.net must be an import path pkg.module.Class (or pkg.module:Class), got {path!r}")
    module, _, name = path.replace(":", ".").rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SweepConfigError(f"model.net: cannot import {path!r} ({exc}); give pkg.module.Class") from exc
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise SweepConfigError(f"model.net {path!r} is a {type(obj).__name__}, not an nn.Module subclass; give "
                               "pkg.module.Class of your restoration network")
    return obj


def _validate(cfg: SweepConfig) -> None:
    _check(cfg.mode in MODES, f"mode must be one of {MODES}, got {cfg.mode!r}")
    _check(isinstance(cfg.name, str) and re.fullmatch(r"[A-Za-z0-9_.+-]{1,100}", cfg.name) is not None,
           f"name must be 1-100 letters, digits, '_', '.', '+' or '-', got {cfg.name!r}")
    _check(isinstance(cfg.seeds, list) and cfg.seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                             and 0 <= s < 2**63 for s in cfg.seeds)
           and len(set(cfg.seeds)) == len(cfg.seeds),
           f"seeds must be a non-empty list of distinct ints >= 0, got {cfg.seeds}")
    _check(isinstance(cfg.base, dict) and cfg.base, "base must map term names to {type, weight}, e.g. "
           "{l1: {type: L1Loss, weight: 1.0}}: the objective every setting shares")
    for name, spec in cfg.base.items():
        _check(isinstance(spec, dict) and spec.get("type") in BASE_LOSS_TYPES,
               f"base.{name}: type must be one of {BASE_LOSS_TYPES}, got {spec!r}")
        _check(set(spec) <= {"type", "weight"}, f"base.{name}: only type and weight are read, got {sorted(spec)}")
        _number(spec.get("weight", 1.0), f"base.{name}.weight", low=0)
    for name, options in cfg.metrics.items():
        _check(name in METRIC_LOSSES, f"metrics: unknown metric {name!r}; choose from {sorted(METRIC_LOSSES)}")
        _check(isinstance(options, dict) and (options.get("checkpoint") or options.get("random_weights")),
               f"metrics.{name} needs checkpoint: PATH (the official/trained weights), or random_weights: true "
               "to try the wiring (results are then labelled RANDOM WEIGHTS and mean nothing)")
        _check(not (options.get("checkpoint") and options.get("random_weights")),
               f"metrics.{name}: give checkpoint or random_weights, not both")
    from .judges import check_judges

    try:
        check_judges(cfg.judges, loss_metrics=cfg.metrics)
    except ValueError as exc:
        raise SweepConfigError(str(exc)) from None
    for i, term in enumerate(cfg.sweep):
        where = f"sweep[{i}]"
        _check(term.metric in cfg.metrics, f"{where}.metric {term.metric!r} has no entry in metrics; add "
               f"metrics: {{{term.metric}: {{checkpoint: PATH}}}}")
        _check(isinstance(term.weights, list) and term.weights, f"{where}.weights must be a non-empty list of "
               f"numbers >= 0, got {term.weights}")
        for j, weight in enumerate(term.weights):
            _number(weight, f"{where}.weights[{j}]", low=0, high=1e6)
        _check(isinstance(term.loss, dict), f"{where}.loss must map {METRIC_LOSSES[term.metric]} keyword arguments "
               "to values, e.g. {mode: nonsaturating}")
        _check(isinstance(term.schedules, dict) and term.schedules,
               f"{where}.schedules must map names to LossComposer schedules, e.g. {{constant: null, "
               "warmup: {type: linear_warmup, steps: 50}}")
        from ..losses.composer import build_schedule

        for name, spec in term.schedules.items():
            _check(re.fullmatch(r"[A-Za-z0-9_.]+", str(name)) is not None,
                   f"{where}.schedules: name {name!r} may use only letters, digits, '_' and '.'")
            try:
                build_schedule(spec)
            except (TypeError, ValueError) as exc:
                raise SweepConfigError(f"{where}.schedules.{name}: {exc}") from exc
    _check(len({t.metric for t in cfg.sweep}) == len(cfg.sweep), "sweep: each metric may appear in one term only; "
           "list all its weights and schedules there")
    ev = cfg.evaluation
    _check(isinstance(ev.plots, bool) and isinstance(ev.regions, bool), "evaluation.plots and evaluation.regions "
           "must be true or false")
    known = ["psnr", "ssim", "lpips", *cfg.metrics, *cfg.judges]
    known += [f"{m}_{g}" for m in cfg.metrics if m == "ifqa" for g in ("eyes", "nose", "mouth", "skin")]
    _check(ev.primary is None or ev.primary in known, f"evaluation.primary must name a metric of this sweep "
           f"(a judge, ideally): one of {known}, got {ev.primary!r}")
    _check(ev.color in ("rgb", "y"), f"evaluation.color must be 'rgb' or 'y' (BT.601 luma), got {ev.color!r}")
    _number(ev.crop_border, "evaluation.crop_border", low=0, high=1024, integer=True)
    _number(ev.bootstrap, "evaluation.bootstrap", low=0, high=100_000, integer=True)
    _number(ev.samples, "evaluation.samples", low=0, high=64, integer=True)
    _number(ev.batch_size, "evaluation.batch_size", low=1, high=4096, integer=True)
    if cfg.mode == "builtin":
        _check(bool(cfg.data.hq), "data.hq must name a folder of high-quality aligned faces (built-in mode); "
               "to try it: python -m ifqa_loss.ablation.sample_faces faces/")
        _number(cfg.data.size, "data.size", low=16, high=4096, integer=True)
        _number(cfg.data.val_count, "data.val_count", low=1, high=1_000_000, integer=True)
        _number(cfg.data.split_seed, "data.split_seed", low=0, integer=True)
        _number(cfg.data.eval_seed, "data.eval_seed", low=0, integer=True)
        _number(cfg.train.steps, "train.steps", low=1, high=10**9, integer=True)
        _number(cfg.train.batch_size, "train.batch_size", low=1, high=65536, integer=True)
        _number(cfg.train.lr, "train.lr", low=0, high=10, low_open=True)
        _check(isinstance(cfg.model.kwargs, dict), "model.kwargs must map argument names to values")
        lo_hi = cfg.model.input_range
        _check(isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2, "model.input_range must be [low, high]")
        for k, v in enumerate(lo_hi):
            _number(v, f"model.input_range[{k}]")
        _check(lo_hi[0] < lo_hi[1], f"model.input_range must be [low, high] with low < high, got {list(lo_hi)}")
        from ..training.degradations import DegradationConfig

        _check(isinstance(cfg.data.degradation, dict), "data.degradation must map DegradationConfig fields to values")
        try:
            DegradationConfig(**cfg.data.degradation)
        except (TypeError, ValueError) as exc:
            raise SweepConfigError(f"data.degradation: {exc}") from exc
    else:
        _check(bool(cfg.external.command), "external.command must be the training command of one setting, e.g. "
               "'python train.py --ifqa-weight {weight} --seed {seed} --out {out}'")
        _check(bool(cfg.external.gt), "external.gt must name the folder of held-out ground-truth faces")
        _check(isinstance(cfg.external.restored, str) and "{stem}" in cfg.external.restored,
               "external.restored must contain {stem} (the ground-truth file name)")
        _check(isinstance(cfg.external.resize, bool), "external.resize must be true or false")
        _check(isinstance(cfg.external.optimised, list) and all(isinstance(n, str) for n in cfg.external.optimised),
               "external.optimised must list metric names your trainer's loss sees, e.g. [identity]")


def _resolve_paths(cfg: SweepConfig, base: Path) -> None:
    def resolve(path: str) -> str:
        if not path or "{" in path:
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    cfg.data.hq = resolve(cfg.data.hq)
    cfg.external.gt = resolve(cfg.external.gt)
    cfg.external.lq = resolve(cfg.external.lq)
    cfg.external.cwd = resolve(cfg.external.cwd)
    for options in [*cfg.metrics.values(), *cfg.judges.values()]:
        if options.get("checkpoint"):
            options["checkpoint"] = resolve(str(options["checkpoint"]))


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep YAML file (relative paths are relative to the file).

    The file is read with :func:`ifqa_loss.safeio.read_yaml` (a regular UTF-8 file: FIFOs and devices are
    refused before a byte is read) within :data:`MAX_SWEEP_BYTES`, :data:`MAX_SWEEP_DEPTH` levels and
    :data:`MAX_SWEEP_VALUES` values after aliases.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "sweep.yaml"
        >>> _ = path.write_text("sweep: [{metric: ifqa, weights: [0.1]}]\\ndata: {hq: faces}\\n"
        ...                     "metrics: {ifqa: {random_weights: true}}\\n")
        >>> load_config(path).sweep[0].weights
        [0.1]
    """
    from ..safeio import read_yaml

    path = Path(path)
    try:
        raw = read_yaml(path, "sweep file", limit=MAX_SWEEP_BYTES, max_depth=MAX_SWEEP_DEPTH,
                        max_nodes=MAX_SWEEP_VALUES)
    except ValueError as exc:  # safeio.UnreadableInput: a FIFO or device, too large, not UTF-8, not YAML, a bomb
        raise SweepConfigError(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise SweepConfigError(f"sweep file {str(path)!r} does not exist: check the path") from None
        if exc.errno == errno.EISDIR:
            raise SweepConfigError(f"sweep file {str(path)!r} is a folder, not a regular file: give the sweep "
                                   "YAML file in it") from None
        raise SweepConfigError(f"sweep file {str(path)!r} cannot be read ({exc.strerror}): check the path and "
                               "its permissions") from None
    return config_from_dict(raw, base_dir=path.parent)

"""The sweep file: dataclasses, YAML loading and validation with errors that name the fix.

A sweep is a base objective (``base``: L1, LPIPS, ...) plus one quality term per setting
(``sweep``: IFQA / IFQA++ / GFIQA at a list of weights and schedules), each trained with
every seed in ``seeds``. The weight-0 baseline is always part of the plan. See
``integrations/ablation/sweep_tiny.yaml`` for a complete file.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["SweepConfig", "Setting", "SweepConfigError", "load_config", "plan_settings", "parse_shard",
           "shard_settings"]

BASE_LOSS_TYPES = ("L1Loss", "MSELoss", "SmoothL1Loss", "LPIPS")
METRIC_LOSSES = {"ifqa": "IFQALoss", "ifqa++": "IFQAPlusLoss", "gfiqa": "GFIQALoss", "gfiqa-resnet50": "GFIQALoss"}
SIGNIFICANCE_TESTS = ("wilcoxon", "ttest")
MODES = ("builtin", "external")


class SweepConfigError(ValueError):
    """The sweep file is wrong; the message names the field and the fix."""


@dataclass
class DataConfig:
    """Built-in mode: HQ faces from ``hq``, degraded on the fly; ``val_count`` of them (seeded) are held out."""

    hq: str = ""
    size: int = 64
    val_count: int = 4
    split_seed: int = 0
    eval_seed: int = 1234  # degradations of the held-out images: the same for every setting
    degradation: dict = field(default_factory=dict)  # DegradationConfig fields


@dataclass
class ModelConfig:
    """The restoration network: ``net`` is an import path (``pkg.module.Class`` or ``pkg.module:Class``)."""

    net: str = "ifqa_loss.nets.restorer_unet.RestorationUNet"
    kwargs: dict = field(default_factory=lambda: {"width": 16, "depth": 2})
    input_range: tuple[float, float] = (0.0, 1.0)  # the range the net takes and returns


@dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    amp: bool = True  # bf16 (or fp16 + GradScaler) autocast on CUDA; ignored on CPU
    device: str = "auto"  # auto: cuda if available (LOCAL_RANK's GPU under torchrun)


@dataclass
class LPIPSConfig:
    net: str = "alex"
    # The lpips package ships its linear heads; the backbone comes from torchvision's cache. Without it
    # the run stops, unless this is set: then LPIPS uses a RANDOM backbone and every table says so.
    random_backbone: bool = False


@dataclass
class EvaluationConfig:
    test: str = "wilcoxon"  # paired over images, each setting against the weight-0 baseline
    samples: int = 4  # held-out images shown per setting in samples.png
    batch_size: int = 8
    regions: bool = True  # region-wise IFQA (eyes, nose, mouth, skin) from the FFHQ template


@dataclass
class SweepTerm:
    """One quality term to sweep: ``metric`` names an entry of ``metrics``; ``loss`` goes to its loss class."""

    metric: str = "ifqa"
    weights: list[float] = field(default_factory=lambda: [0.0, 0.1])
    schedules: dict[str, dict | None] = field(default_factory=lambda: {"constant": None})
    loss: dict = field(default_factory=dict)  # e.g. {mode: nonsaturating, region_weights: {eyes: 2.0}}


@dataclass
class ExternalConfig:
    """External mode: ``command`` trains one setting; ``restored`` finds each held-out image it wrote.

    Template fields in ``command``, ``restored`` and ``env`` values: ``{weight}``, ``{seed}``, ``{out}``
    (the setting's folder), ``{setting}`` (its id), ``{metric}``, ``{schedule}``, ``{run_dir}``;
    ``restored`` also gets ``{stem}`` (the ground-truth file's name without suffix) and may be a glob
    (the newest match wins, e.g. basicsr's ``visualization/{stem}/{stem}_*.png``).
    """

    command: str | list[str] = ""
    restored: str = "{out}/restored/{stem}.png"
    gt: str = ""  # folder of held-out ground-truth faces
    lq: str = ""  # optional: their degraded inputs (shown in samples.png)
    cwd: str = "."
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepConfig:
    name: str = "ablation"
    mode: str = "builtin"
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, dict] = field(default_factory=lambda: {"l1": {"type": "L1Loss", "weight": 1.0}})
    sweep: list[SweepTerm] = field(default_factory=lambda: [SweepTerm()])
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> load_metric options (checkpoint / random_weights)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    external: ExternalConfig = field(default_factory=ExternalConfig)

    def to_dict(self) -> dict:
        """Plain-Python form, the content of the run folder's ``config.json``."""
        return json.loads(json.dumps(asdict(self)))

    def fingerprint(self) -> str:
        """What must be equal for shards and resumed runs to share a folder (everything but paths is compared)."""
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Setting:
    """One training run: a quality term at a weight and schedule, with a seed. ``metric=None`` is the baseline.

    Example:
        >>> Setting("ifqa", 0.1, "constant", 0).id, Setting(None, 0.0, None, 1).id
        ('ifqa-w0.1-constant-s0', 'baseline-s1')
    """

    metric: str | None
    weight: float
    schedule: str | None
    seed: int

    @property
    def id(self) -> str:
        if self.metric is None:
            return f"baseline-s{self.seed}"
        name = re.sub(r"[^A-Za-z0-9.]+", "p", self.metric)  # ifqa++ -> ifqapp: a safe folder name
        return f"{name}-w{self.weight:g}-{self.schedule}-s{self.seed}"

    @property
    def group(self) -> str:
        """The setting without its seed: the row of the results table."""
        return self.id.rsplit("-s", 1)[0]


def _build(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SweepConfigError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise SweepConfigError(f"{where}: {exc}") from exc


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SweepConfigError(message)


def config_from_dict(raw: dict, *, base_dir: str | os.PathLike = ".") -> SweepConfig:
    """Validate a parsed sweep file; relative paths are taken from ``base_dir`` (the file's folder).

    Example:
        >>> cfg = config_from_dict({"sweep": [{"metric": "ifqa", "weights": [0.1]}], "data": {"hq": "faces"},
        ...                         "metrics": {"ifqa": {"random_weights": True}}})
        >>> cfg.sweep[0].weights, len(plan_settings(cfg))
        ([0.1], 2)
    """
    if not isinstance(raw, dict):
        raise SweepConfigError("the sweep file must be a YAML mapping (name, seeds, base, sweep, metrics, data, ...)")
    raw = dict(raw)
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
    cfg = SweepConfig(**raw)
    _validate(cfg)
    _resolve_paths(cfg, Path(base_dir))
    return cfg


def _validate(cfg: SweepConfig) -> None:
    _check(cfg.mode in MODES, f"mode must be one of {MODES}, got {cfg.mode!r}")
    _check(isinstance(cfg.seeds, list) and cfg.seeds and all(isinstance(s, int) for s in cfg.seeds)
           and len(set(cfg.seeds)) == len(cfg.seeds),
           f"seeds must be a non-empty list of distinct ints, got {cfg.seeds}")
    _check(isinstance(cfg.base, dict) and cfg.base, "base must map term names to {type, weight}, e.g. "
           "{l1: {type: L1Loss, weight: 1.0}}: the objective every setting shares")
    for name, spec in cfg.base.items():
        _check(isinstance(spec, dict) and spec.get("type") in BASE_LOSS_TYPES,
               f"base.{name}: type must be one of {BASE_LOSS_TYPES}, got {spec!r}")
        _check(set(spec) <= {"type", "weight"}, f"base.{name}: only type and weight are read, got {sorted(spec)}")
        _check(isinstance(spec.get("weight", 1.0), (int, float)), f"base.{name}.weight must be a number")
    for name, options in cfg.metrics.items():
        _check(name in METRIC_LOSSES, f"metrics: unknown metric {name!r}; choose from {sorted(METRIC_LOSSES)}")
        _check(isinstance(options, dict) and (options.get("checkpoint") or options.get("random_weights")),
               f"metrics.{name} needs checkpoint: PATH (the official/trained weights), or random_weights: true "
               "to try the wiring (results are then labelled RANDOM WEIGHTS and mean nothing)")
        _check(not (options.get("checkpoint") and options.get("random_weights")),
               f"metrics.{name}: give checkpoint or random_weights, not both")
    for i, term in enumerate(cfg.sweep):
        where = f"sweep[{i}]"
        _check(term.metric in cfg.metrics, f"{where}.metric {term.metric!r} has no entry in metrics; add "
               f"metrics: {{{term.metric}: {{checkpoint: PATH}}}}")
        _check(isinstance(term.weights, list) and term.weights
               and all(isinstance(w, (int, float)) and w >= 0 for w in term.weights),
               f"{where}.weights must be a non-empty list of numbers >= 0, got {term.weights}")
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
    _check(cfg.evaluation.test in SIGNIFICANCE_TESTS,
           f"evaluation.test must be one of {SIGNIFICANCE_TESTS}, got {cfg.evaluation.test!r}")
    if cfg.mode == "builtin":
        _check(bool(cfg.data.hq), "data.hq must name a folder of high-quality aligned faces (built-in mode); "
               "to try it: python -m ifqa_loss.ablation.sample_faces faces/")
        _check(cfg.data.size >= 16 and cfg.data.val_count >= 1, "data.size must be >= 16 and data.val_count >= 1")
        _check(cfg.train.steps >= 1 and cfg.train.batch_size >= 1 and cfg.train.lr > 0,
               "train.steps, train.batch_size must be >= 1 and train.lr > 0")
        from ..training.degradations import DegradationConfig

        try:
            DegradationConfig(**cfg.data.degradation)
        except (TypeError, ValueError) as exc:
            raise SweepConfigError(f"data.degradation: {exc}") from exc
    else:
        _check(bool(cfg.external.command), "external.command must be the training command of one setting, e.g. "
               "'python train.py --ifqa-weight {weight} --seed {seed} --out {out}'")
        _check(bool(cfg.external.gt), "external.gt must name the folder of held-out ground-truth faces")
        _check("{stem}" in cfg.external.restored, "external.restored must contain {stem} (the ground-truth file name)")


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
    for options in cfg.metrics.values():
        if options.get("checkpoint"):
            options["checkpoint"] = resolve(str(options["checkpoint"]))


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep YAML file (relative paths are relative to the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepConfigError(f"{path}: not valid YAML ({exc})") from exc
    return config_from_dict(raw, base_dir=path.parent)


def plan_settings(cfg: SweepConfig) -> list[Setting]:
    """Every setting in a fixed order: the baselines first, then term x weight x schedule, each x seeds."""
    settings = [Setting(None, 0.0, None, seed) for seed in cfg.seeds]
    for term in cfg.sweep:
        for weight, schedule in itertools.product(term.weights, term.schedules):
            if weight == 0:
                continue  # weight 0 is the shared baseline, whatever the term or schedule
            settings += [Setting(term.metric, float(weight), schedule, seed) for seed in cfg.seeds]
    return list(dict.fromkeys(settings))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) -> ``(i, n)``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SweepConfigError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_settings(settings: list[Setting], shard: tuple[int, int]) -> list[Setting]:
    """Round-robin share ``i`` of ``n``: shards are disjoint and together cover every setting."""
    index, count = shard
    return settings[index::count]

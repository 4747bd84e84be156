"""The sweep file's schema: dataclasses, field checks, the settings a sweep plans, shards (loading: :mod:`.config`).

A sweep is a base objective (``base``: L1, LPIPS, ...) plus one quality term per setting
(``sweep``: IFQA / IFQA++ / GFIQA at a list of weights and schedules), each trained with
every seed in ``seeds``. The weight-0 baseline is always part of the plan. See
``integrations/ablation/sweep_tiny.yaml`` for a complete file.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field

__all__ = ["SweepConfig", "Setting", "SweepConfigError", "plan_settings", "parse_shard", "shard_settings",
           "PATH_FIELDS", "DataConfig", "ModelConfig", "TrainConfig", "LPIPSConfig", "EvaluationConfig", "SweepTerm",
           "ExternalConfig", "BASE_LOSS_TYPES", "METRIC_LOSSES", "MODES", "number", "check_finite"]

BASE_LOSS_TYPES = ("L1Loss", "MSELoss", "SmoothL1Loss", "LPIPS")
METRIC_LOSSES = {"ifqa": "IFQALoss", "ifqa++": "IFQAPlusLoss", "gfiqa": "GFIQALoss", "gfiqa-resnet50": "GFIQALoss"}
MODES = ("builtin", "external")
# Fields holding file-system paths: stored relative to the run folder in config.json, and left out of
# the definition a resumed run or a shard must match (a folder moved or mounted elsewhere still resumes).
PATH_FIELDS = (("data", "hq"), ("external", "gt"), ("external", "lq"), ("external", "cwd"))


class SweepConfigError(ValueError):
    """The sweep file is wrong; the message names the field and the fix."""


def number(value, where: str, *, low: float | None = None, high: float | None = None, integer: bool = False,
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


def check_finite(value, where: str = "") -> None:
    """Every float in a parsed sweep is finite (YAML's ``.nan``/``.inf`` are refused by their field's name).

    Sizes and nesting are bounded when the file is read (:func:`ifqa_loss.safeio.read_yaml`).

    Example:
        >>> check_finite({"train": {"lr": float("nan")}})
        Traceback (most recent call last):
        ...
        ValueError: train.lr must be a finite number, got nan
    """
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value}")


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
    """How restorations are judged; the statistics are fixed (seed-level t-test, see ``ablation.stats``)."""

    primary: str | None = None  # the metric Holm and the headline use; default: the first judge
    color: str = "rgb"  # PSNR/SSIM on "rgb" or on "y" (ITU-R BT.601 luma, basicsr's test_y_channel)
    crop_border: int = 0  # pixels dropped at each edge before PSNR/SSIM (basicsr's crop_border)
    bootstrap: int = 2000  # resamples of the secondary (hierarchical bootstrap) interval; 0: off
    samples: int = 4  # held-out images shown per setting in samples.png
    batch_size: int = 8
    regions: bool = True  # region-wise IFQA (eyes, nose, mouth, skin) from the FFHQ template
    plots: bool = True  # plots/ and samples.png (matplotlib); false: the tables only


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
    # Restored images of another size than the ground truth are refused; true resizes them (bilinear,
    # antialiased) to the ground truth's size, and every table says so.
    resize: bool = False
    # Metrics or judges your trainer's own loss terms see (GFP-GAN: an ArcFace identity loss makes an identity
    # judge with the same network optimised): they are labelled "optimised", not "judge".
    optimised: list[str] = field(default_factory=list)


@dataclass
class SweepConfig:
    name: str = "ablation"
    mode: str = "builtin"
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, dict] = field(default_factory=lambda: {"l1": {"type": "L1Loss", "weight": 1.0}})
    sweep: list[SweepTerm] = field(default_factory=lambda: [SweepTerm()])
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> load_metric options (checkpoint / random_weights)
    judges: dict[str, dict] = field(default_factory=dict)  # held-out metrics no loss term sees (ablation.judges)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    external: ExternalConfig = field(default_factory=ExternalConfig)

    def to_dict(self) -> dict:
        """Plain-Python form, the content of the run folder's ``config.json``."""
        return json.loads(json.dumps(asdict(self)))

    def shared_definition(self) -> dict:
        """What every setting's result depends on, beside its own term: all but paths, the plan and the name."""
        raw = self.to_dict()
        for section, key in PATH_FIELDS:
            raw[section].pop(key)
        for key in ("name", "seeds", "sweep"):
            raw.pop(key)
        raw["evaluation"].pop("samples")  # only what samples.png shows
        raw["evaluation"].pop("bootstrap")  # the report's resampling: recomputed from the per-image files
        raw["evaluation"].pop("primary")  # which metric the report leads with
        raw["evaluation"].pop("plots")
        for options in [*raw["metrics"].values(), *raw["judges"].values()]:
            options.pop("checkpoint", None)  # a path (the folder may move); the weights are the user's to keep
        return raw

    def setting_definition(self, setting: Setting) -> str:
        """sha256 of everything one setting's numbers depend on; a finished setting must keep it to be reused.

        Adding seeds, weights, schedules or terms leaves the definitions of finished settings unchanged.
        """
        term = None
        if setting.metric is not None:
            spec = next(t for t in self.sweep if t.metric == setting.metric)
            term = {"metric": spec.metric, "loss": spec.loss, "schedule": spec.schedules.get(setting.schedule)}
        text = json.dumps({"shared": self.shared_definition(), "term": term, "setting": setting.id}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


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

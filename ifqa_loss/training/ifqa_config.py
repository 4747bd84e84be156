"""The options of one ``train-ifqa`` run (:class:`IFQATrainConfig`) and the rules for changing them on resume.

docs/ifqa_training.md says which defaults the IFQA paper states and which are ours, and what each of
our choices was measured to do.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from .degradations import DegradationConfig
from .face_data import MASK_SOURCES
from .ifqa_objective import PRIMARY_PARTS, part_names

PUBLISHED_D_WIDTHS = (64, 128, 256, 512, 1024)
SCHEDULES = ("cosine", "constant")
# Fields that shape the networks: a resumed run must keep them (the checkpoint's weights fit no other).
ARCHITECTURE_FIELDS = ("size", "d_widths", "d_bottleneck", "g_width", "g_depth", "g_blocks")
# Fields that say where a run lives or how it was started, not how it trains: never recorded as changes.
RUN_FIELDS = ("out", "resume", "progress", "init_from")


@dataclass
class IFQATrainConfig:
    """Everything a run depends on (saved in each checkpoint as ``train_config``).

    Example:
        >>> cfg = IFQATrainConfig(data="faces", out="run", steps=10)
        >>> cfg.fprs_parts, cfg.d_widths, cfg.lr_d, cfg.schedule
        (('eyes', 'nose', 'mouth'), (64, 128, 256, 512, 1024), 0.001, 'cosine')
    """

    data: str
    out: str
    size: int = 256
    steps: int = 100_000
    batch_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    schedule: str = "cosine"
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.99
    fake_degraded_prob: float = 0.5
    l1_weight: float = 1.0
    adv_weight: float = 0.1
    d_widths: tuple[int, ...] = PUBLISHED_D_WIDTHS
    d_bottleneck: int = 4
    g_width: int = 32
    g_depth: int = 4
    g_blocks: int = 1
    fprs_prob: float = 0.5
    fprs_parts: tuple[str, ...] = PRIMARY_PARTS
    fprs_part_prob: float = 1.0
    fprs_soft: bool = False
    emphasis_weight: float = 2.0
    emphasis_parts: tuple[str, ...] = PRIMARY_PARTS
    mask_source: str = "template"
    landmarks: str | None = None
    parsing: str | None = None
    mask_jitter: float = 0.02
    hflip: bool = True
    degradations: DegradationConfig = field(default_factory=DegradationConfig)
    val: str | None = None
    val_fraction: float = 0.1
    val_every: int = 500
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    workers: int = 0
    log_every: int = 50
    snapshot_every: int = 1000
    snapshot_images: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False
    init_from: str | None = None
    resume: bool = False
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.degradations, dict):
            self.degradations = DegradationConfig(**self.degradations)
        for name in ("d_widths", "fprs_parts", "emphasis_parts", "betas"):
            setattr(self, name, tuple(getattr(self, name)))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        if self.size % 32:
            raise ValueError(f"size must be a multiple of 32 (the discriminator halves it 5 times), got {self.size}")
        if self.size % 2**self.g_depth:
            raise ValueError(f"size {self.size} must be divisible by 2**g_depth = {2**self.g_depth}")
        if len(self.d_widths) != 5 or min(self.d_widths) < 1:
            raise ValueError(f"d_widths needs 5 positive encoder widths, got {self.d_widths}")
        for name in ("steps", "batch_size", "log_every", "snapshot_every", "checkpoint_every", "val_every",
                     "g_width", "g_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("fprs_prob", "fprs_part_prob", "fake_degraded_prob", "warmup", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1) (0 = no EMA), got {self.ema_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1) (0 = no validation without --val), got "
                             f"{self.val_fraction}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {self.mask_source!r}")
        part_names(self.fprs_parts + self.emphasis_parts)  # raises on unknown names
        if self.emphasis_weight < 0:
            raise ValueError(f"emphasis_weight must be >= 0, got {self.emphasis_weight}")

    @property
    def d_config(self) -> dict:
        """Arguments of :class:`~ifqa_loss.nets.ifqa_unet.IFQADiscriminator`."""
        return {"widths": self.d_widths, "num_bottleneck": self.d_bottleneck, "input_size": self.size}

    @property
    def g_config(self) -> dict:
        return {"width": self.g_width, "depth": self.g_depth, "blocks": self.g_blocks}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # plain lists/dicts: loadable with weights_only=True


def lr_factor(cfg: IFQATrainConfig, step: int) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up over ``warmup * steps``, then cosine
    decay to ``min_lr_ratio`` at ``steps`` (``schedule="cosine"``) or constant. A pure function of the
    step, so a resumed run (or one resumed with more ``steps``) needs no scheduler state.

    Example:
        >>> cfg = IFQATrainConfig(data="", out="", steps=100, warmup=0.1, min_lr_ratio=0.1)
        >>> [round(lr_factor(cfg, s), 3) for s in (0, 9, 10, 55, 100)]
        [0.1, 1.0, 1.0, 0.55, 0.1]
    """
    warm = int(cfg.warmup * cfg.steps)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def config_changes(old: dict, new: IFQATrainConfig) -> dict[str, list]:
    """``{field: [old, new]}`` for every training option that differs from a checkpoint's ``train_config``.

    Raises ValueError naming the field when an architecture option differs (the weights fit no other).

    Example:
        >>> old = IFQATrainConfig(data="d", out="o").to_dict()
        >>> config_changes(old, IFQATrainConfig(data="d", out="o", lr_d=5e-4, resume=True))
        {'lr_d': [0.001, 0.0005]}
    """
    current = new.to_dict()
    for name in ARCHITECTURE_FIELDS:
        if name in old and old[name] != current[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"the run was trained with {name}={old[name]} and this call asks for {current[name]}: "
                             f"an architecture option cannot change on --resume (pass {flag} as before, or start "
                             f"a new run in another --out)")
    return {k: [old.get(k), v] for k, v in current.items() if k not in RUN_FIELDS and old.get(k) != v}

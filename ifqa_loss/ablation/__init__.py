"""Loss-weight ablations: a sweep file in, a paper-ready run folder out (``ifqa-loss ablate``).

    >>> from ifqa_loss.ablation import load_config, run_sweep    # doctest: +SKIP
    >>> run_sweep(load_config("sweep.yaml"), "runs/ablation")    # doctest: +SKIP

``schema`` (the sweep file's dataclasses, finite in-range field checks, plan), ``config`` (loading
with :mod:`ifqa_loss.safeio`'s bounded YAML reader, validation), ``builtin`` (train a restorer on
degraded faces), ``external`` (your own training command), ``evaluate`` (per-image metrics,
optimised vs judge), ``judges`` (held-out metrics as data), ``fidelity`` (PSNR/SSIM, basicsr's
conventions), ``stats`` (seed-level statistics), ``io`` (atomic writes, strict JSON, portable paths),
``runner`` (settings, shards, resume, extension), ``report`` (tables), ``plots`` (figures, sample
grid), ``sample_faces`` (tiny face folder to try it).
"""
from .config import Setting, SweepConfig, SweepConfigError, config_from_dict, load_config, plan_settings
from .report import write_report
from .runner import run_sweep

__all__ = ["Setting", "SweepConfig", "SweepConfigError", "config_from_dict", "load_config", "plan_settings",
           "run_sweep", "write_report"]

"""External mode: run the user's own training command per setting, then read the images it wrote.

The command is a template (``{weight}``, ``{seed}``, ``{out}``, ``{setting}``, ``{metric}``,
``{schedule}``, ``{run_dir}``); it runs without a shell (``shlex`` split) unless given as
``["bash", "-c", "..."]``. Its stdout/stderr go to ``OUT/train.log``; a non-zero exit stops the
sweep with the log's tail, and the setting is not marked done (a rerun retries it).

Restored images must have the ground truth's size: another size is refused with both sizes named,
unless ``external.resize: true`` (bilinear, antialiased; recorded in config.json and labelled on
PSNR/SSIM in every table).

basicsr-based trainers (GFP-GAN, Real-ESRGAN, the recipe in ``integrations/gfpgan/``) take option
overrides on the command line, so one YAML serves every setting::

    python integrations/gfpgan/train_gfpgan_ifqa.py -opt integrations/gfpgan/train_gfpgan_ifqa.yml
        --force_yml train:ifqa_opt:loss_weight={weight} manual_seed={seed} name=ablation_{setting}

``--force_yml key:subkey=value`` (basicsr >= 1.4) sets an existing option (it cannot create new
keys); basicsr then writes its validation images to
``experiments/ablation_{setting}/visualization/{stem}/{stem}_{iter}.png``, which
``restored: "experiments/ablation_{setting}/visualization/{stem}/{stem}_*.png"`` finds (newest wins).
"""
from __future__ import annotations

import glob
import os
import shlex
import subprocess
from pathlib import Path

import torch

from .config import Setting, SweepConfig, SweepConfigError

__all__ = ["template_fields", "run_command", "read_restored", "ExternalCommandError"]


class ExternalCommandError(RuntimeError):
    """The user's training command failed or wrote no images."""


def template_fields(setting: Setting, out: Path, run_dir: Path) -> dict[str, str]:
    """The values a command template may use for one setting.

    Example:
        >>> f = template_fields(Setting("ifqa", 0.1, "constant", 2), Path("runs/x"), Path("runs"))
        >>> f["weight"], f["seed"], f["setting"]
        ('0.1', '2', 'ifqa-w0.1-constant-s2')
    """
    return {"weight": f"{setting.weight:g}", "seed": str(setting.seed), "out": str(out), "setting": setting.id,
            "metric": setting.metric or "none", "schedule": setting.schedule or "none", "run_dir": str(run_dir)}


def _fill(template: str, values: dict[str, str], where: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise SweepConfigError(f"{where}: template {template!r} uses an unknown field {exc}; "
                               f"available: {sorted(values)}") from exc


def run_command(cfg: SweepConfig, setting: Setting, out: Path, run_dir: Path) -> None:
    """Run the setting's training command (blocking), logging to ``out/train.log``."""
    values = template_fields(setting, out, run_dir)
    command = cfg.external.command
    argv = ([_fill(a, values, "external.command") for a in command] if isinstance(command, list)
            else shlex.split(_fill(command, values, "external.command")))
    env = {**os.environ, **{k: _fill(str(v), values, f"external.env.{k}") for k, v in cfg.external.env.items()},
           "IFQA_ABLATION_WEIGHT": values["weight"], "IFQA_ABLATION_SEED": values["seed"],
           "IFQA_ABLATION_OUT": values["out"], "IFQA_ABLATION_SETTING": values["setting"]}
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        try:
            code = subprocess.run(argv, cwd=cfg.external.cwd or None, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL).returncode
        except OSError as exc:
            raise ExternalCommandError(f"{setting.id}: cannot start {argv[0]!r} ({exc}); check external.command") \
                from exc
    if code != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise ExternalCommandError(f"{setting.id}: training command exited with {code}; last lines of {log_path}:\n"
                                   f"{tail}")


def read_restored(cfg: SweepConfig, setting: Setting, out: Path, run_dir: Path, stems: list[str],
                  size: tuple[int, int]) -> torch.Tensor:
    """The restored image of every ground-truth stem -> (N,3,H,W) in [0,1]; another size is refused unless
    ``external.resize`` opts in to resizing it to ``size``."""
    import torch.nn.functional as F

    from ..imageio import ImageReadError, read_image

    values = template_fields(setting, out, run_dir)
    images, missing = [], []
    for stem in stems:
        pattern = _fill(cfg.external.restored, {**values, "stem": stem}, "external.restored")
        if not os.path.isabs(pattern):
            pattern = os.path.join(cfg.external.cwd or ".", pattern)
        matches = sorted(glob.glob(pattern), key=os.path.getmtime)
        if not matches:
            missing.append(pattern)
            continue
        try:
            image = read_image(matches[-1])[None]
        except ImageReadError as exc:
            raise ExternalCommandError(f"{setting.id}: {exc}") from exc
        if image.shape[-2:] != size:
            if not cfg.external.resize:
                raise ExternalCommandError(
                    f"{setting.id}: {matches[-1]} is {image.shape[-1]}x{image.shape[-2]} (WxH) but its ground truth "
                    f"is {size[1]}x{size[0]}; write restorations at the ground truth's size, or set "
                    "external.resize: true to resize them (recorded, and labelled in every table)")
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        images.append(image)
    if missing:
        shown = "\n  ".join(missing[:5])
        raise ExternalCommandError(f"{setting.id}: the command wrote no image for {len(missing)} of {len(stems)} "
                                   f"held-out faces; looked for:\n  {shown}\nfix external.restored (or the command's "
                                   "output folder)")
    return torch.cat(images)


def load_folder(folder: str, where: str) -> tuple[torch.Tensor, list[str]]:
    """All images of a folder (recursive, sorted) -> ((N,3,H,W) in [0,1], file stems); one size required."""
    from ..imageio import ImageReadError, list_images, read_image

    paths, problems = list_images([folder])
    if problems or not paths:
        raise SweepConfigError(f"{where}: no images in {folder!r}")
    try:
        images = [read_image(p) for p in paths]
    except ImageReadError as exc:
        raise SweepConfigError(f"{where}: {exc}") from exc
    if len({tuple(i.shape) for i in images}) != 1:
        raise SweepConfigError(f"{where}: images in {folder} differ in size; held-out faces must share one size")
    return torch.stack(images), [p.stem for p in paths]

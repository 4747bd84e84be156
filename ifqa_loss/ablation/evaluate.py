"""Per-image evaluation of restored faces against their ground truth: optimised metrics and held-out judges.

Every metric is computed per image, so each seed's setting can be compared with the same seed's
baseline image by image (paired); FID/KID judges give one number per set. Images are quantised to
8 bits first, as files written by an external trainer are, so built-in and external runs are measured
alike. Each metric is labelled ``optimised`` (a loss term of the sweep saw it: the swept quality
terms, and base terms: LPIPS in the loss makes LPIPS optimised, MSE makes PSNR optimised) or
``judge`` (no loss term saw it). Statistics live in :mod:`.stats`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np
import torch

from .config import LPIPSConfig, SweepConfig, SweepConfigError

__all__ = ["Evaluator", "load_lpips", "optimised_metrics", "REGION_GROUPS", "LOWER_IS_BETTER"]

# Region-wise IFQA: mean of the quality map inside each soft template mask.
REGION_GROUPS = {"eyes": ("left_eye", "right_eye"), "nose": ("nose",), "mouth": ("mouth",), "skin": ("skin",)}
LOWER_IS_BETTER = ("lpips",)
_LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                    "squeeze": "squeezenet1_1-b8a52dc0.pth"}


class LPIPSBackboneMissing(RuntimeError):
    """torchvision's ImageNet backbone for LPIPS is not in the torch hub cache (nothing is downloaded)."""


def load_lpips(config: LPIPSConfig | None = None, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The lpips package's LPIPS, frozen; refuses to run on a random backbone unless asked to.

    The linear heads ship with lpips; the backbone is torchvision's ImageNet file in
    ``$TORCH_HOME/hub/checkpoints``. Absent, this raises (LPIPS with a random backbone is not
    LPIPS) unless ``config.random_backbone`` is set, which warns and is recorded in the results.
    Forward: two (N,3,H,W) images in [0,1] -> (N,) distances.
    """
    import lpips

    config = config or LPIPSConfig()
    if config.net not in _LPIPS_BACKBONES:
        raise ValueError(f"lpips.net must be one of {sorted(_LPIPS_BACKBONES)}, got {config.net!r}")
    backbone = os.path.join(torch.hub.get_dir(), "checkpoints", _LPIPS_BACKBONES[config.net])
    have = os.path.isfile(backbone)
    if not have and not config.random_backbone:
        raise LPIPSBackboneMissing(
            f"LPIPS-{config.net} needs torchvision's ImageNet backbone at {backbone} (nothing is downloaded). "
            f"Copy {_LPIPS_BACKBONES[config.net]} there, or set `lpips: {{random_backbone: true}}` in the sweep "
            "file to try the wiring (LPIPS numbers are then labelled RANDOM BACKBONE and mean nothing)")
    if not have:
        warnings.warn(f"LPIPS-{config.net} runs on a RANDOM backbone ({backbone} absent): its numbers mean nothing",
                      UserWarning, stacklevel=2)
    # lpips prints (keep stdout for results); a random backbone is drawn from a fixed seed, not the global RNG.
    with contextlib.redirect_stdout(sys.stderr), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # lpips calls torchvision's deprecated pretrained= API: not the user's concern.
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        torch.manual_seed(0)
        model = lpips.LPIPS(net=config.net, pretrained=True, pnet_rand=not have, verbose=False)
    model.random_backbone = not have
    return _LPIPSDistance(model).to(device)


class _LPIPSDistance(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.random_backbone = model.random_backbone

    def train(self, mode: bool = True):
        return self  # frozen: stays in eval mode

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model(pred, target, normalize=True).flatten()  # normalize: [0,1] inputs


def load_metrics(cfg: SweepConfig, device) -> dict:
    """``cfg.metrics`` loaded with :func:`ifqa_loss.load_metric` (random weights warn loudly)."""
    from ..metric import load_metric

    loaded = {}
    for name, options in cfg.metrics.items():
        options = dict(options)
        if options.get("random_weights"):
            options.pop("random_weights")
            options.pop("checkpoint", None)
            loaded[name] = load_metric(name, random_weights=True, device=device, **options)
        else:
            loaded[name] = load_metric(name, options.pop("checkpoint"), device=device)
    return loaded


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> the same image after an 8-bit round trip (what a PNG file holds)."""
    return (x.detach().float().clamp(0, 1) * 255).round() / 255


def optimised_metrics(cfg: SweepConfig) -> set[str]:
    """Every metric some loss term of the sweep saw (swept terms, their region breakdown, base LPIPS/MSE).

    Example:
        >>> from ifqa_loss.ablation.config import config_from_dict
        >>> cfg = config_from_dict({"base": {"l1": {"type": "L1Loss"}, "p": {"type": "LPIPS", "weight": 0.1}},
        ...     "metrics": {"ifqa": {"random_weights": True}}, "data": {"hq": "faces"}})
        >>> sorted(optimised_metrics(cfg))
        ['ifqa', 'ifqa_eyes', 'ifqa_mouth', 'ifqa_nose', 'ifqa_skin', 'lpips']
    """
    seen = set()
    for term in cfg.sweep:
        seen.add(term.metric)
        seen.update(f"{term.metric}_{group}" for group in REGION_GROUPS)
    types = {spec["type"] for spec in cfg.base.values()}
    if "LPIPS" in types:
        seen.add("lpips")
    if "MSELoss" in types:
        seen.add("psnr")  # PSNR is a monotone function of the MSE the loss minimised
    if cfg.mode == "external":
        seen.update(cfg.external.optimised)
    return seen


class Evaluator:
    """Per-image PSNR, SSIM, LPIPS, every configured quality metric (+ region-wise IFQA) and the judges.

    :meth:`evaluate` takes restored and ground-truth (N,3,H,W) in [0,1] ->
    ``({metric: (N,) float64 array}, {set-level judge: float})``; ``kinds``, ``notes`` and
    ``lower_is_better`` describe the metrics.

    Example:
        >>> import warnings; warnings.simplefilter("ignore")
        >>> from ifqa_loss.ablation.config import config_from_dict
        >>> cfg = config_from_dict({"metrics": {"ifqa": {"random_weights": True, "widths": [4, 8, 8, 16, 16],
        ...     "num_bottleneck": 1}}, "lpips": {"net": "squeeze", "random_backbone": True},
        ...     "data": {"hq": "faces"}})
        >>> ev = Evaluator(cfg)
        >>> scores, sets = ev.evaluate(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        >>> sorted(scores)[:4], scores["psnr"].shape, ev.kinds["psnr"], ev.kinds["ifqa"]
        (['ifqa', 'ifqa_eyes', 'ifqa_mouth', 'ifqa_nose'], (2,), 'judge', 'optimised')
    """

    def __init__(self, cfg: SweepConfig, *, device: str | torch.device = "cpu"):
        from .judges import build_judges

        self.device = torch.device(device)
        self.lpips = load_lpips(cfg.lpips, device=self.device)
        self.metrics = load_metrics(cfg, self.device)
        self.regions = cfg.evaluation.regions
        self.color, self.crop_border = cfg.evaluation.color, cfg.evaluation.crop_border
        self.batch_size = cfg.evaluation.batch_size
        self._masks: dict[int, dict[str, torch.Tensor]] = {}

        def lpips_loader(net: str, random_backbone: bool):
            return load_lpips(LPIPSConfig(net=net, random_backbone=random_backbone), device=self.device)

        try:
            self.judges = build_judges(cfg.judges, device=self.device, lpips_loader=lpips_loader)
        except ValueError as exc:
            raise SweepConfigError(str(exc)) from None
        self._optimised = optimised_metrics(cfg)
        self.resized = cfg.mode == "external" and cfg.external.resize

    @property
    def names(self) -> list[str]:
        """Metric names in report order: the judges first (declared ones, then PSNR, SSIM), then the rest."""
        names = [j.name for j in self.judges] + ["psnr", "ssim", "lpips"]
        for name, metric in self.metrics.items():
            names.append(name)
            if self.regions and name == "ifqa" and metric.has_map:
                names += [f"{name}_{group}" for group in REGION_GROUPS]
        return names

    @property
    def kinds(self) -> dict[str, str]:
        """``{metric: "optimised" | "judge"}``: optimised when any loss term of the sweep saw it."""
        return {n: "optimised" if n in self._optimised else "judge" for n in self.names}

    @property
    def lower_is_better(self) -> list[str]:
        return [n for n in self.names if n in LOWER_IS_BETTER] + [j.name for j in self.judges if j.lower_is_better]

    @property
    def notes(self) -> dict[str, str]:
        """Labels that must travel with the numbers: RANDOM WEIGHTS / RANDOM BACKBONE, conventions, feature spaces."""
        notes = {"psnr": f"{self.color.upper()}, crop {self.crop_border}", "ssim": f"{self.color.upper()}, crop "
                 f"{self.crop_border}"}
        if self.resized:
            notes.update({k: v + ", restored RESIZED to ground truth" for k, v in notes.items()})
        for name, metric in self.metrics.items():
            if metric.random_weights:
                notes[name] = "RANDOM WEIGHTS"
                if self.regions and name == "ifqa":
                    notes.update({f"{name}_{group}": "RANDOM WEIGHTS" for group in REGION_GROUPS})
        if self.lpips.random_backbone:
            notes["lpips"] = "RANDOM BACKBONE"
        notes.update({j.name: j.note for j in self.judges if j.note})
        return notes

    def _region_masks(self, size: int) -> dict[str, torch.Tensor]:
        from ..regions import template_regions

        if size not in self._masks:
            masks = template_regions(size, device=self.device)
            self._masks[size] = {g: sum(masks[n] for n in names) for g, names in REGION_GROUPS.items()}
        return self._masks[size]

    def quality_map(self, restored: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """(name, (N,1,S,S) map) of the first configured per-pixel metric (for samples.png), else ``None``."""
        for name, metric in self.metrics.items():
            if metric.has_map:
                with torch.no_grad():
                    return name, metric.quality_map(quantize(restored).to(self.device))
        return None

    @torch.no_grad()
    def __call__(self, restored: torch.Tensor, gt: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-image metrics of one batch: ``{metric: (N,) float64}`` (set-level judges: see :meth:`evaluate`)."""
        from .fidelity import psnr, ssim

        if restored.shape != gt.shape:
            raise ValueError(f"restored {tuple(restored.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        x, y = quantize(restored).to(self.device), quantize(gt).to(self.device)
        out = {j.name: j.per_image(x, y) for j in self.judges if j.per_image is not None}
        out["psnr"] = psnr(x, y, color=self.color, crop_border=self.crop_border)
        out["ssim"] = ssim(x, y, color=self.color, crop_border=self.crop_border)
        out["lpips"] = self.lpips(x, y)
        for name, metric in self.metrics.items():
            if metric.has_map:
                q = metric.quality_map(x)
                out[name] = q.mean((1, 2, 3))
                if self.regions and name == "ifqa":
                    for group, mask in self._region_masks(q.shape[-1]).items():
                        out[f"{name}_{group}"] = (q * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3))
            else:
                out[name] = metric.score(x)
        return {k: v.double().cpu().numpy() for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self, restored: torch.Tensor, gt: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """All held-out images, in batches -> (per-image metrics, set-level judges such as FID/KID)."""
        scores: dict[str, list] = {}
        features: dict[str, tuple[list, list]] = {}
        for r, g in zip(restored.split(self.batch_size), gt.split(self.batch_size), strict=True):
            for k, v in self(r, g).items():
                scores.setdefault(k, []).append(v)
            for j in self.judges:
                if j.set_level is not None:
                    embed = j.set_level[0]
                    a, b = features.setdefault(j.name, ([], []))
                    a.append(embed(quantize(r).to(self.device)).cpu().numpy())
                    b.append(embed(quantize(g).to(self.device)).cpu().numpy())
        per_image = {k: np.concatenate(v) for k, v in scores.items()}
        sets = {}
        for j in self.judges:
            if j.set_level is not None:
                a, b = (np.concatenate(f) for f in features[j.name])
                sets[j.name] = j.set_level[1](a, b)
        return per_image, sets

    def set_notes(self, count: int) -> dict[str, str]:
        """Set-level judges evaluated on fewer images than they need are labelled MEANINGLESS."""
        return {j.name: f"MEANINGLESS: {count} images < {j.set_level[2]}" for j in self.judges
                if j.set_level is not None and count < j.set_level[2]}

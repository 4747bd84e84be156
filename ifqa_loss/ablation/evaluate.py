"""Per-image evaluation of restored faces against their ground truth, and the paired significance test.

Every metric is computed per image, so settings can be compared image by image (paired)
and averaged over seeds. Images are quantised to 8 bits first, as files written by an
external trainer are, so built-in and external runs are measured alike.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np
import torch

from .config import LPIPSConfig, SweepConfig

__all__ = ["Evaluator", "load_lpips", "paired_test", "holm", "REGION_GROUPS", "LOWER_IS_BETTER"]

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


class Evaluator:
    """Per-image PSNR, SSIM, LPIPS and every configured quality metric (+ region-wise IFQA).

    Call with restored and ground-truth (N,3,H,W) in [0,1] -> ``{metric: (N,) float64 array}``.

    Example:
        >>> import warnings; warnings.simplefilter("ignore")
        >>> from ifqa_loss.ablation.config import config_from_dict
        >>> cfg = config_from_dict({"metrics": {"ifqa": {"random_weights": True, "widths": [4, 8, 8, 16, 16],
        ...     "num_bottleneck": 1}}, "lpips": {"net": "squeeze", "random_backbone": True},
        ...     "data": {"hq": "faces"}})
        >>> ev = Evaluator(cfg)
        >>> scores = ev(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        >>> sorted(scores)[:4], scores["psnr"].shape
        (['ifqa', 'ifqa_eyes', 'ifqa_mouth', 'ifqa_nose'], (2,))
    """

    def __init__(self, cfg: SweepConfig, *, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.lpips = load_lpips(cfg.lpips, device=self.device)
        self.metrics = load_metrics(cfg, self.device)
        self.regions = cfg.evaluation.regions
        self._masks: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def notes(self) -> dict[str, str]:
        """Which numbers come from random weights (they must be labelled wherever they are shown)."""
        notes = {}
        for name, metric in self.metrics.items():
            if metric.random_weights:
                notes[name] = "RANDOM WEIGHTS"
                if self.regions and name == "ifqa":
                    notes.update({f"{name}_{group}": "RANDOM WEIGHTS" for group in REGION_GROUPS})
        if self.lpips.random_backbone:
            notes["lpips"] = "RANDOM BACKBONE"
        return notes

    def _region_masks(self, size: int) -> dict[str, torch.Tensor]:
        from ..regions import template_regions

        if size not in self._masks:
            masks = template_regions(size, device=self.device)
            self._masks[size] = {g: sum(masks[n] for n in names) for g, names in REGION_GROUPS.items()}
        return self._masks[size]

    def quality_map(self, restored: torch.Tensor) -> torch.Tensor | None:
        """(N,1,S,S) map of the first configured per-pixel metric (for samples.png), else ``None``."""
        for metric in self.metrics.values():
            if metric.has_map:
                with torch.no_grad():
                    return metric.quality_map(quantize(restored).to(self.device))
        return None

    @torch.no_grad()
    def __call__(self, restored: torch.Tensor, gt: torch.Tensor) -> dict[str, np.ndarray]:
        import kornia.metrics

        if restored.shape != gt.shape:
            raise ValueError(f"restored {tuple(restored.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        x, y = quantize(restored).to(self.device), quantize(gt).to(self.device)
        out = {
            "psnr": torch.stack([kornia.metrics.psnr(a[None], b[None], 1.0) for a, b in zip(x, y, strict=True)]),
            "ssim": kornia.metrics.ssim(x, y, 11, max_val=1.0).mean((1, 2, 3)),
            "lpips": self.lpips(x, y),
        }
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


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN): the family is every setting tested against the baseline.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    valid = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    adjusted, running = list(pvalues), 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[i] = round(running, 12)
    return adjusted


def paired_test(values: np.ndarray, baseline: np.ndarray, test: str = "wilcoxon") -> float:
    """Two-sided p-value of a paired test over images (``scipy.stats.wilcoxon`` or ``ttest_rel``).

    Identical samples give 1.0 (no evidence of a difference); fewer than 2 images give NaN.

    Example:
        >>> round(paired_test(np.arange(10.0) + 1, np.arange(10.0)), 4)
        0.002
    """
    from scipy import stats

    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    if values.shape != baseline.shape:
        raise ValueError(f"paired test needs the same images: {values.shape} vs {baseline.shape}")
    if len(values) < 2:
        return float("nan")
    diff = values - baseline
    if np.all(diff == 0):
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(values, baseline).pvalue)
    return float(stats.ttest_rel(values, baseline).pvalue)

"""Held-out judges: metrics no loss term of the sweep saw, configured as data in the sweep file.

A loss can raise its own score without raising quality, so every report shows, beside the metrics the
run *optimised*, *judges* no loss term saw::

    judges:
      ifqa_heldout: {type: ifqa, checkpoint: runs/ifqa_b/last.pth}    # an IFQA trained apart (train-ifqa)
      ifqa++: {type: ifqa++, checkpoint: IFQA++_Metric.pth}
      lpips_vgg: {type: lpips, net: vgg}                               # full-reference, to the ground truth
      identity: {type: identity, checkpoint: arcface_resnet18.pth}     # gfpgan's ResNetArcFace: cosine similarity
      fid: {type: fid, features: identity}                             # set-level, on the identity judge's features
      kid: {type: kid, features: identity}
      musiq: {type: pyiqa, metric: musiq}                               # any pyiqa metric (pip install pyiqa)

PSNR and SSIM (``evaluation.color`` / ``crop_border``) are always judges. Types: ``ifqa``, ``ifqa++``,
``gfiqa``, ``gfiqa-resnet50`` (our quality models: ``checkpoint`` or ``random_weights: true`` plus
architecture arguments), ``lpips`` (``net``, ``random_backbone``), ``identity`` (``checkpoint`` or
``random_weights``; ``layers``, ``use_se`` as gfpgan's ``ResNetArcFace``: 128 px grey input, as GFP-GAN's
identity loss), ``fid`` / ``kid`` (``features``: an ``identity`` judge's name; FID/KID of the restored vs
the ground-truth set, said to be meaningless below ``min_images``: 2048 for FID, the feature width, where
the covariance is singular; 500 for KID), ``pyiqa`` (``metric``; its weights come from pyiqa's own cache,
nothing is downloaded here). A judge whose checkpoint is also a loss metric's is refused: it is not held
out. Weights that are random are labelled ``RANDOM WEIGHTS`` wherever the numbers appear.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["JUDGE_TYPES", "QUALITY_TYPES", "check_judges", "build_judges", "Judge", "frechet_distance",
           "kernel_inception_distance"]

QUALITY_TYPES = ("ifqa", "ifqa++", "gfiqa", "gfiqa-resnet50")
JUDGE_TYPES = (*QUALITY_TYPES, "lpips", "identity", "fid", "kid", "pyiqa")
RESERVED = ("psnr", "ssim", "lpips")
MIN_IMAGES = {"fid": 2048, "kid": 500}
_OPTIONS = {"lpips": {"net", "random_backbone"}, "identity": {"checkpoint", "random_weights", "layers", "use_se"},
            "fid": {"features", "min_images"}, "kid": {"features", "min_images", "subsets", "subset_size"},
            "pyiqa": {"metric", "options"}}


def check_judges(judges: dict, *, loss_metrics: dict) -> None:
    """Validate a ``judges:`` mapping (``ValueError`` naming the judge and the fix)."""
    import re

    from .schema import number

    for name, spec in judges.items():
        where = f"judges.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,60}", str(name)) or name in RESERVED or name in loss_metrics:
            raise ValueError(f"{where}: a judge needs its own name (letters, digits, _.+-), not one of "
                             f"{sorted({*RESERVED, *loss_metrics})}")
        if not isinstance(spec, dict) or spec.get("type") not in JUDGE_TYPES:
            raise ValueError(f"{where}: type must be one of {JUDGE_TYPES}, got {spec!r}")
        kind = spec["type"]
        if kind in QUALITY_TYPES or kind == "identity":
            if bool(spec.get("checkpoint")) == bool(spec.get("random_weights")):
                raise ValueError(f"{where} needs checkpoint: PATH (e.g. a net trained apart with `ifqa-loss "
                                 "train-ifqa`), or random_weights: true to try the wiring (labelled RANDOM WEIGHTS)")
            same = [m for m, o in loss_metrics.items() if spec.get("checkpoint")
                    and os.path.normpath(str(o.get("checkpoint", ""))) == os.path.normpath(str(spec["checkpoint"]))]
            if same:
                raise ValueError(f"{where} uses the checkpoint of loss metric {same[0]!r}: that metric is optimised, "
                                 "not held out; give a network trained apart (other seed and data)")
        if kind in _OPTIONS:
            unknown = sorted(set(spec) - _OPTIONS[kind] - {"type"})
            if unknown:
                raise ValueError(f"{where}: unknown option(s) {unknown} for type {kind}; valid: "
                                 f"{sorted(_OPTIONS[kind])}")
        if kind in ("fid", "kid"):
            features = spec.get("features")
            if not (isinstance(judges.get(features), dict) and judges[features].get("type") == "identity"):
                raise ValueError(f"{where}.features must name an identity judge of this sweep (its embedding is "
                                 f"the feature space), got {features!r}")
            number(spec.get("min_images", MIN_IMAGES[kind]), f"{where}.min_images", low=2, integer=True)
        if kind == "pyiqa" and not isinstance(spec.get("metric"), str):
            raise ValueError(f"{where}.metric must name a pyiqa metric, e.g. musiq, niqe, dists")


class Judge:
    """One held-out metric: ``per_image(x, y)`` -> (N,) or, set-level, ``features(x)`` then ``set_score``."""

    def __init__(self, name: str, *, lower_is_better: bool = False, note: str | None = None, per_image=None,
                 set_level: tuple | None = None):
        self.name, self.lower_is_better, self.note = name, lower_is_better, note
        self.per_image, self.set_level = per_image, set_level


def _identity_net(spec: dict, device) -> tuple[nn.Module, str | None]:
    from ..integrations.compat import install_functional_tensor_alias

    install_functional_tensor_alias()  # gfpgan's package import reaches basicsr's old torchvision import
    try:
        from gfpgan.archs.arcface_arch import ResNetArcFace
    except ImportError as exc:
        raise ValueError(f"identity judges use gfpgan's ResNetArcFace: pip install 'ifqa-loss[gfpgan]' ({exc})") \
            from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ResNetArcFace("IRBlock", list(spec.get("layers", [2, 2, 2, 2])), use_se=bool(spec.get("use_se", False)))
    note = f"user weights {os.path.basename(str(spec.get('checkpoint')))}"
    if spec.get("checkpoint"):
        from ..weights.read import read_state_dict

        state = read_state_dict(spec["checkpoint"])
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"identity checkpoint {spec['checkpoint']} does not fit ResNetArcFace "
                             f"(layers {spec.get('layers', [2, 2, 2, 2])}, use_se {spec.get('use_se', False)}): "
                             f"{str(exc).splitlines()[0]}") from None
    else:
        warnings.warn("identity judge on RANDOM weights: its numbers mean nothing", UserWarning, stacklevel=3)
        note = "RANDOM WEIGHTS"
    return net.eval().requires_grad_(False).to(device), note


def _embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,512) unit embeddings: grey, 128 px, [-1,1] (GFP-GAN's identity-loss input)."""
    x = x * 2 - 1
    grey = (0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2])[:, None]
    grey = F.interpolate(grey, size=(128, 128), mode="bilinear", align_corners=False)
    return F.normalize(net(grey).double(), dim=1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID formula on two (N,D) feature sets: ``|mu_a - mu_b|² + tr(Ca + Cb - 2 (Ca Cb)^½)``.

    Example:
        >>> rng = np.random.default_rng(0); a = rng.normal(size=(500, 4))
        >>> frechet_distance(a, a) < 1e-6, round(frechet_distance(a, a + 1), 2)
        (True, 4.0)
    """
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = np.asarray(linalg.sqrtm(ca @ cb)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, *, subsets: int = 10, subset_size: int = 100,
                              seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel ``(x·y/D + 1)³`` (KID), averaged over random subsets.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> abs(kernel_inception_distance(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)))) < 0.05
        True
    """
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    dim, total = a.shape[1], []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / dim + 1) ** 3, ((y @ y.T) / dim + 1) ** 3, ((x @ y.T) / dim + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total.append(off - 2 * kxy.mean())
    return float(np.mean(total))


def _quality_judge(name: str, spec: dict, device) -> Judge:
    from ..metric import load_metric

    options = {k: v for k, v in spec.items() if k not in ("type", "checkpoint", "random_weights")}
    if spec.get("random_weights"):
        metric = load_metric(spec["type"], random_weights=True, device=device, **options)
    else:
        metric = load_metric(spec["type"], spec["checkpoint"], device=device)
    note = "RANDOM WEIGHTS" if metric.random_weights else f"weights {os.path.basename(spec['checkpoint'])}"
    if metric.has_map:
        return Judge(name, note=note, per_image=lambda x, y: metric.quality_map(x).mean((1, 2, 3)))
    return Judge(name, note=note, per_image=lambda x, y: metric.score(x))


def _pyiqa_judge(name: str, spec: dict, device) -> Judge:
    try:
        import pyiqa
    except ImportError:
        raise ValueError(f"judges.{name}: pyiqa metrics need `pip install pyiqa` (optional; its weights must "
                         "already be in pyiqa's cache: nothing is downloaded by ifqa-loss)") from None
    with contextlib.redirect_stdout(sys.stderr):
        metric = pyiqa.create_metric(spec["metric"], device=torch.device(device), as_loss=False,
                                     **spec.get("options", {}))
    full_reference = getattr(metric, "metric_mode", "NR") == "FR"

    def score(x, y):
        return (metric(x, y) if full_reference else metric(x)).flatten()

    return Judge(name, lower_is_better=bool(getattr(metric, "lower_better", False)), per_image=score,
                 note="pyiqa " + spec["metric"])


def build_judges(judges: dict, *, device, lpips_loader) -> list[Judge]:
    """The sweep's ``judges:`` as :class:`Judge` objects (``lpips_loader(net, random_backbone)`` builds LPIPS)."""
    built: list[Judge] = []
    identity: dict[str, nn.Module] = {}
    for name, spec in judges.items():
        kind = spec["type"]
        if kind in QUALITY_TYPES:
            built.append(_quality_judge(name, spec, device))
        elif kind == "lpips":
            distance = lpips_loader(spec.get("net", "alex"), bool(spec.get("random_backbone", False)))
            note = "RANDOM BACKBONE" if distance.random_backbone else None
            built.append(Judge(name, lower_is_better=True, note=note, per_image=distance))
        elif kind == "identity":
            net, note = _identity_net(spec, device)
            identity[name] = (net, note)
            built.append(Judge(name, note=note, per_image=lambda x, y, net=net: (_embed(net, x) * _embed(net, y))
                               .sum(1)))
        elif kind in ("fid", "kid"):
            net, note = identity[spec["features"]]
            minimum = int(spec.get("min_images", MIN_IMAGES[kind]))
            if kind == "fid":
                score = frechet_distance
            else:
                def score(a, b, spec=spec):
                    return kernel_inception_distance(a, b, subsets=int(spec.get("subsets", 10)),
                                                     subset_size=int(spec.get("subset_size", 100)))
            notes = [n for n in (note, f"{spec['features']} features") if n]
            built.append(Judge(name, lower_is_better=True, note=", ".join(notes),
                               set_level=(lambda x, net=net: _embed(net, x), score, minimum)))
        else:
            built.append(_pyiqa_judge(name, spec, device))
    return built

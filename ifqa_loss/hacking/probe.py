"""The worst case of metric gaming: optimise pixels directly against one metric, and ask others.

:func:`hack_probe` runs Adam on the pixels of given images (no restorer prior: the most a
generator could get out of the metric) against the optimised metric's loss, then reports the
optimised metric's score, each judge's score and the distortion (PSNR / SSIM to the starting
images, to ground truth when given, LPIPS when its backbone is installed) before and after.
Scores are always measured on the plain images, without the augmentation the optimisation may use.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["optimise_pixels", "distortion", "hack_probe", "judged_ratio", "strict_json"]


def optimise_pixels(images: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], *, steps: int,
                    lr: float = 0.01, real: torch.Tensor | None = None,
                    on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Adam on the pixels of (N,3,H,W) ``images`` in [0,1] against ``loss_fn`` -> optimised (N,3,H,W) in [0,1].

    Pixels are clamped to [0,1] after every step. When ``loss_fn`` refreshes its metric
    (``refresh=``), ``loss_fn.update(real, current)`` runs after every step (``real`` required).

    Example:
        >>> x = torch.full((1, 3, 4, 4), 0.5)
        >>> out = optimise_pixels(x, lambda t: (t - 0.8).pow(2).mean(), steps=200, lr=0.01)
        >>> round(out.mean().item(), 2)
        0.8
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got steps={steps}, lr={lr}")
    refresher = getattr(loss_fn, "refresher", None)
    if refresher is not None and real is None:
        raise ValueError("the loss refreshes its metric: pass real= (clean images) for its update(real, restored)")
    x = images.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        loss = loss_fn(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        if refresher is not None:
            loss_fn.update(real, x.detach())
        if on_step is not None:
            on_step(step, x.detach())
    return x.detach()


@torch.no_grad()
def distortion(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR (dB; inf where identical) and SSIM (11x11 window) of (N,3,H,W) images in [0,1]."""
    import kornia.metrics

    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse)
    ssim = kornia.metrics.ssim(a.float(), b.float(), 11, max_val=1.0).mean((1, 2, 3)).double()
    return {"psnr": psnr, "ssim": ssim}


def judged_ratio(judged_gain: float, optimised_gain: float) -> float | None:
    """Judged gain / optimised gain; ``None`` when the optimised metric did not move (no ratio to speak of).

    Example:
        >>> judged_ratio(0.08, 0.76), judged_ratio(0.1, 0.0)
        (0.10526315789473684, None)
    """
    if abs(optimised_gain) < 1e-12:
        return None
    return judged_gain / optimised_gain


def _mean(values: torch.Tensor) -> float | None:
    values = values.double()
    finite = values[torch.isfinite(values)]
    if len(finite) < len(values):  # e.g. PSNR of an unchanged image: inf has no JSON form
        return None
    return float(values.mean())


@torch.no_grad()
def _score(metric, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(metric.net.parameters()).device
    return torch.cat([metric.score(chunk.to(device), input_range=(0, 1)).double().cpu()
                      for chunk in x.split(batch_size)])


def hack_probe(optimised, judges: Sequence, images: Sequence[torch.Tensor], *, gt: Sequence[torch.Tensor] | None = None,
               steps: int = 60, lr: float = 0.01, augment=None, seed: int = 0, loss=None,
               names: dict | None = None, lpips=None, device: str | torch.device = "cpu",
               batch_size: int = 8) -> dict:
    """Optimise ``images`` against ``optimised`` and report every metric and distortion, before and after.

    Args:
        optimised: the :class:`~ifqa_loss.QualityMetric` optimised (and reported as ``optimised``).
        judges: metrics that only judge, reported in this order.
        images: (3,H,W) tensors in [0,1]; images of one size are optimised as one batch.
        gt: ground truth for each image (same sizes), for PSNR / SSIM (and LPIPS) to it.
        steps, lr: Adam on the pixels.
        augment: ``None`` / ``"eot"`` / an EOT config for the loss (scores are always measured without it).
        seed: seed of the EOT draws.
        loss: a loss module to optimise instead of the default ``IFQALoss`` / ``GFIQALoss`` on
            ``optimised`` (e.g. an ensemble or a refreshing loss; the report still scores ``optimised``).
        names: ``{"optimised": str, "judges": [str, ...]}`` labels (default: the metric names).
        lpips: an LPIPS distance module ((N,3,H,W) [0,1] pairs -> (N,)), or ``None``.

    Returns a JSON-ready dict: ``optimised {name, metric, before, after}``, ``judges [{name, metric,
    before, after, gain_ratio}]``, ``psnr`` / ``ssim`` (after vs the starting images), ``gt`` (when
    given), ``lpips``, ``images`` (per image), ``settings``.
    """
    from ..losses import GFIQALoss, IFQALoss

    if not images:
        raise ValueError("hack_probe needs at least one image")
    if gt is not None and [tuple(g.shape) for g in gt] != [tuple(i.shape) for i in images]:
        raise ValueError("every ground-truth image must match its image's shape")
    if loss is None:
        loss_cls = IFQALoss if optimised.has_map else GFIQALoss
        eot = {"seed": seed} if augment == "eot" else augment
        eot = dict(eot, seed=seed) if isinstance(eot, dict) and "seed" not in eot else eot
        loss = loss_cls(metric=optimised, input_range=(0, 1), augment=eot, out_of_range="clamp")
    loss = loss.to(device)
    names = names or {}
    metrics = [optimised, *judges]
    count = len(images)
    # Per image: scores[m] = (before, after) of metric m; distortion to the start and to ground truth.
    scores = [(torch.empty(count, dtype=torch.float64), torch.empty(count, dtype=torch.float64)) for _ in metrics]
    to_start = {"psnr": torch.empty(count, dtype=torch.float64), "ssim": torch.empty(count, dtype=torch.float64)}
    to_gt = {k: torch.empty(count, dtype=torch.float64) for k in ("psnr0", "psnr1", "ssim0", "ssim1")}
    lp = {k: torch.empty(count, dtype=torch.float64) for k in ("start", "gt0", "gt1")}
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for indices in groups.values():  # images of one size: one batch
        idx = torch.tensor(indices)
        batch = torch.stack([images[i] for i in indices]).float().to(device)
        truth = torch.stack([gt[i] for i in indices]).float().to(device) if gt is not None else None
        out = optimise_pixels(batch, loss, steps=steps, lr=lr, real=truth if truth is not None else batch)
        batch, out = batch.cpu(), out.cpu()
        for (b, a), metric in zip(scores, metrics, strict=True):
            b[idx], a[idx] = _score(metric, batch, batch_size), _score(metric, out, batch_size)
        for key, value in distortion(out, batch).items():
            to_start[key][idx] = value
        if truth is not None:
            truth = truth.cpu()
            d0, d1 = distortion(batch, truth), distortion(out, truth)
            to_gt["psnr0"][idx], to_gt["psnr1"][idx] = d0["psnr"], d1["psnr"]
            to_gt["ssim0"][idx], to_gt["ssim1"][idx] = d0["ssim"], d1["ssim"]
        if lpips is not None:
            with torch.no_grad():
                lp["start"][idx] = lpips(out, batch).double().flatten()
                if truth is not None:
                    lp["gt0"][idx] = lpips(batch, truth).double().flatten()
                    lp["gt1"][idx] = lpips(out, truth).double().flatten()
    before, after = scores[0]
    opt_gain = float(after.mean() - before.mean())
    report = {
        "optimised": {"name": names.get("optimised", optimised.name), "metric": optimised.name,
                      "before": float(before.mean()), "after": float(after.mean())},
        "judges": [],
    }
    judge_names = names.get("judges") or [m.name for m in judges]
    for name, metric, (b, a) in zip(judge_names, judges, scores[1:], strict=True):
        gain = float(a.mean() - b.mean())
        report["judges"].append({"name": name, "metric": metric.name, "before": float(b.mean()),
                                 "after": float(a.mean()), "gain_ratio": judged_ratio(gain, opt_gain)})
    report["psnr"], report["ssim"] = _mean(to_start["psnr"]), float(to_start["ssim"].mean())
    per_image = [{"optimised": {"before": float(before[i]), "after": float(after[i])},
                  "judges": [{"before": float(b[i]), "after": float(a[i])} for b, a in scores[1:]],
                  "psnr": _mean(to_start["psnr"][i:i + 1]), "ssim": float(to_start["ssim"][i])}
                 for i in range(count)]
    if gt is not None:
        report["gt"] = {"psnr": {"before": _mean(to_gt["psnr0"]), "after": _mean(to_gt["psnr1"])},
                        "ssim": {"before": float(to_gt["ssim0"].mean()), "after": float(to_gt["ssim1"].mean())}}
        for i, row in enumerate(per_image):
            row["gt"] = {"psnr": {"before": _mean(to_gt["psnr0"][i:i + 1]), "after": _mean(to_gt["psnr1"][i:i + 1])}}
    if lpips is not None:
        report["lpips"] = {"to_start": float(lp["start"].mean())}
        if gt is not None:
            report["lpips"]["gt"] = {"before": float(lp["gt0"].mean()), "after": float(lp["gt1"].mean())}
    report["images"] = per_image
    report["settings"] = {"steps": steps, "lr": lr, "augment": _describe(loss), "seed": seed,
                          "images": len(images), "scores_measured": "without augmentation, on float images in [0,1]"}
    return report


def _describe(loss) -> str:
    parts = []
    if getattr(loss, "augment", None) is not None:
        parts.append(f"eot(draws={loss.augment.draws})")
    if getattr(loss, "ensemble_metrics", None):
        parts.append(f"ensemble({len(loss.ensemble_metrics) + 1}, {loss.ensemble_combine})")
    if getattr(loss, "refresher", None) is not None:
        parts.append("refresh")
    return "+".join(parts) or "none"


def strict_json(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN / Infinity).

    Example:
        >>> strict_json({"a": [1.0, float("inf")], "b": float("nan")})
        {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value

"""Expectation over transformations (EOT) for the quality losses: a defence against metric gaming.

A frozen discriminator used as a loss can be fooled by pixel patterns that only this one network
likes (docs/hacking.md). Averaging the loss over ``draws`` small random transformations of the
image (sub-pixel shift, flip, scale, colour jitter, blur, differentiable JPEG; kornia ops) makes
such patterns harder to find: a pattern must survive every transformation to pay off.

The transformations are drawn from the loss's own seeded ``torch.Generator`` on the CPU, so a
run is reproducible whatever the device, and the caller's global RNG is never touched.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

__all__ = ["EOTConfig", "eot_config", "config_option", "sample_eot_params", "apply_eot", "EOT"]


@dataclass(frozen=True)
class EOTConfig:
    """What ``augment=`` draws per image and draw (all ranges symmetric around "no change").

    Args:
        draws: K transformed copies per image; the loss is their mean.
        shift: largest translation in pixels of the input (sub-pixel values are interpolated).
        flip: mirror left-right with probability 1/2.
        scale: zoom factor in ``[1 - scale, 1 + scale]`` around the centre.
        brightness, contrast, saturation: additive brightness in ``[-b, b]`` (on [0,1] images),
            contrast and saturation factors in ``[1 - c, 1 + c]``.
        blur_sigma: Gaussian blur with sigma in ``[0, blur_sigma]`` pixels.
        jpeg_quality: ``(low, high)`` quality of kornia's differentiable JPEG, or ``None`` for none;
            applied to each copy with probability ``jpeg_prob``.
        seed: seed of the loss's own generator (reproducible draws).
    """

    draws: int = 4
    shift: float = 1.5
    flip: bool = True
    scale: float = 0.05
    brightness: float = 0.03
    contrast: float = 0.05
    saturation: float = 0.05
    blur_sigma: float = 0.6
    jpeg_quality: tuple[float, float] | None = (70.0, 95.0)
    jpeg_prob: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.draws, int) or self.draws < 1:
            raise ValueError(f"augment draws must be an int >= 1, got {self.draws!r}")
        for name in ("shift", "scale", "brightness", "contrast", "saturation", "blur_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment {name} must be >= 0, got {getattr(self, name)}")
        if self.scale >= 1 or self.contrast >= 1 or self.saturation >= 1:
            raise ValueError("augment scale, contrast and saturation must be < 1 (factors stay positive)")
        if self.jpeg_quality is not None:
            low, high = (float(v) for v in self.jpeg_quality)
            if not 1 <= low <= high <= 100:
                raise ValueError(f"augment jpeg_quality must be (low, high) with 1 <= low <= high <= 100, "
                                 f"got {self.jpeg_quality}")
            object.__setattr__(self, "jpeg_quality", (low, high))
        if not 0 <= self.jpeg_prob <= 1:
            raise ValueError(f"augment jpeg_prob must be in [0, 1], got {self.jpeg_prob}")


def eot_config(augment) -> EOTConfig | None:
    """``augment=`` of the losses -> :class:`EOTConfig` or ``None`` (off).

    Accepts ``None``/``False``/``"none"`` (off), ``True``/``"eot"`` (defaults), a mapping of
    :class:`EOTConfig` fields (e.g. from a sweep file) or an :class:`EOTConfig`.

    Example:
        >>> eot_config({"draws": 2, "seed": 3}).draws, eot_config("none")
        (2, None)
    """
    if augment == "none":
        return None
    return config_option(True if augment == "eot" else augment, EOTConfig, "augment")


def config_option(value, cls, name: str):
    """A dataclass option: ``None``/``False`` (off) -> ``None``; ``True`` -> defaults; a ``cls``; a dict of fields.

    Example:
        >>> config_option({"draws": 2}, EOTConfig, "augment").draws, config_option(False, EOTConfig, "augment")
        (2, None)
    """
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        return cls(**value)
    raise ValueError(f"{name} must be None, True, a dict of {cls.__name__} fields or a {cls.__name__}; got {value!r}")


def sample_eot_params(count: int, config: EOTConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw the parameters of ``count`` transformations on the CPU from ``generator`` -> ``{name: (count,...)}``."""

    def uniform(low, high, *shape):
        return torch.rand(count, *shape, generator=generator, dtype=torch.float64) * (high - low) + low

    params = {
        "shift": uniform(-config.shift, config.shift, 2),
        "flip": torch.rand(count, generator=generator) < (0.5 if config.flip else 0.0),
        "scale": uniform(1 - config.scale, 1 + config.scale),
        "brightness": uniform(-config.brightness, config.brightness),
        "contrast": uniform(1 - config.contrast, 1 + config.contrast),
        "saturation": uniform(1 - config.saturation, 1 + config.saturation),
        "sigma": uniform(0, config.blur_sigma),
    }
    low, high = config.jpeg_quality or (100.0, 100.0)
    params["jpeg_quality"] = uniform(low, high)
    params["jpeg"] = (torch.rand(count, generator=generator) < config.jpeg_prob) & (config.jpeg_quality is not None)
    return params


def apply_eot(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Transform (B,3,H,W) images in [0,1] with drawn ``params`` -> (B,3,H,W) in [0,1]; differentiable in ``x``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> params = sample_eot_params(2, EOTConfig(), torch.Generator().manual_seed(0))
        >>> apply_eot(x, params).shape
        torch.Size([2, 3, 32, 32])
    """
    import kornia

    batch, _, height, width = x.shape
    p = {k: v.to(x.device) for k, v in params.items()}
    real = x.dtype if x.is_floating_point() else torch.float32
    # One affine warp: scale about the centre, then mirror, then a sub-pixel shift (reflected borders).
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=x.device, dtype=real).expand(batch, 2)
    scale = p["scale"].to(real)[:, None].expand(batch, 2)
    sign = torch.where(p["flip"], -1.0, 1.0).to(real)
    matrix = kornia.geometry.transform.get_affine_matrix2d(p["shift"].to(real), centre, scale,
                                                           torch.zeros(batch, device=x.device, dtype=real))
    mirror = torch.eye(3, device=x.device, dtype=real).repeat(batch, 1, 1)
    mirror[:, 0, 0] = sign
    mirror[:, 0, 2] = torch.where(p["flip"], float(width - 1), 0.0).to(real)
    matrix = matrix @ mirror
    y = kornia.geometry.transform.warp_affine(x, matrix[:, :2], (height, width), padding_mode="reflection",
                                              align_corners=True)
    # Colour: saturation and contrast factors, additive brightness.
    grey = kornia.color.rgb_to_grayscale(y)
    y = grey + (y - grey) * p["saturation"].to(real)[:, None, None, None]
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = mean + (y - mean) * p["contrast"].to(real)[:, None, None, None] + p["brightness"].to(real)[:, None, None, None]
    y = y.clamp(0, 1)
    # Blur with a per-image sigma (sigma 0 is kept as identity by a tiny floor: kornia needs sigma > 0).
    sigma = p["sigma"].to(real).clamp_min(1e-3)[:, None].expand(batch, 2)
    y = kornia.filters.gaussian_blur2d(y, (5, 5), sigma, border_type="reflect")
    jpeg = p["jpeg"]
    if bool(jpeg.any()):
        coded = kornia.enhance.jpeg_codec_differentiable(y[jpeg], p["jpeg_quality"][jpeg].to(real))
        y = y.clone()
        y[jpeg] = coded.clamp(0, 1)
    return y


class EOT:
    """The seeded transformation source a loss owns: ``expand`` draws K copies, ``fold`` averages them back.

    Example:
        >>> eot = EOT(EOTConfig(draws=3, seed=1))
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> copies = eot.expand(x, (0.0, 1.0))
        >>> copies.shape, eot.fold(copies.mean((1, 2, 3))).shape
        (torch.Size([6, 3, 16, 16]), torch.Size([2]))
    """

    def __init__(self, config: EOTConfig):
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)

    def reset(self) -> None:
        """Restart the draws from the seed."""
        self.generator.manual_seed(self.config.seed)

    def expand(self, x: torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
        """(N,3,H,W) in ``input_range`` -> (K*N,3,H,W) transformed copies in ``input_range`` (draw-major)."""
        low, high = input_range
        unit = (x - low) / (high - low)
        copies = unit.repeat(self.config.draws, 1, 1, 1)
        params = sample_eot_params(copies.shape[0], self.config, self.generator)
        return apply_eot(copies, params) * (high - low) + low

    def fold(self, per_copy: torch.Tensor) -> torch.Tensor:
        """(K*N,) per-copy values -> (N,) mean over the K draws."""
        return per_copy.reshape(self.config.draws, -1).mean(0)

    def repeat(self, weights: torch.Tensor | None) -> torch.Tensor | None:
        """Per-image (N,...) weights -> (K*N,...) to follow :meth:`expand`; (1,...) and ``None`` pass through."""
        if weights is None or weights.shape[0] == 1:
            return weights
        return weights.repeat(self.config.draws, *([1] * (weights.ndim - 1)))

    def state(self) -> dict:
        """The config and generator state (to resume the same draws)."""
        return {"config": asdict(self.config), "generator": self.generator.get_state()}

"""Seeded, batched face degradations (GFP-GAN-like) for training and ablations.

The pipeline has the shape of GFP-GAN's first-order model ``y = [(x * k)↓s + n]_JPEG ↑s``
plus colour jitter, applied per image with independently drawn parameters. The defaults are
*not* GFP-GAN's recipe (``options/train_gfpgan_v1.yml``); they differ in: JPEG quality 30–95
(GFP-GAN 60–100: ours is harsher), down-sampling ×1–×8 (GFP-GAN 0.8–8), isotropic Gaussian blur
with 10 % linear motion blur (GFP-GAN: isotropic / anisotropic Gaussian 50/50, no motion blur),
and anti-aliased bilinear down-sampling (GFP-GAN: OpenCV's bilinear, no anti-aliasing).
Blur sigma 0.1–10 and kernel 41 at 512, noise sigma 0–20, colour shift 20 with probability 0.3,
photometric jitter 0.3 and grey 0.01 are GFP-GAN's. Steps:

1. blur: Gaussian (isotropic sigma) or, with ``motion_blur_prob``, a linear motion blur;
2. down-sampling by a factor in ``downsample_range`` (bilinear, anti-aliased);
3. noise: Gaussian (sigma in 8-bit levels) or, with ``poisson_prob``, Poisson (shot) noise;
4. JPEG at a quality in ``jpeg_range``;
5. resize back to the input size (bilinear), then, with ``output_noise_prob`` (default 0; ours),
   Gaussian noise at that resolution;
6. colour jitter: a per-channel shift, photometric jitter (brightness/contrast/saturation/hue)
   and grey conversion, each with its own probability.

Two steps: :func:`sample_degradation_params` draws every random number from one
``torch.Generator`` (so the same seed gives the same output), and
:func:`apply_degradations` applies a drawn set. :func:`degrade` does both;
:class:`Degradation` is the nn.Module wrapper.

JPEG: the default ``jpeg_backend="codec"`` runs the real libjpeg codec through
Pillow on the CPU, one image at a time (each image has its own quality; torchvision's
``encode_jpeg`` is deprecated since 0.29). It gives the true block/ringing artefacts restorers see in the wild and
that GFP-GAN trains on (cv2's libjpeg), and it is deterministic. ``"differentiable"`` uses
``kornia.enhance.jpeg_codec_differentiable`` instead: batched on the input's device and
differentiable, but an approximation (smooth rounding; sizes must be multiples of 16 at
the JPEG stage), useful when a GPU round-trip per image is too slow.

Spatial sizes (blur sigma, blur kernel, motion length) are given at ``reference_size``
(512, GFP-GAN's training size) and scaled with the image side, so a 256 face gets the
same relative blur as a 512 one; set ``reference_size=None`` to use them as pixels.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from kornia.enhance import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    jpeg_codec_differentiable,
)
from kornia.filters import filter2d, get_gaussian_kernel2d
from PIL import Image
from torch import nn

__all__ = [
    "DegradationConfig", "Degradation", "degrade", "sample_degradation_params", "apply_degradations", "jpeg_roundtrip",
    "motion_kernels",
]

JPEG_BACKENDS = ("codec", "differentiable")


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges and probabilities of the degradation pipeline (GFP-GAN-like defaults; the module doc lists
    where they differ from GFP-GAN v1's).

    Ranges are inclusive ``(low, high)`` pairs drawn uniformly; ``(a, a)`` fixes a value.
    Probabilities are per image. Blur/motion sizes are at ``reference_size`` (see module doc).

    Example:
        >>> cfg = DegradationConfig(jpeg_range=(50, 50), downsample_range=(4, 4))
        >>> cfg.jpeg_range
        (50.0, 50.0)
    """

    blur_prob: float = 1.0
    blur_kernel_size: int = 41
    blur_sigma: tuple[float, float] = (0.1, 10.0)
    motion_blur_prob: float = 0.1  # share of blurred images that get motion instead of Gaussian blur
    motion_length: tuple[float, float] = (5.0, 31.0)  # streak length in pixels at reference_size
    downsample_prob: float = 1.0
    downsample_range: tuple[float, float] = (1.0, 8.0)
    noise_prob: float = 1.0
    noise_range: tuple[float, float] = (0.0, 20.0)  # Gaussian sigma in 8-bit levels
    poisson_prob: float = 0.0  # share of noisy images that get Poisson instead of Gaussian noise
    poisson_scale: tuple[float, float] = (0.05, 3.0)  # basicsr's scale of 8-bit shot noise
    jpeg_prob: float = 1.0
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    jpeg_backend: str = "codec"
    color_shift_prob: float = 0.3
    color_shift: float = 20.0  # max per-channel shift in 8-bit levels
    photometric_prob: float = 0.3
    brightness: tuple[float, float] = (0.5, 1.5)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.0, 1.5)
    hue: tuple[float, float] = (-0.1, 0.1)  # fraction of a full turn
    gray_prob: float = 0.01
    reference_size: int | None = 512
    # Ours, not GFP-GAN's: Gaussian noise added at the output resolution (after resizing back), so noise is
    # not smoothed away by the up-sampling. Its draws are made only when output_noise_prob > 0 (configs
    # without it keep their random streams).
    output_noise_prob: float = 0.0
    output_noise_range: tuple[float, float] = (0.0, 20.0)  # Gaussian sigma in 8-bit levels

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"DegradationConfig.{f.name} must lie in [0, 1], got {value}")
            if isinstance(value, (tuple, list)):
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"DegradationConfig.{f.name} must be a (low, high) pair, low <= high; got {value}")
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
        if self.jpeg_backend not in JPEG_BACKENDS:
            raise ValueError(f"DegradationConfig.jpeg_backend must be in {JPEG_BACKENDS}; got {self.jpeg_backend!r}")
        if not 1 <= self.jpeg_range[0] <= self.jpeg_range[1] <= 100:
            raise ValueError(f"DegradationConfig.jpeg_range must lie in [1, 100], got {self.jpeg_range}")
        if self.downsample_range[0] < 1:
            raise ValueError(f"DegradationConfig.downsample_range must be >= 1 (a factor); got {self.downsample_range}")
        if self.blur_sigma[0] <= 0 or self.blur_kernel_size < 3 or self.blur_kernel_size % 2 == 0:
            raise ValueError("DegradationConfig needs blur_sigma > 0 and an odd blur_kernel_size >= 3")

    def to_dict(self) -> dict:
        """Plain-Python form (for checkpoints/JSON); ``DegradationConfig(**d)`` restores it."""
        return asdict(self)


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)


def _coin(n: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) < prob


def sample_degradation_params(
    n: int, config: DegradationConfig = DegradationConfig(), *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Draw per-image parameters: a dict of (n,) CPU tensors (flags are bool).

    Every value is drawn, used or not, so the stream position after a call depends only on ``n``.
    The per-pixel noise is drawn later from ``noise_seed`` (one int64 per image).

    Example:
        >>> p = sample_degradation_params(2, generator=torch.Generator().manual_seed(0))
        >>> sorted(p)[:3], p["jpeg_quality"].shape
        (['blur', 'blur_sigma', 'brightness'], torch.Size([2]))
    """
    g = generator if generator is not None else torch.Generator().manual_seed(torch.seed())
    c = config
    params = {
        "blur": _coin(n, c.blur_prob, g),
        "motion": _coin(n, c.motion_blur_prob, g),
        "blur_sigma": _uniform(n, c.blur_sigma, g),
        "motion_length": _uniform(n, c.motion_length, g),
        "motion_angle": _uniform(n, (0.0, math.pi), g),
        "downsample": _coin(n, c.downsample_prob, g),
        "scale": _uniform(n, c.downsample_range, g),
        "noise": _coin(n, c.noise_prob, g),
        "poisson": _coin(n, c.poisson_prob, g),
        "noise_sigma": _uniform(n, c.noise_range, g),
        "poisson_scale": _uniform(n, c.poisson_scale, g),
        "jpeg": _coin(n, c.jpeg_prob, g),
        "jpeg_quality": _uniform(n, c.jpeg_range, g).round(),
        "color_shift": _coin(n, c.color_shift_prob, g),
        "shift": _uniform(3 * n, (-c.color_shift, c.color_shift), g).view(n, 3),
        "photometric": _coin(n, c.photometric_prob, g),
        "brightness": _uniform(n, c.brightness, g),
        "contrast": _uniform(n, c.contrast, g),
        "saturation": _uniform(n, c.saturation, g),
        "hue": _uniform(n, c.hue, g),
        "gray": _coin(n, c.gray_prob, g),
        "noise_seed": torch.randint(0, 2**62, (n,), generator=g, device=g.device),
    }
    if c.output_noise_prob > 0:
        params["output_noise"] = _coin(n, c.output_noise_prob, g)
        params["output_noise_sigma"] = _uniform(n, c.output_noise_range, g)
        params["output_noise_seed"] = torch.randint(0, 2**62, (n,), generator=g, device=g.device)
    return {k: v.cpu() for k, v in params.items()}


def motion_kernels(length: torch.Tensor, angle: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Anti-aliased line kernels (B,K,K) summing to 1: a streak of ``length`` px at ``angle`` rad.

    Example:
        >>> k = motion_kernels(torch.tensor([5.0]), torch.tensor([0.0]), 7)
        >>> k.shape, round(k.sum().item(), 5), bool(k[0, 3].sum() > 0.99)
        (torch.Size([1, 7, 7]), 1.0, True)
    """
    r = (kernel_size - 1) / 2
    coords = torch.arange(kernel_size, dtype=torch.float64, device=length.device) - r
    yy, xx = coords.view(1, -1, 1), coords.view(1, 1, -1)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    along = xx * cos + yy * sin
    across = -xx * sin + yy * cos
    half = (length.view(-1, 1, 1) - 1).clamp_min(0) / 2
    # Distance to the segment, then a 1-px tent: a smooth line without aliasing.
    dist = torch.sqrt(across.square() + (along.abs() - half).clamp_min(0).square())
    kernel = (1 - dist).clamp_min(0)
    return kernel / kernel.sum((1, 2), keepdim=True)


def _blur(x: torch.Tensor, p: dict[str, torch.Tensor], config: DegradationConfig, scale: float) -> torch.Tensor:
    size = min(x.shape[-2:])
    kernel_size = max(3, int(round(config.blur_kernel_size * scale)) | 1)
    kernel_size = min(kernel_size, size - 1 if size % 2 == 0 else size - 2)  # reflect padding needs an odd K < side
    sigma = (p["blur_sigma"] * scale).clamp_min(1e-3)
    gauss = get_gaussian_kernel2d(kernel_size, torch.stack([sigma, sigma], -1))
    motion = motion_kernels((p["motion_length"] * scale).clamp_min(1.0), p["motion_angle"], kernel_size)
    kernels = torch.where(p["motion"].view(-1, 1, 1), motion, gauss).to(x)
    blurred = filter2d(x, kernels, border_type="reflect")
    return torch.where(p["blur"].to(x.device).view(-1, 1, 1, 1), blurred, x)


def _noise_like(x: torch.Tensor, seed: int, poisson: bool, level: float) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    if poisson:
        # 8-bit shot noise scaled as in basicsr's generate_poisson_noise (vals = 256 levels).
        counts = (x.detach().cpu().double().clamp(0, 1) * 255).round()
        noise = (torch.poisson(counts, generator=g) - counts) / 255 * level
    else:
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64) * (level / 255)
    return noise.to(x)


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3,H,W) float in [0,1] -> the same image after libjpeg (Pillow) at ``quality``, 8-bit levels.

    Example:
        >>> jpeg_roundtrip(torch.rand(3, 16, 16), 50).shape
        torch.Size([3, 16, 16])
    """
    u8 = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    # 4:2:0 chroma subsampling, as cv2.imencode and GFP-GAN's degradations use.
    Image.fromarray(u8).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.device, image.dtype) / 255


def _jpeg_codec(x: torch.Tensor, quality: int) -> torch.Tensor:
    """(1,3,H,W) through libjpeg; straight-through gradient (the codec's output, the identity's gradient)."""
    out = jpeg_roundtrip(x[0], quality)[None]
    return x + (out - x).detach() if x.requires_grad else out


def _jpeg_differentiable(x: torch.Tensor, quality: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % 16, -w % 16  # kornia's codec needs multiples of 16
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
    q = torch.tensor([float(quality)], device=x.device, dtype=x.dtype)
    return jpeg_codec_differentiable(padded.clamp(0, 1), q)[..., :h, :w]


def _photometric(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    on = p["photometric"].to(x.device).view(-1, 1, 1, 1)
    to = dict(device=x.device, dtype=x.dtype)
    y = adjust_brightness(x, p["brightness"].to(**to) - 1, clip_output=True)  # kornia adds (factor - 1)
    y = adjust_contrast(y, p["contrast"].to(**to), clip_output=True)
    y = adjust_saturation(y, p["saturation"].to(**to))
    y = adjust_hue(y, p["hue"].to(**to) * 2 * math.pi).clamp(0, 1)
    return torch.where(on, y, x)


def apply_degradations(
    x: torch.Tensor, params: dict[str, torch.Tensor], config: DegradationConfig = DegradationConfig()
) -> torch.Tensor:
    """Apply drawn parameters: (N,3,H,W) in [0,1] -> (N,3,H,W) in [0,1], same device/dtype.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> p = sample_degradation_params(2, generator=torch.Generator().manual_seed(1))
        >>> apply_degradations(x, p).shape
        torch.Size([2, 3, 32, 32])
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"degradations take float (N,3,H,W) images in [0,1], got {x.dtype} {tuple(x.shape)}")
    n, _, h, w = x.shape
    if len(params["blur"]) != n:
        raise ValueError(f"params were drawn for {len(params['blur'])} images, the batch has {n}")
    spatial = 1.0 if config.reference_size is None else min(h, w) / config.reference_size
    x = _blur(x, params, config, spatial)
    out = []
    # Each image has its own low-res size and JPEG quality: this stretch runs per image.
    for i in range(n):
        y = x[i : i + 1]
        if params["downsample"][i]:
            s = float(params["scale"][i])
            low = (max(1, round(h / s)), max(1, round(w / s)))
            y = F.interpolate(y, size=low, mode="bilinear", align_corners=False, antialias=True)
        if params["noise"][i]:
            poisson = bool(params["poisson"][i])
            level = float(params["poisson_scale"][i] if poisson else params["noise_sigma"][i])
            y = (y + _noise_like(y, int(params["noise_seed"][i]), poisson, level)).clamp(0, 1)
        if params["jpeg"][i]:
            quality = float(params["jpeg_quality"][i])
            y = _jpeg_codec(y, int(quality)) if config.jpeg_backend == "codec" else _jpeg_differentiable(y, quality)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        if "output_noise" in params and params["output_noise"][i]:
            sigma = float(params["output_noise_sigma"][i])
            y = (y + _noise_like(y, int(params["output_noise_seed"][i]), False, sigma)).clamp(0, 1)
        out.append(y)
    x = torch.cat(out).clamp(0, 1)
    shift = params["shift"].to(x.device, x.dtype).view(n, 3, 1, 1) / 255
    x = torch.where(params["color_shift"].to(x.device).view(-1, 1, 1, 1), (x + shift).clamp(0, 1), x)
    x = _photometric(x, params)
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
    return torch.where(params["gray"].to(x.device).view(-1, 1, 1, 1), gray, x)


def degrade(
    x: torch.Tensor, config: DegradationConfig = DegradationConfig(), *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Degrade a batch: (N,3,H,W) float in [0,1] -> (N,3,H,W) in [0,1] (device/dtype follow ``x``).

    The same ``generator`` state gives the same output (parameters are drawn on the
    generator's device, noise on the CPU from per-image seeds).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> a = degrade(x, generator=torch.Generator().manual_seed(0))
        >>> b = degrade(x, generator=torch.Generator().manual_seed(0))
        >>> a.shape, torch.equal(a, b)
        (torch.Size([2, 3, 32, 32]), True)
    """
    return apply_degradations(x, sample_degradation_params(x.shape[0], config, generator=generator), config)


class Degradation(nn.Module):
    """Module form of :func:`degrade`; owns a generator seeded with ``seed`` (no global RNG use).

    Example:
        >>> module = Degradation(config=DegradationConfig(jpeg_prob=0.0), seed=0)
        >>> module(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, *, config: DegradationConfig | None = None, seed: int = 0):
        super().__init__()
        self.config = config or DegradationConfig()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> degraded (N,3,H,W); ``generator`` overrides the module's own."""
        return degrade(x, self.config, generator=generator or self.generator)

    def extra_repr(self) -> str:
        return repr(self.config)

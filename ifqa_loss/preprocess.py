"""Input checks and differentiable preprocessing (functional; no state).

Every error names the problem and the fix, so a training loop fails loudly on its
first bad batch instead of silently optimising towards garbage.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

RANGE_TOLERANCE = 1e-3  # generators overshoot by rounding; anything larger is a wrong range flag
CLAMP_HINT = "clamp it first (x.clamp(low, high))"
LOSS_CLAMP_HINT = 'pass out_of_range="clamp" to the loss (it clamps; gradients stop outside the range)'


class UnitRangeInSignedRangeWarning(UserWarning):
    """A whole batch lies in [0, 1] while ``input_range`` is (-1, 1): probably ``input_range=(0, 1)`` was meant."""


def integer_dtype_hint(dtype: torch.dtype, input_range: tuple[float, float]) -> str:
    """The message for an integer image batch: how to reach ``input_range`` from 0..255.

    Example:
        >>> integer_dtype_hint(torch.uint8, (0.0, 1.0)).endswith("x.float() / 255")
        True
    """
    low, high = (float(v) for v in input_range)
    conversion = "x.float() / 255" if (low, high) == (0.0, 1.0) else f"x.float() / 255 * {high - low:g} + {low:g}"
    if (low, high) == (-1.0, 1.0):
        conversion = "x.float() / 127.5 - 1"
    return f"input has integer dtype {dtype}; images in 0..255 become floats in {(low, high)} with {conversion}"


def other_range_reason(lo: float, hi: float, input_range: tuple[float, float],
                       tolerance: float = RANGE_TOLERANCE) -> str | None:
    """Why a batch spanning ``[lo, hi]`` is data in another range rather than an overshoot, or None.

    0..255 values (no negative value, maximum above 25), or a (-1, 1) batch under ``input_range=(0, 1)``
    (minimum below -0.75). Clamping hides neither, so ``out_of_range="clamp"`` still refuses them.

    Example:
        >>> other_range_reason(0.0, 255.0, (-1.0, 1.0))
        'this looks like 0..255 pixel values; divide by 255 (and use input_range=(0, 1))'
        >>> other_range_reason(-2.3, 4.0, (-1.0, 1.0)) is None   # a diverging generator, not a range flag
        True
    """
    low, high = (float(v) for v in input_range)
    if lo >= -tolerance and hi > 25.0:
        return "this looks like 0..255 pixel values; divide by 255 (and use input_range=(0, 1))"
    if (low, high) == (0.0, 1.0) and -1.0 - 0.25 <= lo < -0.75 and hi <= 1.0 + 0.25:
        return "this looks like a (-1, 1) batch (tanh output); pass input_range=(-1, 1)"
    return None


def out_of_range_message(name: str, lo: float, hi: float, input_range: tuple[float, float],
                         tolerance: float = RANGE_TOLERANCE, overshoot_hint: str = CLAMP_HINT) -> str:
    """Explain values ``[lo, hi]`` outside ``input_range``: say what was seen and name the likely cause.

    A batch that leaves the range by a fraction of its width is an overshooting generator
    (unbounded output layer), not a wrong ``input_range``; a batch spanning another range is a
    wrong flag or a missing /255.

    Example:
        >>> "overshoot" in out_of_range_message("pred", -0.032, 1.041, (0.0, 1.0))
        True
        >>> "input_range=(-1, 1)" in out_of_range_message("pred", -0.98, 0.97, (0.0, 1.0))
        True
    """
    low, high = (float(v) for v in input_range)
    width = high - low
    seen = f"{name} values lie in [{lo:.3f}, {hi:.3f}], outside input_range {(low, high)}"
    if hi > 2.0 and lo >= -tolerance and hi <= 255.0 + tolerance:
        return f"{seen}: this looks like 0..255 pixel values; divide by 255 (and use input_range=(0, 1))"
    if (low, high) == (0.0, 1.0) and lo < -0.25 and lo >= -1.0 - 0.25 and hi <= 1.0 + 0.25:
        return f"{seen}: this looks like a (-1, 1) batch (tanh output); pass input_range=(-1, 1)"
    excess = max(low - lo, hi - high)
    if excess <= 0.25 * width:
        return (f"{seen} by up to {excess:.3f}: an overshoot of an unbounded generator output (no final "
                f"tanh/sigmoid), not a wrong input_range; {overshoot_hint}")
    return (f"{seen} by {excess:.3f}, more than a generator overshoot: pass the input_range of your data "
            f"((-1, 1) for tanh outputs, (0, 1) for images) or check the generator for divergence")


def check_image_batch(
    x: torch.Tensor,
    input_range: tuple[float, float] = (0.0, 1.0),
    *,
    name: str = "input",
    device: torch.device | None = None,
    tolerance: float = RANGE_TOLERANCE,
    check_values: bool = True,
    overshoot_hint: str = CLAMP_HINT,
    out_of_range: str = "error",
) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x`` is a finite float (N,3,H,W) batch within ``input_range``.

    ``check_values=False`` keeps the shape/dtype/device checks and skips the value checks,
    which need one device-to-host sync per call. ``overshoot_hint`` is the fix the message offers
    for a small overshoot (losses offer ``out_of_range="clamp"``). ``out_of_range="clamp"`` (the
    caller clamps afterwards) accepts any overshoot and refuses only data in another range
    (:func:`other_range_reason`).

    With ``input_range=(-1, 1)`` a batch lying wholly in [0, 1] (minimum >= 0) warns
    :class:`UnitRangeInSignedRangeWarning`: a face image in [-1, 1] has dark pixels (eyes, hair,
    shadows) below 0, a [0, 1] image never does, and scoring it as (-1, 1) gives a wrong value
    silently. Warnings show once per call site (Python's default filter).

    Example:
        >>> check_image_batch(torch.zeros(1, 3, 8, 8), (0.0, 1.0))
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N,3,H,W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        hint = " (add a batch dimension with x[None])" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (N,3,H,W) with RGB channels, got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N=0); pass at least one image")
    if not x.is_floating_point():
        raise TypeError(integer_dtype_hint(x.dtype, input_range).replace("input", name, 1))
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the metric is on {device}; move one with .to(device)")
    if not check_values:
        return
    values = x.detach()
    low, high = input_range
    lo, hi = values.aminmax()
    # One host sync for all checks (each `if tensor:` would be its own GPU round trip).
    not_finite, too_low, too_high, lo_value, hi_value = torch.stack(
        [~torch.isfinite(values).all(), lo < low - tolerance, hi > high + tolerance, lo.float(), hi.float()]
    ).tolist()
    if not_finite:  # the slow path: only when a batch is already refused
        bad = (~torch.isfinite(values)).flatten(1).any(1).nonzero().flatten().tolist()
        shown = f"{bad[:10]}" + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
        raise ValueError(f"{name} contains NaN or Inf values in sample(s) {shown} of {x.shape[0]}; check the "
                         "generator output before the loss")
    if out_of_range == "clamp":
        reason = other_range_reason(lo_value, hi_value, (low, high), tolerance) if too_low or too_high else None
        if reason:
            raise ValueError(f"{name} values lie in [{lo_value:.3f}, {hi_value:.3f}] with input_range {(low, high)}: "
                             f"{reason}; out_of_range='clamp' clamps a generator's overshoot, not another range")
    elif too_low or too_high:
        raise ValueError(out_of_range_message(name, lo_value, hi_value, (low, high), tolerance, overshoot_hint))
    if (low, high) == (-1.0, 1.0) and lo_value >= 0.0 and hi_value > 0.0:
        warnings.warn(
            f"{name} lies wholly in [{lo_value:.3f}, {hi_value:.3f}] (no negative value) but input_range is "
            f"(-1, 1): a [0, 1] image? Pass input_range=(0, 1) if so; a real (-1, 1) face batch has values below 0",
            UnitRangeInSignedRangeWarning, stacklevel=3)


def to_signed_range(x: torch.Tensor, input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Affinely map ``input_range`` onto [-1,1], the range the IFQA networks were trained on."""
    low, high = input_range
    if (low, high) == (-1.0, 1.0):
        return x
    return x * (2.0 / (high - low)) - (high + low) / (high - low)


def resize(x: torch.Tensor, size: int, mode: str = "bilinear", antialias: bool = False) -> torch.Tensor:
    """Differentiable resize of (N,C,H,W) to (N,C,size,size); returns ``x`` itself when already that size.

    ``align_corners=False`` matches cv2's pixel-centre convention used by the official pipelines.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)


# ----------------------------------------------------------------------------------- the official uint8 path
_CV_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights are integers out of 2048


def _cv_linear_taps(source: int, target: int, clamp_weights: bool, device) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR source indices and fixed-point weights along one axis, float32 as cv::resize."""
    scale = 1.0 / (target / source)  # cv::resize keeps 1/inv_scale in double
    pos = ((torch.arange(target, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    first = pos.floor()
    frac = pos - first
    first = first.long()
    if clamp_weights:  # horizontal axis: clamped taps get weight (1, 0)
        outside = (first < 0) | (first >= source - 1)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        first = first.clamp(0, source - 1)
    # vertical axis: the fractional weight stays, only the row indices are clamped
    second = (first + 1).clamp(0, source - 1)
    first = first.clamp(0, source - 1)
    one = float(1 << _CV_COEF_BITS)
    w0 = torch.round((1.0 - frac) * one).long()  # saturate_cast<short>: round half to even, like torch.round
    w1 = torch.round(frac * one).long()
    return first.to(device), second.to(device), w0.to(device), w1.to(device)


def resize_uint8_like_cv2(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` of a uint8 image, bit for bit.

    The official IFQA ``test.py`` resizes the uint8 image (albumentations ``Resize`` -> cv2) before
    normalising; this reproduces OpenCV's fixed-point arithmetic: 11-bit weights, an integer
    horizontal pass, and the vertical pass of its SIMD kernel,
    ``((r0>>4)*b0 >> 16) + ((r1>>4)*b1 >> 16) + 2 >> 2``. Not differentiable (integers); the
    losses use :func:`resize`. Shapes: (..., C, H, W) uint8 -> (..., C, h, w) uint8; ``size`` is
    ``S`` or ``(h, w)``.

    Example:
        >>> resize_uint8_like_cv2(torch.full((3, 5, 7), 200, dtype=torch.uint8), 4).unique().tolist()
        [200]
    """
    if image.dtype != torch.uint8:
        raise TypeError(f"resize_uint8_like_cv2 takes uint8 images, got {image.dtype}; use resize() for floats")
    height, width = (size, size) if isinstance(size, int) else size
    if tuple(image.shape[-2:]) == (height, width):
        return image
    x0, x1, a0, a1 = _cv_linear_taps(image.shape[-1], width, True, image.device)
    y0, y1, b0, b1 = _cv_linear_taps(image.shape[-2], height, False, image.device)
    src = image.long()
    rows = src[..., x0] * a0 + src[..., x1] * a1  # (..., C, H, w): integer horizontal pass
    r0 = rows[..., y0, :] >> 4
    r1 = rows[..., y1, :] >> 4
    out = ((r0 * b0[:, None]) >> 16) + ((r1 * b1[:, None]) >> 16)
    return ((out + 2) >> 2).clamp(0, 255).to(torch.uint8)


def official_network_input(image: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """The official IFQA ``test.py`` preprocessing of decoded uint8 RGB images: (N,3,H,W) uint8 -> (N,3,S,S) float32.

    * ``"bilinear"`` (IFQA): cv2 INTER_LINEAR resize of the uint8 image (:func:`resize_uint8_like_cv2`),
      then albumentations ``Normalize(0.5, 0.5)`` in float32: ``(v - 127.5) * float32(1 / 127.5)``.
    * ``"bicubic"`` (IFQA++): normalise first, then cv2 INTER_CUBIC on floats; computed in float64,
      which agrees with cv2's float resize to ~3e-7 (torch's float32 bicubic is ~1e-4 off it).

    Output in [-1,1]: feed it to the network, or to a metric with ``input_range=(-1, 1)``. Not
    differentiable; the losses use :func:`resize`. Decode files with
    :func:`ifqa_loss.imageio.read_image_official`.

    Example:
        >>> official_network_input(torch.full((1, 3, 300, 200), 255, dtype=torch.uint8), 256).unique().tolist()
        [1.0]
    """
    if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[1] != 3:
        raise TypeError(f"official_network_input takes (N,3,H,W) uint8 images, got {image.dtype} {tuple(image.shape)}")
    if mode == "bilinear":
        return _albumentations_normalize(resize_uint8_like_cv2(image, size))
    if mode == "bicubic":
        x = _albumentations_normalize(image)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.double(), size=(size, size), mode="bicubic", align_corners=False).float()
        return x
    raise ValueError(f"the official preprocessing exists for 'bilinear' (IFQA) and 'bicubic' (IFQA++), got {mode!r}")


def _albumentations_normalize(image: torch.Tensor) -> torch.Tensor:
    """albumentations 1.x ``Normalize(mean=0.5, std=0.5)`` of uint8: float32 ``(v - 127.5) * float32(1/127.5)``."""
    x = image.float() - 127.5
    return x * torch.tensor(1 / 127.5, dtype=torch.float32, device=x.device)

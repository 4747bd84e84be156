"""A batch too large for memory is refused before it runs, with a batch size that fits.

An out-of-memory kill cannot be caught afterwards (the kernel ends the process, or the
allocator fails deep inside a convolution), so the metric estimates what a batch needs
first: the bytes of every layer output for one image at the network's input size, traced
once on the meta device (no memory, no compute), times the batch. Under
``torch.inference_mode`` only part of those outputs are alive at once (measured on the
IFQA U-Net at 256 px, CPU: about 93 MB per image against a 147 MB sum, hence
:data:`INFERENCE_FRACTION`); with autograd recording, all of them are kept for backward.
The estimate is compared with the memory the device has available (``psutil`` or
``/proc/meminfo`` on CPU, ``torch.cuda.mem_get_info`` plus the allocator's free cache on CUDA).
"""
from __future__ import annotations

import torch
from torch import nn

INFERENCE_FRACTION = 0.65  # live share of the summed layer outputs without autograd (measured, see above)


class BatchTooLarge(MemoryError):
    """A batch whose estimated memory exceeds what the device has available; the message says what fits."""


_TRACED: dict[tuple, int] = {}  # (network class, config, method, shape, dtype) -> bytes: traced once per process


def activation_bytes(net: nn.Module, method: str, shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Summed bytes of the leaf-module outputs of ``net.<method>`` on one ``shape`` input, traced on meta."""
    config = getattr(net, "config", None)
    key = (type(net), repr(sorted(config.items())) if isinstance(config, dict) else None, method, shape, dtype)
    if key not in _TRACED:
        _TRACED[key] = _trace(net, config, method, shape, dtype)
    return _TRACED[key]


def _trace(net: nn.Module, config, method: str, shape: tuple[int, ...], dtype: torch.dtype) -> int:
    try:
        with torch.device("meta"):
            twin = type(net)(**config) if isinstance(config, dict) else None
    except Exception:  # noqa: BLE001 - a network that cannot be rebuilt is simply not estimated
        twin = None
    if twin is None:
        return 0
    twin = twin.to(dtype)
    sizes: list[int] = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    hooks = [m.register_forward_hook(record) for m in twin.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            getattr(twin, method)(torch.empty(shape, device="meta", dtype=dtype))
    except Exception:  # noqa: BLE001 - an op without a meta kernel: no estimate
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return sum(sizes)


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on ``device`` (``None`` when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(batch: int, per_image: int, device: torch.device, *, grad: bool,
                     available: int | None = None) -> None:
    """Raise :class:`BatchTooLarge` when ``batch`` images of ``per_image`` summed activation bytes cannot fit.

    Example:
        >>> check_batch_fits(64, 2**30, torch.device("cpu"), grad=True, available=8 * 2**30)
        Traceback (most recent call last):
        ...
        ifqa_loss.batch_memory.BatchTooLarge: a batch of 64 images needs about 64.0 GiB ... try a batch of at most 8 ...
    """
    if per_image <= 0 or batch <= 1:
        return
    available = available_bytes(device) if available is None else available
    if available is None:
        return
    need_one = per_image if grad else int(per_image * INFERENCE_FRACTION)
    if batch * need_one <= available:
        return
    fits = max(available // need_one, 0)
    what = "with gradients (autograd keeps every layer output)" if grad else "for scoring"
    fix = (f"try a batch of at most {fits}" if fits >= 1 else
           "not even one image fits: free memory or use a device with more memory")
    raise BatchTooLarge(f"a batch of {batch} images needs about {batch * need_one / 2**30:.1f} GiB {what} on "
                        f"{device}, but only {available / 2**30:.1f} GiB are available: {fix} (split the batch)")

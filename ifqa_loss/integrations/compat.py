"""Fixes for the environment problems basicsr 1.4.2 / GFP-GAN 1.3.8 hit on current torch, torchvision and OpenCV.

* :func:`install_functional_tensor_alias` – ``torchvision.transforms.functional_tensor`` (renamed in
  torchvision 0.17) for basicsr's import; must run before the first ``import basicsr``.
* :func:`numpy_safe_globals` / :func:`load_component_file` – numpy values in ``.pth`` files under
  torch >= 2.6 weights-only loading (GFP-GAN's facial-component file).
* :func:`fix_jpeg_quality` – float JPEG quality that current OpenCV rejects (basicsr issue #578).
* :func:`install_native_ops` – pure-PyTorch StyleGAN2 ops where basicsr's compiled ones are absent.
* :func:`load_resume_state` – basicsr resume on a CPU-only machine.

Each fix is guarded (it changes nothing where the problem does not exist) and idempotent.
This module imports basicsr only inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys

import torch
import torch.nn.functional as F

OLD_NAME = "torchvision.transforms.functional_tensor"


def install_functional_tensor_alias() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if torchvision no longer ships it. Idempotent."""
    if OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(OLD_NAME)
    except ImportError:
        sys.modules[OLD_NAME] = importlib.import_module("torchvision.transforms._functional_tensor")


# ---------------------------------------------------------------- numpy inside .pth files (torch >= 2.6)

def numpy_pickle_globals() -> list:
    """The numpy names a pickled ndarray or numpy scalar refers to, for ``torch.serialization.safe_globals``.

    Old files name ``numpy.core.multiarray``, files written with numpy 2 ``numpy._core.multiarray``;
    both spellings are listed, bound to the installed objects. Only array and scalar reconstruction
    is allowed: no other callable becomes loadable.

    Example:
        >>> any(name == "numpy.core.multiarray._reconstruct" for _, name in numpy_pickle_globals())
        True
    """
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    entries = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(multiarray.multiarray._reconstruct, f"{module}._reconstruct"),
                    (multiarray.multiarray.scalar, f"{module}.scalar")]
    for dtype_class in {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}:
        entries.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
    return entries


@contextlib.contextmanager
def numpy_safe_globals():
    """Scope in which ``torch.load(..., weights_only=True)`` accepts numpy arrays and scalars.

    GFP-GAN's ``FFHQ_eye_mouth_landmarks_512.pth`` stores its boxes as numpy values, which
    torch >= 2.6 refuses by default; its ``FFHQDegradationDataset`` calls plain ``torch.load``.
    The launcher runs training inside this scope. Nothing outside numpy's reconstruction is allowed.

    Example:
        >>> import io, numpy as np
        >>> buffer = io.BytesIO(); torch.save({"eye": np.array([1.0, 2.0])}, buffer); _ = buffer.seek(0)
        >>> with numpy_safe_globals():
        ...     torch.load(buffer, weights_only=True)["eye"].tolist()
        [1.0, 2.0]
    """
    with torch.serialization.safe_globals(numpy_pickle_globals()):
        yield


def load_component_file(path: str | os.PathLike) -> dict:
    """Read GFP-GAN's facial-component file (``FFHQ_eye_mouth_landmarks_512.pth``) with weights-only loading.

    Raises ``FileNotFoundError`` naming where the file comes from when it is missing.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"facial-component file {path} not found; download FFHQ_eye_mouth_landmarks_512.pth from "
            "https://github.com/TencentARC/GFPGAN/releases/tag/v1.3.4 and set component_path to it")
    with numpy_safe_globals():
        return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- basicsr 1.4.2 on current OpenCV

def jpeg_quality_needs_int() -> bool:
    """True when the installed OpenCV refuses a float JPEG quality (OpenCV >= 4.8 / 5)."""
    import cv2
    import numpy as np

    try:
        cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [int(cv2.IMWRITE_JPEG_QUALITY), 90.5])
    except (cv2.error, TypeError, SystemError):
        return True
    return False


def fix_jpeg_quality(degradations=None) -> bool:
    """Make ``degradations.add_jpg_compression`` pass an int quality when OpenCV requires one.

    basicsr 1.4.2 (and GFP-GAN's dataset through it) draws the JPEG quality with
    ``np.random.uniform`` and hands the float to ``cv2.imencode``, which current OpenCV rejects
    (basicsr issue #578). Guarded: does nothing when OpenCV still accepts floats or the function is
    already fixed. ``degradations``: the module to fix (default ``basicsr.data.degradations``).
    Returns whether a fix is in place.
    """
    if degradations is None:
        from basicsr.data import degradations
    original = degradations.add_jpg_compression
    if getattr(original, "_ifqa_int_quality", False):
        return True
    if not jpeg_quality_needs_int():
        return False

    @functools.wraps(original)
    def add_jpg_compression(img, quality=90):
        return original(img, int(quality))

    add_jpg_compression._ifqa_int_quality = True
    degradations.add_jpg_compression = add_jpg_compression  # random_add_jpg_compression looks it up here
    return True


# ---------------------------------------------------------------- basicsr's compiled StyleGAN2 ops

def fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = 2 ** 0.5) -> torch.Tensor:
    """Pure-PyTorch ``fused_leaky_relu``: ``scale * leaky_relu(input + bias)``, bias over dim 1.

    Same values as basicsr's CUDA kernel; autograd provides the double backward R1 needs.

    Example:
        >>> fused_leaky_relu(torch.tensor([[-1.0, 1.0]]), torch.zeros(2), scale=1.0).tolist()
        [[-0.20000000298023224, 1.0]]
    """
    shape = (1, bias.shape[0]) + (1,) * (input.ndim - 2)
    return F.leaky_relu(input + bias.view(shape).to(input.dtype), negative_slope) * scale


def _extension_missing(module, name: str) -> bool:
    return not hasattr(module, name)


def install_native_ops() -> list[str]:
    """Replace basicsr's compiled StyleGAN2 ops by pure-PyTorch ones where the extension is absent.

    A pip-installed basicsr 1.4.2 has no ``fused_act_ext``/``upfirdn2d_ext`` unless built with
    ``BASICSR_EXT=True``; then ``StyleGAN2Discriminator`` (GFP-GAN's discriminator) fails with
    ``NameError: fused_act_ext``. Where an extension is present nothing changes. Every module that
    imported the op by name (``basicsr.archs.stylegan2_arch``, GFP-GAN's archs) gets the substitute.
    Returns the names replaced.
    """
    # The packages re-export functions named like their modules: fetch the modules themselves.
    fused_act = importlib.import_module("basicsr.ops.fused_act.fused_act")
    upfirdn2d_module = importlib.import_module("basicsr.ops.upfirdn2d.upfirdn2d")

    replacements = {}
    if _extension_missing(fused_act, "fused_act_ext"):
        replacements["fused_leaky_relu"] = (fused_act.fused_leaky_relu, fused_leaky_relu)
    if _extension_missing(upfirdn2d_module, "upfirdn2d_ext"):
        native = upfirdn2d_module.upfirdn2d_native

        def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
            return native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

        replacements["upfirdn2d"] = (upfirdn2d_module.upfirdn2d, upfirdn2d)
    for module in list(sys.modules.values()):
        if module is None or not (module.__name__.startswith(("basicsr.", "gfpgan."))):
            continue
        for name, (compiled, substitute) in replacements.items():
            if getattr(module, name, None) is compiled:
                setattr(module, name, substitute)
    return sorted(replacements)


# ---------------------------------------------------------------- basicsr resume on any device

def load_resume_state(opt: dict):
    """basicsr's ``load_resume_state`` without its CUDA-only ``map_location``: states load on the model's device.

    basicsr 1.4.2 maps every resumed tensor to ``torch.cuda.current_device()``, which fails on a
    CPU-only machine; this maps to CUDA when ``num_gpu`` > 0 and CUDA exists, else to the CPU.
    """
    from basicsr.utils import check_resume, scandir

    path = opt["path"].get("resume_state")
    if opt.get("auto_resume"):
        state_dir = os.path.join("experiments", opt["name"], "training_states")
        if os.path.isdir(state_dir):
            states = [float(v.split(".state")[0]) for v in scandir(state_dir, suffix="state", recursive=False)]
            if states:
                path = os.path.join(state_dir, f"{max(states):.0f}.state")
                opt["path"]["resume_state"] = path
    if not path:
        return None
    device = f"cuda:{torch.cuda.current_device()}" if opt.get("num_gpu", 0) and torch.cuda.is_available() else "cpu"
    state = torch.load(path, map_location=device, weights_only=False)  # basicsr's own training state
    check_resume(opt, state["iter"])
    return state

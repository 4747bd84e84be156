"""Reading weight files safely: the official ``{'D': state_dict}``, a bare state dict, or ``.safetensors``.

Pickled files are read with ``torch.load(weights_only=True)`` only, so a file that
carries code is refused without running it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

_CORRUPT_HINT = "the file is truncated or not a checkpoint: download it again"
_WRAPPER_KEYS = ("D", "params_ema", "params", "state_dict", "model")


class CheckpointError(RuntimeError):
    """A weight file is missing, unreadable, unsafe, or does not fit the requested metric."""


# Checkpoints written by earlier train-gfiqa versions name the architecture, not the metric.
_LEGACY_ARCH_METRIC = {"gfiqa": "gfiqa", "resnet50": "gfiqa-resnet50"}


class Checkpoint(NamedTuple):
    """What a weight file holds: the flat state dict, the architecture arguments saved with it, its metric."""

    state_dict: dict[str, torch.Tensor]
    config: dict
    metric: str | None  # recorded by this library's trainers and `weights import`; None for official files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` on CPU.

    Unwraps ``{'D': ...}`` (IFQA), ``{'params_ema': ...}`` / ``{'params': ...}`` (basicsr),
    ``{'state_dict': ...}`` and ``{'model': ...}``. Raises :class:`CheckpointError` with the reason and fix.
    """
    return read_checkpoint(path).state_dict


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a weight file: its state dict, the architecture ``config`` saved with it (``{}`` if none), its metric."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    config: dict = {}
    metric = None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
            config = json.loads(metadata.get("config", "{}"))
            metric = metadata.get("metric")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({exc}); re-download or re-import it"
            ) from exc
    else:
        obj = _torch_load_safely(path)
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
            config = obj["config"]
        if isinstance(obj, dict) and isinstance(obj.get("metric"), str):
            metric = obj["metric"]
        elif isinstance(obj, dict) and obj.get("arch") in _LEGACY_ARCH_METRIC:
            metric = _LEGACY_ARCH_METRIC[obj["arch"]]
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict of tensors; expected the official "
            "{'D': state_dict}, a bare state dict, or a .safetensors file"
        )
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return Checkpoint({str(k): v for k, v in obj.items()}, config, metric)


def read_training_state(path: str | os.PathLike) -> dict:
    """The whole payload of a training checkpoint (weights, optimiser and scheduler states, counters), read
    with ``weights_only=True`` like every other file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    payload = _torch_load_safely(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a training checkpoint")
    return payload


def stylegan_prior_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """StyleGAN2 weights from a GFPGANv1.3/1.4 checkpoint (``stylegan_decoder.*`` of ``params_ema``,
    fallback ``params``) or from a bare generator state dict."""
    state_dict = read_state_dict(path)
    prefix = "stylegan_decoder."
    if any(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict


def _torch_load_safely(path: Path):
    def load(mmap: bool):
        # mmap keeps a multi-GB checkpoint out of RAM until the tensors are used.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            return load(mmap=zipfile.is_zipfile(path))
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return load(mmap=False)  # legacy (pre-zip) serialisation
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage bytes, not a refused object
            raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({exc}); {_CORRUPT_HINT}") from exc
        raise CheckpointError(
            f"{path} was refused: it contains objects other than tensors (code or classes), and "
            "ifqa_loss only loads with torch.load(weights_only=True). If you trust the file, "
            "re-save its state dict: torch.save(obj['D'], 'clean.pth')"
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); {_CORRUPT_HINT}"
        ) from exc


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



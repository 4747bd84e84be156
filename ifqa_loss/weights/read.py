"""Reading weight files safely: the official ``{'D': state_dict}``, a bare state dict, or ``.safetensors``.

Pickled files are read with ``torch.load(weights_only=True)`` only, so a file that
carries code is refused without running it.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch

from ..safeio import UnreadableInput, open_regular
from .bounds import TooLarge, check_legacy_storages, check_zip_members

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


def read_checkpoint(path: str | os.PathLike, *, sha256: str | None = None) -> Checkpoint:
    """Read a weight file: its state dict, the architecture ``config`` saved with it (``{}`` if none), its metric.

    ``sha256``: the expected hex digest; a file with another one is refused before it is read.
    Every tensor is checked (floating or integer dtype, dense, with data, finite) and the
    tensors are copied into memory: nothing stays memory-mapped to ``path``, so the file may
    be replaced while the network is in use.

    Example:
        >>> import tempfile, pathlib, torch
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pth"
        >>> torch.save({"D": {"conv.weight": torch.ones(2, 2)}}, path)
        >>> read_checkpoint(path).state_dict["conv.weight"].shape
        torch.Size([2, 2])
    """
    path = Path(path).expanduser()
    check_readable_file(path)
    if sha256 is not None:
        check_sha256(path, sha256)
    config: object = {}
    metric = None
    if path.suffix == ".safetensors" or _head(path, 9)[8:9] == b"{":
        obj, metadata = _read_safetensors(path)
        try:
            config = json.loads(metadata.get("config", "{}"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: its safetensors metadata 'config' is not JSON ({exc}); "
                                  "re-import the original file") from exc
        metric = metadata.get("metric")
    else:
        obj = _torch_load_safely(path)
        if isinstance(obj, dict) and "config" in obj:
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
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise CheckpointError(f"{path}: its stored 'config' is a {type(config).__name__}, not a dict of "
                              "architecture arguments; the file was not written by ifqa_loss: save it again")
    state_dict = {str(k): v for k, v in obj.items()}
    check_tensors(state_dict, path)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return Checkpoint(state_dict, config, metric if isinstance(metric, str) else None)


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int32, torch.int64)  # counters such as BatchNorm's num_batches_tracked


def check_tensors(state_dict: dict[str, torch.Tensor], source: object = "state dict") -> None:
    """Refuse tensors no published network holds: meta (no data), sparse or quantized layouts, dtypes other
    than float16/bfloat16/float32/float64 (int32/int64 for counters), and NaN or Inf values; the message
    names the tensors.

    Example:
        >>> check_tensors({"w": torch.tensor([1.0, float("nan")])})
        Traceback (most recent call last):
        ...
        ifqa_loss.weights.read.CheckpointError: state dict: tensor 'w' holds NaN or Inf ...
    """
    def names(bad: list[str]) -> str:
        return ", ".join(repr(n) for n in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")

    def tensors(which: str, bad: list[str]) -> str:
        return f"tensor {names(bad)}" if len(bad) == 1 else f"{len(bad)} tensors ({names(bad)})"

    meta = [k for k, v in state_dict.items() if v.is_meta]
    if meta:
        raise CheckpointError(f"{source}: {tensors('meta', meta)} on the meta device hold no values; "
                              "save the weights after loading them onto cpu")
    layout = [k for k, v in state_dict.items() if v.layout != torch.strided or v.is_quantized]
    if layout:
        raise CheckpointError(f"{source}: {tensors('layout', layout)} are sparse or quantized; save dense "
                              "float weights (tensor.to_dense() / dequantize())")
    dtypes = [k for k, v in state_dict.items() if v.dtype not in _FLOAT_DTYPES + _INT_DTYPES]
    if dtypes:
        found = sorted({str(state_dict[k].dtype) for k in dtypes})
        raise CheckpointError(f"{source}: {tensors('dtype', dtypes)} of dtype {', '.join(found)}; the networks "
                              "hold float16/bfloat16/float32/float64 weights: save the float weights")
    expanded = [k for k, v in state_dict.items()
                if v.numel() and v.untyped_storage().nbytes() < v.numel() * v.element_size()]
    if expanded:  # a zero-stride view: a few stored bytes posing as a huge tensor
        raise CheckpointError(f"{source}: {tensors('storage', expanded)} declares more values than the file stores "
                              "(a broadcast view); the file is damaged or hostile: save real tensors "
                              "(tensor.contiguous())")
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not _finite(v)]
    if non_finite:
        raise CheckpointError(f"{source}: {tensors('values', non_finite)} holds NaN or Inf values; the "
                              "training run diverged or the file is damaged: use an earlier checkpoint")


def _finite(t: torch.Tensor) -> bool:
    """No NaN/Inf in ``t``: one min/max pass without a temporary (NaN propagates through both)."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t.detach().float() if t.dtype in (torch.float16, torch.bfloat16) else t.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def check_readable_file(path: Path) -> None:
    """Refuse, with the reason and fix, a path that is missing, a folder, a link loop, unreadable or empty."""
    try:
        size = path.stat().st_size
        is_dir = path.is_dir()
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if path.is_symlink() else ""
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist{broken}: check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"checkpoint {str(path)!r} is a symbolic link loop: point it at the real "
                                  "file") from None
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be opened ({exc.strerror}): check the path and "
                              "its permissions") from None
    if is_dir:
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file: pass the weight file in it")
    try:
        with open_regular(path, "checkpoint"):
            pass
    except UnreadableInput as exc:
        raise CheckpointError(str(exc)) from None
    except PermissionError:
        raise CheckpointError(f"checkpoint {str(path)!r} is not readable (permission denied): "
                              f"chmod u+r {str(path)!r} or copy it somewhere you can read") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): the download or copy failed; "
                              "download it again")


def check_sha256(path: Path, expected: str) -> str:
    """The file's sha256; :class:`CheckpointError` when it is not ``expected`` (hex, any case)."""
    want = expected.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ValueError(f"expected sha256 {expected!r} is not 64 hexadecimal digits")
    found = sha256_file(path)
    if found != want:
        raise CheckpointError(f"{path}: sha256 is {found}, expected {want}: this is not the pinned file "
                              "(changed, damaged, or another release); download or import the right file again")
    return found


_SIGNATURES = (  # (magic bytes, what the file is, how to get a checkpoint out of it)
    (b"\x1f\x8b", "gzip-compressed", "decompress it first: gunzip -k FILE"),
    (b"BZh", "bzip2-compressed", "decompress it first: bunzip2 -k FILE"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first: unxz -k FILE"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the .pth from it first"),
    (b"Rar!", "a RAR archive", "extract the .pth from it first"),
    (b"\x89PNG", "a PNG image", "pass the weight file, not an image"),
    (b"\xff\xd8\xff", "a JPEG image", "pass the weight file, not an image"),
)


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _what_it_is(path: Path) -> str | None:
    """A description and fix for files that are recognisably not checkpoints (archives, web pages, images)."""
    head = _head(path, 512)
    for magic, what, fix in _SIGNATURES:
        if head.startswith(magic):
            return f"{path} is {what}, not a checkpoint: {fix}"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text:
        return (f"{path} is a web page (HTML), not a checkpoint: the download saved the link's page (a sign-in, "
                "quota or virus-scan notice) instead of the file; open the link in a browser and download the "
                "file itself")
    if head[257:262] == b"ustar":
        return f"{path} is a tar archive, not a checkpoint: extract the .pth from it first (tar -xf FILE)"
    if _looks_like_text(head):
        start = head[:40].decode("utf-8", "replace").strip().splitlines()[0][:40] if head.strip() else ""
        return (f"{path} is a text file (it begins {start!r}), not a checkpoint: pass the weight file itself "
                "(.pth or .safetensors)")
    return None


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 text with no control bytes besides whitespace (a pickle or zip always has some)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the head
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(text.strip()) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors copied out of the file (no memory map stays open) and the metadata."""
    from safetensors import SafetensorError, safe_open

    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k).clone() for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        known = _what_it_is(path)
        if known:
            raise CheckpointError(known) from exc
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it is damaged or cut short: re-download "
            "or re-import it"
        ) from exc
    return tensors, metadata


def _check_safetensors_header(path: Path) -> None:
    """Refuse a header naming one tensor twice (the library keeps one of them silently: which weights load
    would depend on the reader). Headers that are not JSON are left to the library's own message."""
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if not 2 <= length <= min(path.stat().st_size - 8, 100 << 20):
            return
        header = fh.read(length)
    repeated: list[str] = []

    def pairs(items):
        counts = collections.Counter(k for k, _ in items)
        repeated.extend(k for k, n in counts.items() if n > 1)
        return dict(items)

    try:
        json.loads(header, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return
    if repeated:
        raise CheckpointError(f"{path}: its safetensors header names the tensor(s) {repeated[:5]} twice; which "
                              "values would load is undefined: the file is damaged or hostile: re-download or "
                              "re-import it")


def read_training_state(path: str | os.PathLike) -> dict:
    """The whole payload of a training checkpoint (weights, optimiser and scheduler states, counters), read
    with ``weights_only=True`` like every other file."""
    path = Path(path).expanduser()
    check_readable_file(path)
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
    """``torch.load(weights_only=True)`` without a memory map: a file replaced or cut while the network is in
    use cannot crash the process (SIGBUS); the cost is one full read into memory."""
    known = _what_it_is(path)
    if known:
        raise CheckpointError(known)
    size = path.stat().st_size
    try:
        if _head(path, 4) == b"PK\x03\x04":
            check_zip_members(path, size)
        elif _head(path, 1) == b"\x80":
            check_legacy_storages(path, size)
    except TooLarge as exc:
        raise CheckpointError(str(exc)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch words every refusal "Weights only load failed"; only a named global is code, the rest is garbage.
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: (\S+)", text)
        if found or "Unsupported class" in text:
            what = f" (it names {found.group(1)!r})" if found else ""
            raise CheckpointError(
                f"{path} was refused: besides tensors it holds Python objects or code{what} that would run "
                "when unpickled, and ifqa_loss loads only plain tensors (torch.load weights_only=True). Do not "
                "load it otherwise unless you wrote it yourself; if you did, save just the weights from the "
                "program that made it: torch.save(model.state_dict(), 'clean.pth')"
            ) from None
        detail = re.search(r"Unsupported operand \d+|[^\n]*$", text.split("\n\n")[1] if "\n\n" in text else text)
        reason = detail.group(0).strip() if detail else "unpickling failed"
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({reason}); {_CORRUPT_HINT}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            AttributeError, TypeError) as exc:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {_first_line(str(exc))}); "
            f"{_CORRUPT_HINT}"
        ) from exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



"""Checkpoint reading, verification, discovery and import: the one place that touches weight files.

Accepted layouts: the official ``{'D': state_dict}``, a bare state dict, or a
``.safetensors`` file. Pickled files are read with ``torch.load(weights_only=True)``
only, so a file that carries code is refused without running it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .registry import METRICS, OFFICIAL_REPO, OFFICIAL_WEIGHTS_URL, MetricSpec, get_spec

MANIFEST = "manifest.json"
_CORRUPT_HINT = "the file is truncated or not a checkpoint: download it again"
_WRAPPER_KEYS = ("D", "params_ema", "params", "state_dict", "model")


class CheckpointError(RuntimeError):
    """A weight file is missing, unreadable, unsafe, or does not fit the requested metric."""


def cache_dir() -> Path:
    """Where imported weights live: ``$IFQA_LOSS_HOME`` if set, else ``~/.cache/ifqa_loss``."""
    home = os.environ.get("IFQA_LOSS_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "ifqa_loss"


def expected_shapes(spec: MetricSpec, config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the published state dict, read off a meta-device build (no memory)."""
    with torch.device("meta"):
        net = spec.build(**(config or {}))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{name: tensor}`` on CPU.

    Unwraps ``{'D': ...}`` (IFQA), ``{'params_ema': ...}`` / ``{'params': ...}`` (basicsr),
    ``{'state_dict': ...}`` and ``{'model': ...}``. Raises :class:`CheckpointError` with the reason and fix.
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, config)``: config holds architecture arguments saved with the weights (``{}`` if none)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    config: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
            with safe_open(str(path), framework="pt") as fh:
                config = json.loads((fh.metadata() or {}).get("config", "{}"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({exc}); re-download or re-import it"
            ) from exc
    else:
        obj = _torch_load_safely(path)
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
            config = obj["config"]
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
    return {str(k): v for k, v in obj.items()}, config


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


@dataclass
class StateDictReport:
    """Differences between a state dict and the one a metric expects."""

    metric: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, expected, found)
    looks_like: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def __str__(self) -> str:
        def head(items, n=8):
            items = list(items)
            more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
            return ", ".join(map(str, items[:n])) + more

        lines = [f"state dict does not match metric {self.metric!r}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): {head(self.unexpected)}")
        if self.wrong_shape:
            shapes = (f"{k} expected {tuple(e)} found {tuple(f)}" for k, e, f in self.wrong_shape)
            lines.append(f"  wrong shapes ({len(self.wrong_shape)}): {head(shapes, 4)}")
        if self.looks_like and self.looks_like != self.metric:
            lines.append(f"  this file looks like a {self.looks_like!r} checkpoint: pass metric={self.looks_like!r}")
        elif not self.looks_like:
            lines.append("  it matches none of the known metrics: " + ", ".join(sorted(METRICS)))
        return "\n".join(lines)


def identify(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Name of the registered metric whose key set the state dict matches best (>= 90% overlap)."""
    best, best_overlap = None, 0.0
    keys = set(state_dict)
    for name, spec in METRICS.items():
        expected = set(expected_shapes(spec))  # configurable specs: names do not depend on widths
        overlap = len(keys & expected) / max(len(keys | expected), 1)
        if overlap > best_overlap:
            best, best_overlap = name, overlap
    return best if best_overlap >= 0.9 else None


def check_state_dict(
    state_dict: dict[str, torch.Tensor], metric: str, config: dict | None = None
) -> StateDictReport:
    """Compare names and shapes with the metric's network (no weights are built)."""
    expected = expected_shapes(get_spec(metric), config)
    report = StateDictReport(metric=get_spec(metric).name)
    report.missing = [k for k in expected if k not in state_dict]
    report.unexpected = [k for k in state_dict if k not in expected]
    report.wrong_shape = [
        (k, expected[k], tuple(v.shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if not report.ok:
        report.looks_like = identify(state_dict)
    return report


def find_checkpoint(metric: str) -> Path:
    """Locate installed weights for ``metric`` in the cache dir (imported copy first, then the official file)."""
    spec = get_spec(metric)
    root = cache_dir()
    for candidate in (root / spec.cache_filename, root / spec.official_filename):
        if candidate.is_file():
            return candidate
    where = f"no checkpoint for {spec.name!r} found in {root} (set $IFQA_LOSS_HOME to use another folder).\n"
    if spec.configurable:  # GFIQA: no public weights exist
        raise CheckpointError(
            where + f"  No public {spec.name} weights exist: train them with  ifqa-loss train-gfiqa ... --out RUN\n"
            f"  then pass checkpoint='RUN/best.pth' or run:  ifqa-loss weights import RUN/best.pth --metric {spec.name}"
        )
    raise CheckpointError(
        where + f"  The official weights ({spec.official_filename}) are published by the authors at\n"
        f"    {OFFICIAL_WEIGHTS_URL}\n    (linked from {OFFICIAL_REPO}).\n"
        f"  Download {spec.official_filename}, then run:  ifqa-loss weights import /path/to/{spec.official_filename}\n"
        f"  or pass the file directly: load_metric({spec.name!r}, checkpoint='/path/to/{spec.official_filename}')"
    )


def load_network(metric: str, checkpoint: str | os.PathLike | None = None) -> tuple[nn.Module, Path]:
    """Build ``metric``'s network straight from a checkpoint, strict, on CPU in the file's dtype.

    The network is created on the meta device and the checkpoint tensors are assigned
    into it, so no random weights are ever allocated.
    """
    spec = get_spec(metric)
    path = Path(checkpoint).expanduser() if checkpoint is not None else find_checkpoint(spec.name)
    state_dict, config = read_checkpoint(path)
    if config and not spec.configurable:
        config = {}
    report = check_state_dict(state_dict, spec.name, config)
    if not report.ok:
        raise CheckpointError(f"{path}: {report}")
    with torch.device("meta"):
        net = spec.build(**config)
    net.load_state_dict(state_dict, strict=True, assign=True)
    unset = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if unset:  # a tensor the checkpoint does not carry would silently stay without data
        raise CheckpointError(f"{path}: no values for {unset[:5]} after loading; the network needs them in the file")
    return net, path


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest() -> dict[str, dict]:
    path = cache_dir() / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); delete it and import the weights again") from exc


def import_checkpoint(path: str | os.PathLike, metric: str | None = None) -> dict:
    """Verify a downloaded checkpoint and store a safetensors copy in :func:`cache_dir`.

    The metric is identified from the keys unless given. Returns the manifest entry
    (metric, source path, sha256 of the source, stored file, its sha256, date).
    """
    from safetensors.torch import save_file

    source = Path(path).expanduser().resolve()
    state_dict, config = read_checkpoint(source)
    name = get_spec(metric).name if metric else identify(state_dict)
    if name is None:
        known = ", ".join(sorted(METRICS))
        raise CheckpointError(f"{source} matches none of the known metrics ({known}); pass --metric")
    config = config if get_spec(name).configurable else {}
    report = check_state_dict(state_dict, name, config)
    if not report.ok:
        raise CheckpointError(f"{source}: {report}")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / get_spec(name).cache_filename
    tmp = target.with_suffix(".tmp")
    metadata = {"metric": name, "config": json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in config.items()})}
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, target)  # never leave a half-written file under the final name
    entry = {
        "metric": name,
        "source": str(source),
        "source_sha256": sha256_file(source),
        "file": target.name,
        "sha256": sha256_file(target),
        "num_tensors": len(state_dict),
        "imported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    manifest = read_manifest()
    manifest[name] = entry
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return entry


def installed() -> list[dict]:
    """One row per metric: whether weights are installed, where, and their recorded sha256."""
    manifest = read_manifest()
    rows = []
    for name in METRICS:
        try:
            path = find_checkpoint(name)
        except CheckpointError:
            path = None
        entry = manifest.get(name, {})
        rows.append(
            {
                "metric": name,
                "installed": path is not None,
                "path": str(path) if path else "",
                "sha256": entry.get("sha256", "") if path and path.name == entry.get("file") else "",
                "source_sha256": entry.get("source_sha256", "") if path and path.name == entry.get("file") else "",
            }
        )
    return rows

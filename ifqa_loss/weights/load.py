"""Build a metric's network from a checkpoint, and save trained networks in the format that loads back."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..registry import METRICS, get_spec
from .cache import find_checkpoint, reading, recorded_sha256
from .read import CheckpointError, read_checkpoint, sha256_file
from .verify import check_state_dict, meta_network

RANDOM_WEIGHTS_WARNING = (
    "ifqa_loss: {name!r} built with RANDOM weights (random_weights=True): its scores and gradients are "
    "meaningless; use this only to test wiring, never for results"
)


def resolve_metric(metric: str | None, checkpoint: str | os.PathLike | None, default: str = "ifqa") -> str:
    """The metric to build: ``metric`` if given, else the one the checkpoint records, else ``default``."""
    if metric is not None:
        return get_spec(metric).name
    if checkpoint is not None:
        recorded = read_checkpoint(checkpoint).metric
        if recorded is not None and recorded.lower() in METRICS:
            return get_spec(recorded).name
    return get_spec(default).name


def load_network(
    metric: str, checkpoint: str | os.PathLike | None = None, *, sha256: str | None = None
) -> tuple[nn.Module, Path]:
    """Build ``metric``'s network straight from a checkpoint, strict, on CPU in the file's dtype.

    The network is created on the meta device and the checkpoint tensors are assigned
    into it, so no random weights are ever allocated. Architecture arguments stored
    with the weights (``config``) are validated, then honoured; a checkpoint recorded as
    another metric is refused with the name to pass instead. ``sha256`` pins the file's
    digest; a file in the weights cache is always checked against the sha256 recorded
    when it was imported.
    """
    spec = get_spec(metric)
    path = Path(checkpoint).expanduser() if checkpoint is not None else find_checkpoint(spec.name)
    with reading(path):
        recorded_digest = recorded_sha256(path) if sha256 is None else None
        if recorded_digest is not None:
            found = sha256_file(path)
            if found != recorded_digest:
                raise CheckpointError(
                    f"{path} changed since it was imported (sha256 {found}, the cache manifest records "
                    f"{recorded_digest}): it was modified or damaged on disk; import the original file again: "
                    "ifqa-loss weights import PATH"
                )
        state_dict, config, recorded = read_checkpoint(path, sha256=sha256)
    if recorded is not None and recorded not in METRICS:
        raise CheckpointError(f"{path} records the metric {recorded!r}, which this version does not know "
                              f"({', '.join(sorted(METRICS))}); the file is damaged or from a newer version")
    if recorded is not None and recorded != spec.name:
        raise CheckpointError(f"{path} holds {recorded!r} weights, not {spec.name!r}: pass metric={recorded!r}")
    net = meta_network(spec, config, state_dict, source=path)
    report = check_state_dict(state_dict, spec.name, config, net=net)
    if not report.ok:
        raise CheckpointError(f"{path}: {report}")
    net.load_state_dict(state_dict, strict=True, assign=True)
    unset = [name for name, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if unset:  # a tensor the checkpoint does not carry would silently stay without data
        raise CheckpointError(f"{path}: no values for {unset[:5]} after loading; the network needs them in the file")
    return net, path


def random_network(metric: str, seed: int = 0, **config) -> nn.Module:
    """``metric``'s network with seeded random weights, for wiring tests only (warns loudly every time).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     net = random_network("ifqa", widths=(4, 8, 8, 16, 16), num_bottleneck=1)
        >>> "RANDOM weights" in str(caught[0].message)
        True
    """
    spec = get_spec(metric)
    warnings.warn(RANDOM_WEIGHTS_WARNING.format(name=spec.name), UserWarning, stacklevel=3)
    generator_state = torch.random.get_rng_state()
    try:  # seeded without disturbing the caller's random stream
        torch.manual_seed(seed)
        net = spec.build(**config)
    finally:
        torch.random.set_rng_state(generator_state)
    net.random_weights = True
    return net


def _plain(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def save_checkpoint(path: str | os.PathLike, net: nn.Module, metric: str, **extra) -> Path:
    """Write ``net`` as a ``metric`` checkpoint that :func:`load_network` (and so ``load_metric``) reads back.

    Layout: ``{checkpoint_key: state_dict, "metric": name, "config": net.config, **extra}``
    (``checkpoint_key`` is ``'D'`` for IFQA, as the official file). ``extra`` holds
    training state (optimisers, epoch, ...). Written atomically: a crash never leaves a
    half-written file under ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
        >>> net = IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1)
        >>> path = save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "d.pth", net, "ifqa", step=3)
        >>> load_network("ifqa", path)[0].config["widths"]
        (4, 8, 8, 16, 16)
    """
    spec = get_spec(metric)
    path = Path(path)
    payload = {spec.checkpoint_key: net.state_dict(), "metric": spec.name,
               "config": _plain(getattr(net, "config", {})), **extra}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two savers never share a temp
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

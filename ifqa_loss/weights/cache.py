"""The weights cache: where imported checkpoints live, how they are found, imported and listed."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from ..registry import METRICS, OFFICIAL_REPO, OFFICIAL_WEIGHTS_URL, get_spec
from .read import CheckpointError, read_checkpoint, sha256_file
from .verify import check_state_dict, identify

MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """Where imported weights live: ``$IFQA_LOSS_HOME`` if set, else ``~/.cache/ifqa_loss``."""
    home = os.environ.get("IFQA_LOSS_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "ifqa_loss"


def find_checkpoint(metric: str) -> Path:
    """Locate installed weights for ``metric`` in the cache dir (imported copy first, then the official file)."""
    spec = get_spec(metric)
    root = cache_dir()
    for candidate in (root / spec.cache_filename, root / spec.official_filename):
        if candidate.is_file():
            return candidate
    where = f"no checkpoint for {spec.name!r} found in {root} (set $IFQA_LOSS_HOME to use another folder).\n"
    if not spec.published:  # GFIQA: no public weights exist
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
    state_dict, config, recorded = read_checkpoint(source)
    name = get_spec(metric).name if metric else recorded or identify(state_dict)
    if name is None:
        known = ", ".join(sorted(METRICS))
        raise CheckpointError(f"{source} matches none of the known metrics ({known}); pass --metric")
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
        "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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

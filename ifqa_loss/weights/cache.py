"""The weights cache: where imported checkpoints live, how they are found, imported and listed.

Imports hold a file lock (``filelock``) on the cache folder, write every file to a
per-process temporary name and rename it into place, so concurrent imports and loads
never see half-written files; temporaries left by a killed import are removed by the
next one. The manifest records each stored file's sha256, checked on every load.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

from ..registry import METRICS, OFFICIAL_REPO, OFFICIAL_WEIGHTS_URL, get_spec
from .read import CheckpointError, read_checkpoint, sha256_file

MANIFEST = "manifest.json"
LOCK = ".lock"  # stays in the folder (an empty file): removing it would let two processes lock different files
LOCK_TIMEOUT_S = 600.0
_TEMP_SUFFIX = ".tmp"


def cache_dir() -> Path:
    """Where imported weights live: ``$IFQA_LOSS_HOME`` if set, else ``~/.cache/ifqa_loss``."""
    home = os.environ.get("IFQA_LOSS_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "ifqa_loss"


def _checked_root(create: bool) -> Path:
    """The cache folder, refused with the fix when it is a file, a link loop, or cannot be created."""
    root = cache_dir()
    fix = "set IFQA_LOSS_HOME to a writable folder"
    try:
        exists, is_dir = root.exists(), root.is_dir()
    except OSError as exc:  # ELOOP on Python >= 3.13 (earlier versions return False)
        raise CheckpointError(f"the weights folder {root} cannot be used ({exc.strerror}): {fix}") from None
    if root.is_symlink() and not exists:
        raise CheckpointError(f"the weights folder {root} is a broken symbolic link or a link loop: {fix}")
    if exists and not is_dir:
        raise CheckpointError(f"the weights folder {root} is a file, not a folder: move the file away or {fix}")
    if create and not exists:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the weights folder {root} ({exc.strerror}): {fix}") from None
    return root


def find_checkpoint(metric: str) -> Path:
    """Locate installed weights for ``metric`` in the cache dir (imported copy first, then the official file)."""
    spec = get_spec(metric)
    root = _checked_root(create=False)
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
    """``{metric: entry}`` of imported weights; :class:`CheckpointError` when the manifest is unreadable or not one."""
    path = cache_dir() / MANIFEST
    fix = "delete it and import the weights again (ifqa-loss weights import PATH)"
    try:
        if not path.exists():
            return {}
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); {fix}") from exc
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc.strerror}); {fix}") from None
    entry_keys = ("file", "sha256")
    if not isinstance(manifest, dict) or not all(
        isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in entry_keys)
        for entry in manifest.values()
    ):
        raise CheckpointError(f"{path} is not a weights manifest (expected "
                              f"{{metric: {{'file': ..., 'sha256': ...}}}}); {fix}")
    return manifest


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 the manifest recorded for ``path`` when it is an imported file of the cache, else ``None``."""
    path = Path(path)
    root = cache_dir()
    try:
        if path.resolve().parent != root.resolve():
            return None
    except (OSError, RuntimeError):  # link loops: not a cache file
        return None
    for entry in read_manifest().values():
        if entry["file"] == path.name:
            return entry["sha256"]
    return None


@contextmanager
def _cache_lock(root: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / LOCK), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout:
        raise CheckpointError(f"another process has held the weights folder lock {root / LOCK} for "
                              f"{LOCK_TIMEOUT_S:.0f} s; wait for it to finish (or end it) and retry") from None


@contextmanager
def reading(path: str | os.PathLike):
    """Hold the cache lock while a file of the cache is checked and read, so an import running at the same
    time cannot swap the file between its digest check and its reading. Files outside the cache, and a
    read-only cache (no lock file can be made there), are read without it."""
    from filelock import FileLock, Timeout

    root = cache_dir()
    try:
        in_cache = Path(path).resolve().parent == root.resolve()
    except (OSError, RuntimeError):
        in_cache = False
    lock = FileLock(str(root / LOCK), timeout=LOCK_TIMEOUT_S) if in_cache else None
    try:
        if lock is not None:
            lock.acquire()
    except Timeout:
        raise CheckpointError(f"another process has held the weights folder lock {root / LOCK} for "
                              f"{LOCK_TIMEOUT_S:.0f} s; wait for it to finish (or end it) and retry") from None
    except OSError:  # read-only cache: nobody can be importing into it
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _remove_stale_temps(root: Path) -> None:
    """Temporaries of imports killed mid-write (only lock holders write, so any present now is stale)."""
    for stale in root.glob(f".*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _write_atomically(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}{_TEMP_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the rename below must never expose a file whose data is not on disk
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with the JSON header's keys sorted: the library writes the metadata in
    hash order, so two imports of one file would otherwise differ in bytes and sha256."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(canonical) <= size:  # same content, so never longer; keep the original layout otherwise
            fh.seek(8)
            fh.write(canonical.ljust(size, b" "))


def _verified_metric(source: Path, state_dict: dict, config: dict, metric: str | None, recorded: str | None) -> str:
    """The metric the checkpoint holds (asked for, recorded in the file, or identified from its keys), its layout
    checked; raises CheckpointError naming what does not match."""
    from .verify import check_state_dict, identify

    if recorded is not None and recorded.lower() not in METRICS:
        recorded = None
    if metric and recorded and get_spec(metric).name != recorded:
        raise CheckpointError(f"{source} holds {recorded!r} weights, not {get_spec(metric).name!r}: pass "
                              f"--metric {recorded} (or leave it out)")
    name = get_spec(metric).name if metric else recorded or identify(state_dict)
    if name is None:
        known = ", ".join(sorted(METRICS))
        raise CheckpointError(f"{source} matches none of the known metrics ({known}); pass --metric")
    report = check_state_dict(state_dict, name, config)
    if not report.ok:
        raise CheckpointError(f"{source}: {report}")
    return name


def import_checkpoint(path: str | os.PathLike, metric: str | None = None, *, sha256: str | None = None) -> dict:
    """Check a downloaded checkpoint and store a safetensors copy in :func:`cache_dir`.

    What is checked is the file's *layout* — tensor names, shapes, dtypes, finite values
    and stored configuration for the metric (identified from the keys unless given) — not
    its *provenance*: a file of the right layout with other values is accepted. Pass
    ``sha256`` (the digest the authors publish, or one you recorded) to pin the exact file.
    Returns the manifest entry (metric, source path, sha256 of the source, stored file,
    its sha256, date). Identical imports store byte-identical files.
    """
    source = Path(path).expanduser()
    try:
        source = source.resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic link loop (RuntimeError before Python 3.13)
        raise CheckpointError(f"checkpoint {str(source)!r} cannot be resolved ({exc}): point it at the real file") \
            from None
    state_dict, config, recorded = read_checkpoint(source, sha256=sha256)
    source_sha256 = sha256.strip().lower() if sha256 else sha256_file(source)
    name = _verified_metric(source, state_dict, config, metric, recorded)
    root = _checked_root(create=True)
    target = root / get_spec(name).cache_filename
    metadata = {"metric": name, "config": json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in sorted(config.items())})}
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        with _cache_lock(root):
            _remove_stale_temps(root)
            _write_atomically(target, lambda tmp: _save_safetensors(tensors, tmp, metadata))
            entry = {
                "metric": name,
                "source": str(source),
                "source_sha256": source_sha256,
                "file": target.name,
                "sha256": sha256_file(target),
                "num_tensors": len(state_dict),
                "verified": "layout (names, shapes, dtypes, finite values, config); not provenance",
                "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            manifest = read_manifest()
            manifest[name] = entry
            _write_atomically(root / MANIFEST,
                              lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8"))
    except OSError as exc:
        raise _write_error(root, exc) from None
    return entry


def _write_error(root: Path, exc: OSError) -> CheckpointError:
    """A failed write to the weights folder, said with its cause and the fix."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(f"the weights folder {root} is not writable ({exc.strerror}): set IFQA_LOSS_HOME "
                               "to a writable folder")
    if exc.errno == errno.ENOSPC:
        return CheckpointError(f"no space left on the device of {root}: free space or set IFQA_LOSS_HOME to "
                               "another folder")
    return CheckpointError(f"cannot write to the weights folder {root} ({exc}): set IFQA_LOSS_HOME to a "
                           "writable folder")


def installed() -> list[dict]:
    """One row per metric: whether weights are installed, where, and their recorded sha256."""
    _checked_root(create=False)
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

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
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from ..registry import METRICS, OFFICIAL_REPO, OFFICIAL_WEIGHTS_URL, get_spec
from ..safeio import UnreadableInput, read_json
from .read import CheckpointError, read_checkpoint, sha256_file

MANIFEST = "manifest.json"
LOCK = ".lock"  # stays in the folder (an empty file): removing it would let two processes lock different files
HOLDER = ".lock.holder"  # JSON: pid, start time and command of the process holding the lock (for those waiting)
LOCK_TIMEOUT_S = 60.0  # default wait for the lock; IFQA_LOSS_LOCK_TIMEOUT=SECONDS sets another
LOCK_TIMEOUT_ENV = "IFQA_LOSS_LOCK_TIMEOUT"
MAX_MANIFEST_BYTES = 1 << 20
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
            f"  then pass --checkpoint RUN/best.pth (checkpoint='RUN/best.pth' in Python) or run:  ifqa-loss weights "
            f"import RUN/best.pth --metric {spec.name}"
        )
    raise CheckpointError(
        where + f"  The official weights ({spec.official_filename}) are published by the authors at\n"
        f"    {OFFICIAL_WEIGHTS_URL}\n    (linked from {OFFICIAL_REPO}).\n"
        f"  Download {spec.official_filename}, then run:  ifqa-loss weights import /path/to/{spec.official_filename}\n"
        f"  or pass the file directly: --checkpoint /path/to/{spec.official_filename} on the command line,\n"
        f"  load_metric({spec.name!r}, checkpoint='/path/to/{spec.official_filename}') in Python"
    )


def read_manifest() -> dict[str, dict]:
    """``{metric: entry}`` of imported weights; :class:`CheckpointError` when the manifest is unreadable or not one."""
    path = cache_dir() / MANIFEST
    fix = "delete it and import the weights again (ifqa-loss weights import PATH)"
    try:
        if not path.exists():
            return {}
        manifest = read_json(path, "the weights manifest", limit=MAX_MANIFEST_BYTES, max_depth=4)
    except UnreadableInput as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); {fix}") from None
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
    try:  # the folder the name is in, not where a link points: a cache entry replaced by a link is still checked
        if _parent(path) != root.resolve():
            return None
    except (OSError, RuntimeError):  # link loops: not a cache file
        return None
    for entry in read_manifest().values():
        if entry["file"] == path.name:
            return entry["sha256"]
    return None


def _parent(path: Path) -> Path:
    """The resolved folder holding ``path`` (its last component not followed)."""
    return Path(os.path.abspath(path)).parent.resolve()


def lock_timeout() -> float:
    """Seconds to wait for the weights folder lock: ``$IFQA_LOSS_LOCK_TIMEOUT``, else :data:`LOCK_TIMEOUT_S`."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return LOCK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1e7:  # also refuses NaN
        raise CheckpointError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a number of seconds >= 0: set it to e.g. 120")
    return value


def _holder(root: Path) -> str:
    """Who holds the lock, from the holder file its holder wrote."""
    try:
        info = json.loads((root / HOLDER).read_text(encoding="utf-8"))
        return f"process {int(info['pid'])} ({info.get('command', '?')}, since {info.get('started', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it left no holder record)"


def _write_holder(root: Path) -> None:
    record = {"pid": os.getpid(), "command": " ".join(sys.argv[:3])[:200] or "python",
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        (root / HOLDER).write_text(json.dumps(record), encoding="utf-8")
    except OSError:
        pass  # the lock itself still works; waiters say they do not know who holds it


def _lock_problem(lock_path: Path) -> OSError | None:
    """The error that keeps the lock file from ever being created (``None`` when it can be)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        return exc
    os.close(fd)
    return None


@contextmanager
def _cache_lock(root: Path, *, optional: bool = False):
    """Hold the weights folder lock. Waiting says at once who holds it and gives up after :func:`lock_timeout`
    seconds with the fix; a lock file that cannot be created is refused at once (``optional``: go on unlocked,
    for reads of a read-only cache, which nobody can be importing into)."""
    from filelock import FileLock, Timeout

    lock_path = root / LOCK
    problem = _lock_problem(lock_path)
    if problem is not None:
        if optional:
            yield
            return
        if problem.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _write_error(root, problem)
        raise CheckpointError(f"cannot create the weights folder lock {lock_path} ({problem.strerror}): the folder "
                              "does not take files; set IFQA_LOSS_HOME to a writable folder")
    timeout = lock_timeout()
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(root)
        print(f"ifqa_loss: waiting for the weights folder lock {lock_path}, held by {holder}; giving up after "
              f"{timeout:.0f} s ({LOCK_TIMEOUT_ENV} sets the wait)", file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise CheckpointError(f"gave up after waiting {timeout:.0f} s for the weights folder lock {lock_path}, "
                                  f"held by {holder}: let that process finish (or end it), then retry; "
                                  f"{LOCK_TIMEOUT_ENV}=SECONDS waits longer") from None
    try:
        _write_holder(root)
        yield
    finally:
        try:
            (root / HOLDER).unlink(missing_ok=True)
        except OSError:
            pass
        lock.release()


@contextmanager
def reading(path: str | os.PathLike):
    """Hold the cache lock while a file of the cache is checked and read, so an import running at the same
    time cannot swap the file between its digest check and its reading. Files outside the cache, and a
    read-only cache (no lock file can be made there), are read without it."""
    root = cache_dir()
    try:
        in_cache = _parent(Path(path)) == root.resolve()
    except (OSError, RuntimeError):
        in_cache = False
    if not in_cache:
        yield
        return
    with _cache_lock(root, optional=True):
        yield


def _own_temporary(name: str) -> bool:
    """A temporary name :func:`_write_atomically` makes: ``.<manifest or a cache file>.<pid>.tmp``."""
    ours = {MANIFEST} | {spec.cache_filename for spec in METRICS.values()}
    found = re.fullmatch(rf"\.(.+)\.\d+{re.escape(_TEMP_SUFFIX)}", name)
    return bool(found) and found.group(1) in ours


def _remove_stale_temps(root: Path) -> None:
    """Temporaries of imports killed mid-write (only lock holders write, so any present now is stale). Only this
    library's own names go: another tool's ``.*.tmp`` in a shared folder stays."""
    for stale in root.glob(f".*{_TEMP_SUFFIX}"):
        if _own_temporary(stale.name) and not stale.is_symlink() and stale.is_file():
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

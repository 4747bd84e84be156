"""The weights cache under hostile states and faults: clear refusals, or it keeps working and loses nothing."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from ifqa_loss.cli import main
from ifqa_loss.weights import (
    MANIFEST,
    CheckpointError,
    cache_dir,
    find_checkpoint,
    import_checkpoint,
    installed,
    load_network,
    sha256_file,
)

from robustness.case import Case, Refused, Works, params

HOME_FIX = "IFQA_LOSS_HOME"
IMPORT_AGAIN = "import"


def imported(then):
    """Import the tiny checkpoint, then damage or change the cache with ``then(home, ckpt)``; run: load it."""
    def make(home: Path, ckpt: Path):
        import_checkpoint(ckpt)
        then(home, ckpt)
        return lambda: load_network("ifqa")
    return make


def home_state(prepare, action="import"):
    """Put the cache folder into a state, then run ``action``: import, load, list (API) or a CLI command."""
    def make(home: Path, ckpt: Path):
        prepare(home, ckpt)
        actions = {
            "import": lambda: import_checkpoint(ckpt),
            "load": lambda: load_network("ifqa"),
            "list": installed,
            "find": lambda: find_checkpoint("ifqa"),
        }
        return actions[action]
    return make


def manifest(content: bytes | str):
    def prepare(home: Path, ckpt: Path):
        home.mkdir(parents=True, exist_ok=True)
        (home / MANIFEST).write_bytes(content.encode() if isinstance(content, str) else content)
    return prepare


def flip_byte(offset_from_end: int):
    def damage(home: Path, ckpt: Path):
        path = home / "ifqa.safetensors"
        data = bytearray(path.read_bytes())
        data[-offset_from_end] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def _home_is_file(home, ckpt):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a folder")


def _home_loop(home, ckpt):
    home.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(home.parent / "loop2", home)
    os.symlink(home, home.parent / "loop2")


def _home_broken_link(home, ckpt):
    home.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(home.parent / "gone", home)


def _home_under_file(home, ckpt):
    """IFQA_LOSS_HOME points below a file: the folder can never be created."""
    blocker = home.parent / "blocker"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("x")
    os.environ["IFQA_LOSS_HOME"] = str(blocker / "home")


def _stale_temps(home, ckpt):
    home.mkdir(parents=True)
    (home / ".ifqa.safetensors.99999.tmp").write_bytes(b"\0" * 4096)  # left by a killed import
    (home / f".{MANIFEST}.99999.tmp").write_text("{")


def _check_import_is_clean(home: Path, ckpt: Path):
    def run():
        entry = import_checkpoint(ckpt)
        leftovers = sorted(p.name for p in home.iterdir() if p.name.endswith(".tmp"))
        assert leftovers == [], leftovers
        assert entry["sha256"] == sha256_file(home / entry["file"])
        return load_network("ifqa")
    return run


def _twice_identical(home: Path, ckpt: Path):
    def run():
        first = import_checkpoint(ckpt)
        stored = (home / first["file"]).read_bytes()
        second = import_checkpoint(ckpt)
        assert second["sha256"] == first["sha256"] and (home / first["file"]).read_bytes() == stored
    return run


def _pinned_wrong_writes_nothing(home: Path, ckpt: Path):
    def run():
        with pytest.raises(CheckpointError, match="expected 0{64}"):
            import_checkpoint(ckpt, sha256="0" * 64)
        assert not home.exists() or not any(home.iterdir())
    return run


def _nan_import_writes_nothing(home: Path, ckpt: Path):
    def run():
        payload = torch.load(ckpt, weights_only=True)
        payload["D"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in payload["D"].items()}
        bad = home.parent / "nan.pth"
        torch.save(payload, bad)
        with pytest.raises(CheckpointError, match="NaN"):
            import_checkpoint(bad)
        assert not home.exists() or not any(home.iterdir())
        import_checkpoint(ckpt)  # the folder still takes a good file afterwards
    return run


def _replace_source_after_import(home: Path, ckpt: Path):
    """The user overwrites the file they imported from: the cached copy is independent of it."""
    def run():
        copy = home.parent / "copy.pth"
        copy.write_bytes(ckpt.read_bytes())
        import_checkpoint(copy)
        copy.write_bytes(b"overwritten")
        net, path = load_network("ifqa")
        assert path.parent == home
    return run


def _loaded_then_file_replaced(home: Path, ckpt: Path):
    """A loaded network keeps no memory map of its file: replacing or truncating it later cannot crash (SIGBUS)."""
    def run():
        copy = home.parent / "live.pth"
        copy.write_bytes(ckpt.read_bytes())
        net, _ = load_network("ifqa", copy)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        with open(copy, "r+b") as fh:
            fh.truncate(10)
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
        maps = Path(f"/proc/{os.getpid()}/maps").read_text()
        assert str(copy) not in maps, "the checkpoint is still memory-mapped"
    return run


def _official_file_dropped(home: Path, ckpt: Path):
    home.mkdir(parents=True)
    (home / "IFQA_Metric.pth").write_bytes(ckpt.read_bytes())


def _cache_file_deleted(home: Path, ckpt: Path):
    (home / "ifqa.safetensors").unlink()


def _cache_file_replaced_by_folder(home: Path, ckpt: Path):
    (home / "ifqa.safetensors").unlink()
    (home / "ifqa.safetensors").mkdir()


def _cache_file_truncated(home: Path, ckpt: Path):
    path = home / "ifqa.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _manifest_deleted(home: Path, ckpt: Path):
    (home / MANIFEST).unlink()


def _manifest_other_sha(home: Path, ckpt: Path):
    data = json.loads((home / MANIFEST).read_text())
    data["ifqa"]["sha256"] = "f" * 64
    (home / MANIFEST).write_text(json.dumps(data))


def _manifest_is_folder(home: Path, ckpt: Path):
    home.mkdir(parents=True)
    (home / MANIFEST).mkdir()


def _lock_left_behind(home: Path, ckpt: Path):
    home.mkdir(parents=True)
    (home / ".lock").write_text("")  # a lock file of a finished or killed process: no lock is held on it


def held_lock(timeout: str, record: str | None | dict = "default", action: str = "import", check_waiting=False):
    """Another holder has the lock (a separate file handle: flock locks per open file) and left a holder record."""
    def make(home: Path, ckpt: Path):
        from filelock import FileLock

        home.mkdir(parents=True, exist_ok=True)
        if action == "load":
            import_checkpoint(ckpt)
        os.environ["IFQA_LOSS_LOCK_TIMEOUT"] = timeout
        blocker = FileLock(str(home / ".lock"))
        blocker.acquire()
        info = {"pid": 4242, "command": "ifqa-loss weights import", "started": "2026-12-06T08:00:00+00:00"}
        if record == "default":
            (home / ".lock.holder").write_text(json.dumps(info))
        elif record is not None:
            (home / ".lock.holder").write_text(record)

        def run():
            try:
                if check_waiting:
                    import contextlib
                    import io
                    err = io.StringIO()
                    started = time.perf_counter()
                    with contextlib.redirect_stderr(err), pytest.raises(CheckpointError):
                        import_checkpoint(ckpt)
                    assert time.perf_counter() - started < 5
                    message = err.getvalue()
                    assert re.search(case_reported("lock-held-says-it-waits-at-once"), message), message
                    return
                load_network("ifqa") if action == "load" else import_checkpoint(ckpt)
            finally:
                blocker.release()
                os.environ.pop("IFQA_LOSS_LOCK_TIMEOUT", None)
        return run
    return make


def case_reported(case_id: str) -> str:
    return next(c.expect.reported for c in CASES if c.id == case_id)


def with_env(name: str, value: str):
    def make(home: Path, ckpt: Path):
        def run():
            os.environ[name] = value
            try:
                import_checkpoint(ckpt)
            finally:
                os.environ.pop(name, None)
        return run
    return make


def home_at(folder: str):
    def make(home: Path, ckpt: Path):
        os.environ["IFQA_LOSS_HOME"] = folder
        started = time.perf_counter()

        def run():
            try:
                import_checkpoint(ckpt)
            finally:
                assert time.perf_counter() - started < 5, "refused at once, not after the lock timeout"
        return run
    return make


def _holder_recorded(home: Path, ckpt: Path):
    seen = {}

    def run():
        from ifqa_loss.weights import cache

        original = cache._write_atomically

        def spy(target, write):
            seen.update(json.loads((home / ".lock.holder").read_text()))
            return original(target, write)
        cache._write_atomically = spy
        try:
            import_checkpoint(ckpt)
        finally:
            cache._write_atomically = original
        assert seen["pid"] == os.getpid() and seen["started"].startswith("20"), seen
        assert not (home / ".lock.holder").exists(), "the record goes with the lock"
    return run


def _other_weights(ckpt: Path, where: Path) -> Path:
    """A file of the same layout with other values."""
    payload = torch.load(ckpt, weights_only=True)
    payload["D"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in payload["D"].items()}
    torch.save(payload, where)
    return where


def _entry_linked_to_other_weights(home: Path, ckpt: Path):
    from safetensors.torch import save_file

    from ifqa_loss.weights import read_checkpoint

    other = _other_weights(ckpt, home.parent / "other.pth")
    state = read_checkpoint(other).state_dict
    save_file(state, str(home.parent / "other.safetensors"), metadata={"metric": "ifqa"})
    entry = home / "ifqa.safetensors"
    entry.unlink()
    entry.symlink_to(home.parent / "other.safetensors")


def _entry_linked_to_identical_copy(home: Path, ckpt: Path):
    import shutil

    entry = home / "ifqa.safetensors"
    shutil.copy(entry, home.parent / "copy.safetensors")
    entry.unlink()
    entry.symlink_to(home.parent / "copy.safetensors")


def _entry_linked_to_other_name_in_cache(home: Path, ckpt: Path):
    from safetensors.torch import save_file

    from ifqa_loss.weights import read_checkpoint

    save_file(read_checkpoint(_other_weights(ckpt, home.parent / "o.pth")).state_dict, str(home / "x.safetensors"),
              metadata={"metric": "ifqa"})
    entry = home / "ifqa.safetensors"
    entry.unlink()
    entry.symlink_to("x.safetensors")


FOREIGN_TEMPS = (".download.tmp", ".ifqa.safetensors.tmp", ".notes.txt.123.tmp", ".ifqa.safetensors.abc.tmp",
                 ".manifest.json.tmp")


def _foreign_temps_kept(home: Path, ckpt: Path):
    def run():
        home.mkdir(parents=True, exist_ok=True)
        for name in FOREIGN_TEMPS:
            (home / name).write_text("another tool's work in progress")
        (home / ".ifqa.safetensors.777.tmp").write_text("ours, stale")
        import_checkpoint(ckpt)
        assert all((home / name).read_text() == "another tool's work in progress" for name in FOREIGN_TEMPS)
        assert not (home / ".ifqa.safetensors.777.tmp").exists()
    return run


REPAIR = "delete it and import the weights again"
CASES = [
    # --- the folder itself -----------------------------------------------------------------------------------
    Case("home-is-a-file-import", home_state(_home_is_file), Refused("is a file, not a folder", HOME_FIX)),
    Case("home-is-a-file-load", home_state(_home_is_file, "load"), Refused("is a file, not a folder", HOME_FIX)),
    Case("home-is-a-file-list", home_state(_home_is_file, "list"), Refused("is a file, not a folder", HOME_FIX)),
    Case("home-symlink-loop-import", home_state(_home_loop), Refused("link loop|cannot be used", HOME_FIX)),
    Case("home-symlink-loop-load", home_state(_home_loop, "load"), Refused("link loop|cannot be used", HOME_FIX)),
    Case("home-broken-link", home_state(_home_broken_link), Refused("broken symbolic link", HOME_FIX)),
    Case("home-below-a-file", home_state(_home_under_file), Refused("cannot create the weights folder", HOME_FIX)),
    Case("home-missing-is-created", home_state(lambda h, c: None), Works("created on first import")),
    Case("home-missing-load", home_state(lambda h, c: None, "load"),
         Refused("no checkpoint for 'ifqa' found", "weights import")),
    Case("home-missing-list", home_state(lambda h, c: None, "list"), Works("lists nothing installed")),
    Case("stale-lock-file", home_state(_lock_left_behind), Works("a leftover lock file holds no lock")),
    # --- the manifest ----------------------------------------------------------------------------------------
    Case("manifest-not-json", home_state(manifest("{not json")), Refused("corrupt", REPAIR)),
    Case("manifest-empty-file", home_state(manifest("")), Refused("corrupt", REPAIR)),
    Case("manifest-binary", home_state(manifest(b"\xff\xfe\x00garbage")), Refused("corrupt", REPAIR)),
    Case("manifest-a-list", home_state(manifest("[1, 2]")), Refused("not a weights manifest", REPAIR)),
    Case("manifest-a-string", home_state(manifest('"ifqa"')), Refused("not a weights manifest", REPAIR)),
    Case("manifest-entry-not-dict", home_state(manifest('{"ifqa": 3}')), Refused("not a weights manifest", REPAIR)),
    Case("manifest-entry-no-sha", home_state(manifest('{"ifqa": {"file": "ifqa.safetensors"}}')),
         Refused("not a weights manifest", REPAIR)),
    Case("manifest-sha-not-string", home_state(manifest('{"ifqa": {"file": "x", "sha256": 5}}')),
         Refused("not a weights manifest", REPAIR)),
    Case("manifest-is-a-folder", home_state(_manifest_is_folder), Refused("cannot be read", REPAIR)),
    Case("manifest-list-command", home_state(manifest("[]"), "list"), Refused("not a weights manifest", REPAIR)),
    Case("manifest-empty-object", home_state(manifest("{}")), Works("an empty manifest is valid")),
    # --- imported files damaged or changed later -------------------------------------------------------------
    Case("cached-file-bit-flip-in-data", imported(flip_byte(1)), Refused("changed since it was imported", "import")),
    Case("cached-file-bit-flip-in-middle", imported(flip_byte(300)), Refused("changed since it was imported",
                                                                             "import")),
    Case("cached-file-truncated", imported(_cache_file_truncated), Refused("changed since it was imported", "import")),
    Case("cached-file-deleted", imported(_cache_file_deleted), Refused("no checkpoint for 'ifqa' found", "import")),
    Case("cached-file-is-folder", imported(_cache_file_replaced_by_folder),
         Refused("no checkpoint for 'ifqa' found", "import")),
    Case("manifest-records-other-sha", imported(_manifest_other_sha), Refused("changed since it was imported",
                                                                              "import")),
    Case("manifest-deleted-after-import", imported(_manifest_deleted), Works("loads (no digest to check)")),
    Case("official-file-dropped-in", home_state(_official_file_dropped, "load"), Works("found without import")),
    # --- imports that must lose nothing ----------------------------------------------------------------------
    Case("stale-temps-of-killed-import", home_state(_stale_temps, "import"), Works("stale temporaries removed")),
    Case("import-leaves-no-temps", _check_import_is_clean, Works("only the file, the manifest and the lock")),
    Case("import-twice-identical-bytes", _twice_identical, Works("same bytes, same sha256")),
    Case("import-pinned-wrong-sha", _pinned_wrong_writes_nothing, Works("refused, nothing written")),
    Case("import-nan-weights", _nan_import_writes_nothing, Works("refused, nothing written, folder still usable")),
    Case("source-overwritten-after-import", _replace_source_after_import, Works("the cached copy is independent")),
    Case("file-truncated-while-loaded", _loaded_then_file_replaced, Works("no memory map kept: no SIGBUS")),

    # --- the lock: who holds it, how long to wait, a folder that cannot take one ------------------------------
    Case("lock-held-gives-up-naming-holder", held_lock(timeout="0.3"),
         Refused("gave up after waiting 0 s for the weights folder lock.*held by process 4242 \\(ifqa-loss weights "
                 "import, since 2026", "IFQA_LOSS_LOCK_TIMEOUT=SECONDS")),
    Case("lock-held-says-it-waits-at-once", held_lock(timeout="0.3", check_waiting=True),
         Works(reported="waiting for the weights folder lock .* held by process 4242")),
    Case("lock-held-without-holder-record", held_lock(timeout="0.2", record=None),
         Refused("held by another process \\(it left no holder record\\)", "IFQA_LOSS_LOCK_TIMEOUT")),
    Case("lock-held-with-garbage-record", held_lock(timeout="0.2", record="{not json"),
         Refused("no holder record", "retry")),
    Case("lock-held-load-gives-up-too", held_lock(timeout="0.2", action="load"),
         Refused("gave up after waiting.*process 4242", "retry")),
    Case("lock-timeout-not-a-number", with_env("IFQA_LOSS_LOCK_TIMEOUT", "soon"),
         Refused("IFQA_LOSS_LOCK_TIMEOUT='soon' is not a number", "e.g. 120")),
    Case("lock-timeout-negative", with_env("IFQA_LOSS_LOCK_TIMEOUT", "-5"),
         Refused("not a number of seconds >= 0", "")),
    Case("lock-timeout-nan", with_env("IFQA_LOSS_LOCK_TIMEOUT", "nan"), Refused("not a number of seconds", "")),
    Case("lock-timeout-set-and-free", with_env("IFQA_LOSS_LOCK_TIMEOUT", "5"), Works("a free lock: no wait")),
    Case("import-records-the-holder-while-locked", _holder_recorded, Works("pid and start time readable; removed")),
    Case("home-on-proc-import-at-once", home_at("/proc"), Refused("cannot create the weights folder lock .*/proc/.lock",
                                                                  HOME_FIX)),
    Case("home-in-proc-subfolder", home_at("/proc/self"), Refused("weights folder lock|not writable", HOME_FIX)),
    Case("home-on-sys-import-at-once", home_at("/sys"), Refused("not writable|cannot create", HOME_FIX)),
    # --- integrity: a cache entry replaced by a link is re-hashed against the manifest ------------------------
    Case("entry-replaced-by-link-to-other-weights", imported(_entry_linked_to_other_weights),
         Refused("changed since it was imported", "import the original file again")),
    Case("entry-replaced-by-link-to-same-bytes", imported(_entry_linked_to_identical_copy),
         Works("same bytes: the recorded sha256 matches")),
    Case("entry-replaced-by-link-into-cache", imported(_entry_linked_to_other_name_in_cache),
         Refused("changed since it was imported", "import")),
    # --- cleaning temporaries: only this library's own names --------------------------------------------------
    Case("foreign-temporaries-kept", _foreign_temps_kept, Works("another tool's .*.tmp files stay")),
]


@params(CASES)
def test_cache(case: Case, home, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("IFQA_LOSS_HOME", str(home))  # restored after cases that repoint it
    run = case.make(home, tiny_checkpoint)
    if isinstance(case.expect, Refused):
        with pytest.raises(CheckpointError) as info:
            run()
        case.expect.check(str(info.value))
    else:
        run()


def test_cli_reports_a_damaged_cache_as_an_error(home, tiny_checkpoint, capsys):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("x")
    assert main(["weights", "list"]) == 2
    assert capsys.readouterr().err.startswith("error: the weights folder")
    assert cache_dir() == home

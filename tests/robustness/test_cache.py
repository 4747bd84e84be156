"""The weights cache under hostile states and faults: clear refusals, or it keeps working and loses nothing."""
from __future__ import annotations

import json
import os
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

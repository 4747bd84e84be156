"""The weights cache with several processes at once, and after a process is killed in the middle of an import."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest
import torch

from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.weights import MANIFEST, import_checkpoint, load_network, save_checkpoint, sha256_file

# fork: the children start in milliseconds with torch already imported (a fresh interpreter costs seconds).
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def tiny_files(tmp_path):
    files = []
    for seed in range(2):
        torch.manual_seed(seed)
        files.append(save_checkpoint(tmp_path / f"run{seed}.pth",
                                     IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), "ifqa"))
    return files


def _import_and_load(home: str, path: str, rounds: int, errors) -> None:
    os.environ["IFQA_LOSS_HOME"] = home
    try:
        for _ in range(rounds):
            import_checkpoint(path)
            load_network("ifqa")  # may see either file, never a half-written one
    except BaseException as exc:  # reported to the parent: a child's traceback would be lost
        errors.put(f"{type(exc).__name__}: {exc}")
        raise


def test_concurrent_imports_and_loads_lose_nothing(tmp_path, tiny_files):
    home = tmp_path / "home"
    errors = FORK.Queue()
    workers = [FORK.Process(target=_import_and_load, args=(str(home), str(tiny_files[i % 2]), 4, errors))
               for i in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    reported = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [w.exitcode for w in workers] == [0] * 6, reported
    manifest = json.loads((home / MANIFEST).read_text())
    stored = home / manifest["ifqa"]["file"]
    assert manifest["ifqa"]["sha256"] == sha256_file(stored)  # the entry describes the file that is there
    assert manifest["ifqa"]["source_sha256"] in {sha256_file(p) for p in tiny_files}
    assert not [p.name for p in home.iterdir() if p.name.endswith(".tmp")]


def test_identical_imports_give_identical_files(tmp_path, tiny_files):
    digests = []
    for name in ("a", "b"):
        home = tmp_path / name
        os.environ["IFQA_LOSS_HOME"] = str(home)
        try:
            digests.append(import_checkpoint(tiny_files[0])["sha256"])
        finally:
            os.environ.pop("IFQA_LOSS_HOME")
    assert digests[0] == digests[1]


def _import_then_hang(home: str, path: str) -> None:
    """Import, but stop for good after half of the stored file is written (then the parent kills us)."""
    from ifqa_loss.weights import cache

    os.environ["IFQA_LOSS_HOME"] = home
    real_save = cache._save_safetensors

    def save_half_then_hang(tensors, tmp, metadata):
        real_save(tensors, tmp, metadata)
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])
        time.sleep(600)

    cache._save_safetensors = save_half_then_hang
    import_checkpoint(path)


def test_import_killed_midway_then_next_import_succeeds_and_leaves_nothing(tmp_path, tiny_files):
    home = tmp_path / "home"
    child = FORK.Process(target=_import_then_hang, args=(str(home), str(tiny_files[0])))
    child.start()
    deadline = time.monotonic() + 120
    while not list(home.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    temps = list(home.glob(".*.tmp"))
    assert temps, "the child never reached the middle of its import"
    time.sleep(0.2)  # the half file is written
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    assert not (home / "ifqa.safetensors").exists() and not (home / MANIFEST).exists()  # nothing half-installed

    os.environ["IFQA_LOSS_HOME"] = str(home)
    try:
        entry = import_checkpoint(tiny_files[0])  # the lock died with the child: no wait, no error
        net, path = load_network("ifqa")
    finally:
        os.environ.pop("IFQA_LOSS_HOME")
    assert path == home / "ifqa.safetensors" and entry["sha256"] == sha256_file(path)
    assert sorted(p.name for p in home.iterdir()) == [".lock", "ifqa.safetensors", MANIFEST]

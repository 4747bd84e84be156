"""Permission problems, seen by an unprivileged user (the tests run as root, who is never refused: the checks run
in a forked child that drops to the 'nobody' user)."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.weights import CheckpointError, import_checkpoint, load_network, read_checkpoint, save_checkpoint

FORK = multiprocessing.get_context("fork")
NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the 'nobody' user; as a normal "
                                "user, run: chmod 000 FILE and read it")


def _as_nobody(task, args, result):
    try:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        task(*args)
        result.put("no error")
    except CheckpointError as exc:
        result.put(str(exc))
    except BaseException as exc:  # anything else is a failure of the test, reported with its type
        result.put(f"{type(exc).__name__}: {exc}")


def _run_as_nobody(task, *args) -> str:
    result = FORK.Queue()
    child = FORK.Process(target=_as_nobody, args=(task, args, result))
    child.start()
    child.join(timeout=120)
    return result.get(timeout=5)


@pytest.fixture
def shared_dir():
    """A folder the 'nobody' user can enter (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="ifqa-perm-"))
    folder.chmod(0o755)
    torch.manual_seed(0)
    save_checkpoint(folder / "tiny.pth", IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1), "ifqa")
    (folder / "tiny.pth").chmod(0o644)
    yield folder
    shutil.rmtree(folder)


def test_unreadable_checkpoint_says_permission_denied(shared_dir):
    (shared_dir / "tiny.pth").chmod(0o000)
    message = _run_as_nobody(read_checkpoint, shared_dir / "tiny.pth")
    assert "not readable (permission denied)" in message and "chmod u+r" in message


def _import_into(home: str, path: str):
    os.environ["IFQA_LOSS_HOME"] = home
    import_checkpoint(path)


def _load_from(home: str):
    os.environ["IFQA_LOSS_HOME"] = home
    load_network("ifqa")


def test_read_only_cache_refuses_imports_but_still_loads(shared_dir):
    home = shared_dir / "home"
    os.environ["IFQA_LOSS_HOME"] = str(home)
    try:
        import_checkpoint(shared_dir / "tiny.pth")  # installed by root, then read-only for everyone else
    finally:
        os.environ.pop("IFQA_LOSS_HOME")
    for path in (home, *home.iterdir()):
        path.chmod(0o555 if path.is_dir() else 0o444)
    message = _run_as_nobody(_import_into, str(home), str(shared_dir / "tiny.pth"))
    assert "is not writable" in message and "IFQA_LOSS_HOME" in message
    assert _run_as_nobody(_load_from, str(home)) == "no error"


def test_cache_folder_that_cannot_be_created(shared_dir):
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o555)
    message = _run_as_nobody(_import_into, str(locked / "home"), str(shared_dir / "tiny.pth"))
    assert "cannot create the weights folder" in message and "IFQA_LOSS_HOME" in message

"""Session fixtures built from the reference material (see tests/reference.py)."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
from pathlib import Path

import pytest
import torch

from reference import FIXTURES, reference_state_dict

_LIBC_NAME = ctypes.util.find_library("c") if os.name == "posix" else None
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None


@pytest.fixture(scope="module", autouse=True)
def _return_freed_memory():
    """After each test file: collect garbage and hand the heap pages it freed back to the OS (glibc's
    ``malloc_trim``; a no-op where the C library has none), so the next file, and the subprocesses it starts,
    do not run on top of memory an earlier file no longer uses (the suite's peak-RSS goal, README)."""
    yield
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(scope="session")
def ifqa_checkpoint(tmp_path_factory) -> Path:
    """The official layout {'D': state_dict} with the reference weights (the session keeps the file only)."""
    path = tmp_path_factory.mktemp("weights") / "IFQA_Metric.pth"
    torch.save({"D": reference_state_dict("ifqa_cnn_keys.json")}, path)
    return path


@pytest.fixture(scope="module")
def ifqa_state_dict(ifqa_checkpoint) -> dict[str, torch.Tensor]:
    """The reference weights read back from the session's file (0.3 s; the fill rule takes 4 s). Module-scoped
    (420 MB): no test file's big tensors stay alive under the next file's (peak RSS)."""
    return torch.load(ifqa_checkpoint, weights_only=True)["D"]


@pytest.fixture(scope="session")
def ifqa_vit_checkpoint(tmp_path_factory) -> Path:
    """IFQA++ (657 M parameters, 2.6 GB) with the reference weights, on disk only: the session keeps the file,
    not the tensors, so the suite never holds more than the one copy a test loads (peak RSS, see README)."""
    path = tmp_path_factory.mktemp("weights_vit") / "IFQA++_Metric.pth"
    state_dict = reference_state_dict("ifqa_vit_keys.json")
    torch.save({"D": state_dict}, path)
    del state_dict
    return path


def _reference_net(build, state_dict):
    """A published-size network with the reference weights (built on meta, no double allocation)."""
    with torch.device("meta"):
        net = build()
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


@pytest.fixture(scope="module")
def ifqa_vit_net(ifqa_vit_checkpoint):
    """Module-scoped: the 2.6 GB network is freed when the module that asked for it ends."""
    from ifqa_loss.nets.ifqa_vit import IFQAViT

    return _reference_net(IFQAViT, torch.load(ifqa_vit_checkpoint, weights_only=True)["D"])


@pytest.fixture(scope="module")
def ifqa_net(ifqa_state_dict):
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator

    return _reference_net(IFQADiscriminator, ifqa_state_dict)


# Opt-in memory report: IFQA_TEST_RSS=rss.csv python -m pytest tests  ->  peak RSS of the whole process tree
# (pytest and every subprocess it starts) per test file, RSS sampled every 50 ms and PSS every 0.5 s with psutil.
if os.environ.get("IFQA_TEST_RSS"):
    from rss import RSSRecorder

    _recorder = RSSRecorder(os.environ["IFQA_TEST_RSS"])

    def pytest_runtest_logstart(nodeid, location):
        _recorder.enter(nodeid.split("::")[0])

    def pytest_sessionfinish(session, exitstatus):
        _recorder.finish()

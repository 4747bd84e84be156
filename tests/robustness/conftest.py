"""Robustness suite: hostile and faulty inputs, each with the outcome it must get (see case.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
from ifqa_loss.weights import save_checkpoint

TINY = {"widths": (4, 8, 8, 16, 16), "num_bottleneck": 1}


def count_cases() -> int:
    """Cases in every table of this folder (``CASES`` of each test module)."""
    total = 0
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_robustness_count_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        total += len(getattr(module, "CASES", []))
    return total


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
           if "robustness" in r.nodeid and "[" in r.nodeid and r.when == "call"]
    if ran:
        terminalreporter.write_line(f"robustness cases: {count_cases()} in the tables, {len(ran)} run now")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (on a shared 2-core machine, 20x faster); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real IFQA checkpoint as the trainers write it, with a narrow network (milliseconds to load)."""
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pth", IFQADiscriminator(**TINY), "ifqa")


@pytest.fixture(scope="session")
def tiny_payload(tiny_checkpoint) -> dict:
    return torch.load(tiny_checkpoint, weights_only=True)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("IFQA_LOSS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"

"""Upstream checkouts for the loop tests: found through an environment variable, copied, patched with OUR patch.

The project ships no upstream code; a test copies the checkout named by the variable, applies the
recipe's patch files with ``git apply`` and runs the upstream loop from the copy.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def upstream_source(variable: str, repository: str) -> Path:
    """The checkout named by ``variable``; skip with the how-to when unset, fail when it names nothing."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{repository}'s training loop was NOT run: set {variable} to a checkout of {repository} (the "
                    f"commit in integrations/*/README.md), e.g. {variable}=$PWD/../shared/upstream/"
                    f"{repository.split('/')[1]}; .ci/run sets it when that folder exists (README: Tests)")
    path = Path(value)
    assert path.is_dir(), f"{variable}={value} is not a directory"
    return path


def copy_checkout(source: Path, destination: Path) -> Path:
    """Writable copy of a (possibly read-only) checkout."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    for path in [destination, *destination.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return destination


def apply_patch(checkout: Path, patch: Path) -> None:
    """``git apply`` OUR patch; fails the test (never skips) when the patch no longer applies."""
    done = subprocess.run(["git", "apply", "--verbose", str(patch)], cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, f"{patch.relative_to(ROOT)} no longer applies to {checkout}:\n{done.stderr}"


def run_driver(driver: Path, *args: str, cwd: Path, timeout: int = 600) -> str:
    """Run a driver script in a fresh process (upstream module names such as ``helpers`` or ``basicsr``
    would collide with ours inside pytest); returns stdout, fails with the tail of the output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([os.sys.executable, str(driver), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout

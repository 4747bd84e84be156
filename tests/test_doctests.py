"""Every docstring Example in the package runs (kornia's habit): the docs cannot drift from the code."""
import doctest
import importlib
import pkgutil
import warnings

import pytest

import ifqa_loss

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(ifqa_loss.__path__, prefix="ifqa_loss.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_public_names_have_examples():
    missing = [name for name in ifqa_loss.__all__ if name not in ("__version__", "regions")
               and ">>>" not in (getattr(ifqa_loss, name).__doc__ or "")]
    assert not missing, f"public names without a runnable Example: {missing}"

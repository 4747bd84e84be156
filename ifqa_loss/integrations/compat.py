"""Make basicsr 1.4.2 importable on current torchvision.

basicsr 1.4.2 (``basicsr/data/degradations.py``) imports
``torchvision.transforms.functional_tensor``, a module torchvision renamed to
``_functional_tensor`` in 0.17. :func:`install_functional_tensor_alias` registers the
old name for the new module; it must run before the first ``import basicsr``.
"""
from __future__ import annotations

import importlib
import sys

OLD_NAME = "torchvision.transforms.functional_tensor"


def install_functional_tensor_alias() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if torchvision no longer ships it. Idempotent."""
    if OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(OLD_NAME)
    except ImportError:
        sys.modules[OLD_NAME] = importlib.import_module("torchvision.transforms._functional_tensor")

"""Write docs/api.md from the docstrings of the public API (a test checks the file is up to date).

Run: python docs/make_api_reference.py
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# (module, names): what a user imports. Everything listed must carry a docstring.
SECTIONS = [
    ("ifqa_loss", ["load_metric", "QualityMetric", "IFQALoss", "IFQAPlusLoss", "GFIQALoss", "LossComposer"]),
    ("ifqa_loss.regions", None),
    ("ifqa_loss.losses.functional", None),
    ("ifqa_loss.preprocess", None),
    ("ifqa_loss.weights", ["read_checkpoint", "load_network", "save_checkpoint", "random_network",
                           "import_checkpoint", "installed", "cache_dir", "check_state_dict", "CheckpointError"]),
    ("ifqa_loss.registry", ["MetricSpec", "get_spec"]),
    ("ifqa_loss.hacking", ["hack_probe", "optimise_pixels", "HackingMonitor"]),
    ("ifqa_loss.losses.augment", ["EOTConfig"]),
    ("ifqa_loss.losses.refresh", ["RefreshConfig", "Refresher"]),
    ("ifqa_loss.diffusion", None),
]


def _public(module) -> list[str]:
    names = getattr(module, "__all__", None) or [
        n for n, obj in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]
    return sorted(names, key=str.lower)


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/make_api_reference.py`; every `Example` here runs "
             "as a doctest in the test suite.", ""]
    for module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", ""]
        summary = inspect.getdoc(module) or ""
        if summary:
            lines += [summary.split("\n\n")[0], ""]
        for name in names or _public(module):
            obj = getattr(module, name)
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### `{kind} {name}{_signature(obj)}`", "", inspect.getdoc(obj) or "(no docstring)", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render())
    print(f"wrote {target}")

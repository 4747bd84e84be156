"""The docs in docs/ are generated from the code and kept true."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "docs" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    generated = _load("make_api_reference").render()
    assert (ROOT / "docs" / "api.md").read_text() == generated, "run: python docs/make_api_reference.py"


def test_architecture_names_every_package_room():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rooms = [p for p in (ROOT / "ifqa_loss").iterdir() if (p.is_dir() and (p / "__init__.py").exists())
             or (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))]
    missing = [p.name for p in rooms if f"ifqa_loss/{p.name}" not in text]
    assert not missing, f"docs/architecture.md has no line for {missing}"
